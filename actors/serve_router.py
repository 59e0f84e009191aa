"""`CanaryRouter`: the HTTP ingress in front of the incumbent and canary policy deployments.

    POST /v1/chat/completions   OpenAI chat format (system/user/assistant turns, n, stop, logprobs, `stream` as
                                server-sent events); routed by sticky weighted assignment of the user
    GET  /v1/models             the one public model name (not the variants behind it)
    POST /v1/feedback           thumbs / likert / pairwise / correction / flag on a response id → feedback shard
    GET  /v1/canary             status: weights, per-variant figures, guardrails, sequential test, decisions
    POST /v1/canary/{weights|promote|rollback|kill}   admin, bearer token required, audited

The routing weight is this deployment's `user_config` (`reconfigure`), so it changes on running replicas.
Every bad input gets a 4xx with a message naming the field, the value and what was expected; a failing
policy gets a 502 and counts as an error of its variant, except that a call whose policy replica died under it
is retried once (on another replica, or the one Serve starts in its place; the answer then carries
`x-rlhf-retries`). No raw user id is kept: the hash that assigns a variant is computed in memory, and feedback
rows carry a keyed pseudonym.

A router replica that dies loses little: a feedback row is journaled before its 202 (`JsonlShardBuffer`), so on
a local or mounted feedback dir its replacement writes the dead replica's unwritten rows; answers go to the
monitor every report interval, so feedback on all but the last interval's answers still finds them. The calls
in flight on the dead replica fail (the proxy answers 500); clients retry those.
"""


import asyncio
import dataclasses
import hashlib
import json
import logging
import re
import time
import uuid
from collections import OrderedDict
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any, NoReturn

from ray import serve
from ray.exceptions import RayActorError
from ray.serve.handle import DeploymentHandle
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse

from actors.serve_control import HEALTH_CHECK_PERIOD_S, serve_metric
from actors.serve_monitor import initial_router_state
from rlhf_ray.governance import PiiMasker, load_key
from rlhf_ray.inputs.prompts import conversation_text
from rlhf_ray.serving.admin import AuthError, Caller, bearer_matches, identify, load_admin_token, load_api_keys
from rlhf_ray.serving.assignment import VARIANTS, user_bucket
from rlhf_ray.serving.config import CanaryAppArgs, RouterState
from rlhf_ray.serving.feedback import FeedbackError, ServedResponse, feedback_row, outcomes
from rlhf_ray.serving.guardrails import blocklist_hits
from rlhf_ray.serving.schemas import (
    FEEDBACK_ADAPTER,
    ChatCompletionRequest,
    DecisionRequest,
    ThumbsFeedback,
    WeightsRequest,
    parse_model,
)
from rlhf_ray.serving.shards import JsonlShardBuffer
from rlhf_ray.serving.tokens import SeenKeys, UserRateLimiter, derive_key, feedback_token, token_matches

logger = logging.getLogger("ray.serve")
ADMIN_ACTIONS = ("weights", "promote", "rollback", "kill")
VARIANT_HEADER = "x-rlhf-variant"
RESPONSE_ID_HEADER = "x-rlhf-response-id"
RETRIES_HEADER = "x-rlhf-retries"
# A policy replica that dies (killed, OOM, node lost) under an in-flight generate fails that call with
# `ActorDiedError` / `ActorUnavailableError` (both `RayActorError`s); Serve's handle then drops the replica and
# queues new calls until the controller has started a replacement. Generation has no side effect and nothing is
# recorded before it returns, so such a call is retried, at most this many times, within the same timeout.
POLICY_RETRIES = 1
# The replica pulls a request's body from Serve's proxy. When an ingress replica dies with a request whose body it
# had already pulled, Ray Serve (2.60) may hand that request to another replica, whose pull then never returns: such
# a request gets a 408 after this long instead of hanging until the client gives up.
BODY_TIMEOUT_S = 10.0
# Feedback and shadow rows are journaled before they are acknowledged (`JsonlShardBuffer`); a replica recovers
# the journals of dead replicas when it starts and then this often (a shard whose write failed, too).
JOURNAL_SWEEP_S = 30.0
USER_HEADER = "x-user-id"  # the end user a trusted front end (holding the admin token) asserts
ISSUED_USER_HEADER = "x-rlhf-user"  # the server-issued id of a client without an API key; sent back to stay put
FEEDBACK_TOKEN_HEADER = "x-rlhf-feedback-token"

_FIELD = re.compile(r"^field '([^']+)'")


class HTTPProblem(Exception):
    """A 4xx/5xx answer in OpenAI's error shape: {"error": {"message", "type", "param", "code"}}. `param` is the
    request field at fault (read off a "field 'x': ..." message when not given), `code` a short machine-readable
    reason or None, as OpenAI's."""

    def __init__(self, status: int, message: str, kind: str = "invalid_request_error", param: str | None = None,
                 code: str | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.kind, self.code = status, message, kind, code
        match = _FIELD.match(message)
        self.param = param or (match.group(1) if match else None)

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.kind, "param": self.param, "code": self.code}}

    def response(self) -> JSONResponse:
        headers = {"WWW-Authenticate": "Bearer"} if self.status == 401 else None
        return JSONResponse(self.body(), status_code=self.status, headers=headers)


# (method, path pattern, handler): the deployment dispatches itself rather than through a web framework, since
# a framework's per-request machinery (dependency solving, middleware stack) cost more than all of the router's
# own work (benchmarks/serve.py). A handler takes the request and the pattern's named groups.
ROUTES = [(method, re.compile(pattern), handler) for method, pattern, handler in (
    ("GET", r"/v1/models", "models"),
    ("GET", r"/v1/models/(?P<model>[^/]+)", "model"),
    ("POST", r"/v1/chat/completions", "chat_completions"),
    ("POST", r"/v1/feedback", "feedback"),
    ("GET", r"/v1/canary", "canary_status"),
    ("POST", r"/v1/canary/(?P<action>[^/]+)", "canary_admin"),
    ("GET", r"/healthz", "healthz"),
)]


def route_path(scope: dict[str, Any]) -> str:
    """The request's path below the application's route prefix (Serve puts the prefix in `root_path`)."""
    path, root = scope.get("path", "/"), scope.get("root_path", "")
    return (path[len(root):] or "/") if root and path.startswith(root) else path


def _sse(data: dict[str, Any] | str) -> str:
    """One server-sent event, as OpenAI streams them."""
    return f"data: {data if isinstance(data, str) else json.dumps(data, separators=(',', ':'))}\n\n"


async def _await_with_timeout(response: Any, timeout_s: float) -> Any:
    """`await response`, cancelled after `timeout_s` (TimeoutError). A timeout scope, not `asyncio.wait_for`,
    which (before Python 3.12) runs the awaitable as a new task: two of those per request were a measurable part
    of the router's own cost."""
    async with asyncio.timeout(timeout_s):
        return await response


async def _next_or_none(pieces: Any) -> Any:
    """The next item of a streaming deployment response, None at its end."""
    try:
        return await pieces.__anext__()
    except StopAsyncIteration:
        return None


def _usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    """OpenAI's `usage`: the rendered prompt (chat template, system prompt and history) counted once, the
    completion tokens of every choice (each one's closing stop token included)."""
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens}


@serve.deployment(health_check_period_s=HEALTH_CHECK_PERIOD_S)
class CanaryRouter:
    def __init__(self, incumbent: DeploymentHandle, canary: DeploymentHandle, monitor: DeploymentHandle,
                 args: dict[str, Any]) -> None:
        self.args = CanaryAppArgs.model_validate(args)
        # the policies' method handles, made once: reading `handle.generate` builds a new handle on every access
        self.generators = {"incumbent": incumbent.generate, "canary": canary.generate}
        self.streamers = {variant: handle.options(stream=True).stream
                          for variant, handle in (("incumbent", incumbent), ("canary", canary))}
        self.monitor = monitor
        self.state = initial_router_state(self.args)
        self.masker = PiiMasker()
        self.pseudonyms = self.args.pseudonyms.pseudonymizer()
        self.admin_token = load_admin_token(self.args.admin.token_env, self.args.admin.token_file)
        self.api_keys = load_api_keys(self.args.auth.keys_env, self.args.auth.keys_file, self.pseudonyms)
        secret = load_key(self.args.pseudonyms.key_env, self.args.pseudonyms.key_file)
        self.user_key, self.token_key = derive_key(secret, "issued-user"), derive_key(secret, "feedback-token")
        self.rate_limit = UserRateLimiter(self.args.feedback.rate_per_s, self.args.feedback.burst)
        self.rated = SeenKeys(4 * self.args.router.response_cache)  # this replica's (response, user, kind) seen
        self.policy_ids = {v: getattr(self.args, v).policy_id or v for v in VARIANTS}
        self.cache: OrderedDict[str, ServedResponse] = OrderedDict()
        tag = uuid.uuid4().hex[:8]
        feedback = self.args.feedback
        self.feedback_shards = JsonlShardBuffer(self.args.feedback_dir, f"feedback-{tag}", feedback.flush_rows,
                                                feedback.flush_interval_s)
        self.shadow_log = JsonlShardBuffer(f"{self.args.state_dir.rstrip('/')}/shadow", f"shadow-{tag}",
                                           feedback.flush_rows, feedback.flush_interval_s)
        self._last_sweep = time.monotonic()  # the buffers recovered dead replicas' journals just now
        self._pending = self._empty_batch()
        self._reporter: asyncio.Task[None] | None = None
        self._report_lock = asyncio.Lock()
        self._background: set[asyncio.Task[Any]] = set()
        self._requests = serve_metric("rlhf_serve_requests_total")
        self._latency = serve_metric("rlhf_serve_latency_seconds")
        self._feedback = serve_metric("rlhf_serve_feedback_total")
        self._flags = serve_metric("rlhf_serve_safety_flags_total")
        self._retries = serve_metric("rlhf_serve_policy_retries_total")

    def reconfigure(self, user_config: dict[str, Any]) -> None:
        """Serve calls this with the deployment's `user_config` on start and on every lightweight update."""
        self._adopt(RouterState.model_validate(user_config))

    def _adopt(self, state: RouterState) -> None:
        # a stale update (lower revision) must not undo a newer one, e.g. a local kill
        if state.revision >= self.state.revision:
            self.state = state

    async def __call__(self, request: Request) -> Response:
        """Dispatch on (method, path) to a handler of `ROUTES`; unknown paths and methods answer in the same
        error shape as everything else."""
        path, allowed = route_path(request.scope), []
        for method, pattern, handler in ROUTES:
            match = pattern.fullmatch(path)
            if match is None:
                continue
            if method == request.method:
                return await getattr(self, handler)(request, **match.groupdict())
            allowed.append(method)
        if allowed:
            problem = HTTPProblem(405, f"{request.method} {path}: method not allowed, expected "
                                       f"{' or '.join(allowed)}")
            return JSONResponse(problem.body(), status_code=405, headers={"Allow": ", ".join(allowed)})
        return HTTPProblem(404, f"{request.method} {path}: not found", "not_found").response()

    # ------------------------------------------------------------------ chat

    async def models(self, request: Request) -> JSONResponse:
        """The one public model name; the variants behind it are not models a client can pick."""
        return JSONResponse({"object": "list", "data": [self._model_card()]})

    async def model(self, request: Request, model: str) -> JSONResponse:
        if model != self.args.router.model_name:
            return self._unknown_model(model).response()
        return JSONResponse(self._model_card())

    def _model_card(self) -> dict[str, Any]:
        return {"id": self.args.router.model_name, "object": "model", "created": 0, "owned_by": "rlhf-ray"}

    def _unknown_model(self, model: str) -> HTTPProblem:
        return HTTPProblem(404, f"field 'model': got {model[:80]!r}, expected {self.args.router.model_name!r}",
                           param="model", code="model_not_found")

    async def chat_completions(self, request: Request) -> Response:
        self._ensure_reporter()
        try:
            chat = parse_model(ChatCompletionRequest, await self._json_body(request))
            return await self._answer(chat, request)
        except HTTPProblem as problem:
            return problem.response()
        except ValueError as error:
            return HTTPProblem(400, str(error)).response()

    async def _answer(self, chat: ChatCompletionRequest, request: Request) -> Response:
        if chat.model != self.args.router.model_name:
            raise self._unknown_model(chat.model)
        generation = self.args.generation
        max_tokens = chat.requested_max_tokens()
        if max_tokens is not None and max_tokens > generation.max_tokens_limit:
            raise HTTPProblem(400, f"field 'max_tokens': got {max_tokens}, expected at most "
                                   f"{generation.max_tokens_limit}")
        if chat.n > generation.max_n:
            raise HTTPProblem(400, f"field 'n': got {chat.n}, expected at most {generation.max_n}")
        messages = chat.conversation()
        prompt = conversation_text(messages)  # what feedback rows and the shadow log store, as scorers read it
        metadata = chat.metadata or {}
        caller = self._caller(request, chat.user)
        response_id = f"chatcmpl-{uuid.uuid4().hex}"
        # the arm follows the authenticated or server-issued user: a client cannot name its own
        bucket = user_bucket(caller.user, self.args.deployment_id)
        state = self.state
        on_canary = bucket < state.canary_weight
        variant = "canary" if on_canary and state.mode == "split" else "incumbent"
        prompt_id = metadata.get("prompt_id") or "p-" + hashlib.sha256(prompt.encode()).hexdigest()[:16]
        # the request's own sampling; the variant fills in defaults and clamps into its limits (serve_policy)
        call = {"messages": messages, "prompt_id": prompt_id, "n": chat.n,
                "sampling": {"max_tokens": max_tokens, "temperature": chat.temperature, "top_p": chat.top_p,
                             "seed": chat.seed, "stop": list(chat.stop_strings()), "logprobs": chat.logprobs}}
        shadow = on_canary and state.mode == "shadow" and state.phase == "running"
        session = metadata.get("session_id")
        served = ServedResponse(
            response_id=response_id, variant=variant, policy_id=self.policy_ids[variant], prompt_id=prompt_id,
            prompt=prompt, response="", actor_id=caller.user,
            region=metadata.get("region") or self.args.router.default_region,
            session_id=self.pseudonyms.pseudonymize_session(f"{caller.user}/{session}") if session else None,
            authenticated=caller.authenticated)
        fields, headers = self._response_metadata(caller, response_id, variant)
        if chat.stream:
            return await self._stream(chat, call, served, fields, headers, shadow)
        result, retries = await self._call_policy(variant, call)
        texts = [choice["text"] for choice in result["choices"]]
        if shadow:
            self._spawn(self._shadow(call, texts[0]))
        # feedback on an answer of n > 1 choices rates its first choice
        self._remember(dataclasses.replace(served, response=texts[0]))
        body = {"id": response_id, "object": "chat.completion", "created": int(time.time()),
                "model": self.args.router.model_name, **fields,
                "choices": [{"index": c["index"], "message": {"role": "assistant", "content": c["text"]},
                             "logprobs": None if c["logprobs"] is None else {"content": c["logprobs"]},
                             "finish_reason": c["finish_reason"]} for c in result["choices"]],
                "usage": _usage(result["prompt_tokens"], result["completion_tokens"])}
        if retries:
            headers[RETRIES_HEADER] = str(retries)
        return JSONResponse(body, headers=headers)

    async def _stream(self, chat: ChatCompletionRequest, call: dict[str, Any], served: ServedResponse,
                      fields: dict[str, Any], headers: dict[str, str], shadow: bool) -> Response:
        """Server-sent events: a first chunk per choice (the assistant role, and the answer's metadata), then one
        `chat.completion.chunk` per decoded piece as the policy generates it, a last one per choice with its
        finish reason, the usage when `stream_options.include_usage`, and `data: [DONE]`. The first piece is
        awaited before the response starts, so a policy that cannot answer still gets a 502 (and the retry)."""
        variant, started = served.variant, time.perf_counter()
        (pieces, first), retries = await self._call_policy(variant, call, stream=True)
        if retries:
            headers[RETRIES_HEADER] = str(retries)
        deadline = started + self.args.generation.timeout_s
        base = {"id": served.response_id, "object": "chat.completion.chunk", "created": int(time.time()),
                "model": self.args.router.model_name}

        def chunk(index: int, delta: dict[str, Any], finish: str | None = None,
                  logprobs: list[dict[str, Any]] | None = None, **extra: Any) -> str:
            choice = {"index": index, "delta": delta, "logprobs": None if logprobs is None else {"content": logprobs},
                      "finish_reason": finish}
            return _sse({**base, **extra, "choices": [choice]})

        async def events() -> AsyncIterator[str]:
            texts, usage = [""] * chat.n, {"prompt_tokens": 0, "completion_tokens": 0}
            for index in range(chat.n):
                yield chunk(index, {"role": "assistant", "content": ""}, **(fields if index == 0 else {}))
            piece: dict[str, Any] | None = first
            try:
                while piece is not None:
                    index = piece["index"]
                    texts[index] += piece["text"]
                    if piece["text"] or piece["logprobs"]:
                        yield chunk(index, {"content": piece["text"]}, logprobs=piece["logprobs"])
                    if "finish_reason" in piece:
                        usage["prompt_tokens"] = piece["prompt_tokens"]
                        usage["completion_tokens"] += piece["completion_tokens"]
                        yield chunk(index, {}, piece["finish_reason"])
                    piece = await _await_with_timeout(_next_or_none(pieces),
                                                      max(deadline - time.perf_counter(), 0.001))
            except Exception as error:  # headers are sent: the failure goes into the stream, as OpenAI's do
                self._record(variant, error=True, latency=time.perf_counter() - started, flagged=False)
                logger.warning("canary router: %s policy failed mid-stream: %s", variant, type(error).__name__)
                yield _sse(HTTPProblem(502, f"the {variant} policy failed ({type(error).__name__}) while streaming; "
                                            "retry", "upstream_error").body())
                return
            self._record(variant, error=False, latency=time.perf_counter() - started,
                         flagged=any(blocklist_hits(t, self.args.router.blocklist) > 0 for t in texts))
            self._remember(dataclasses.replace(served, response=texts[0]))
            if shadow:
                self._spawn(self._shadow(call, texts[0]))
            if chat.include_usage():
                yield _sse({**base, "choices": [], "usage": _usage(usage["prompt_tokens"],
                                                                   usage["completion_tokens"])})
            yield _sse("[DONE]")

        return StreamingResponse(events(), media_type="text/event-stream",
                                 headers={**headers, "Cache-Control": "no-cache"})

    def _caller(self, request: Request, body_user: str | None) -> Caller:
        """Who sent `request` (`rlhf_ray.serving.admin.identify`); a user named by the client (`x-user-id`, the
        body's `user`) counts only when the admin token vouches for it."""
        try:
            return identify(request.headers.get("authorization"), request.headers.get(USER_HEADER) or body_user,
                            request.headers.get(ISSUED_USER_HEADER), self.api_keys, self.admin_token,
                            self.pseudonyms, self.user_key)
        except AuthError as error:
            raise HTTPProblem(401, str(error), "authentication_error") from None

    def _response_metadata(self, caller: Caller, response_id: str, variant: str) -> tuple[dict[str, Any],
                                                                                          dict[str, str]]:
        """What an answer tells its client besides the text, as body fields and headers: its feedback token,
        a newly issued user id, and (to an admin only) the variant and policy that answered."""
        token = feedback_token(self.token_key, response_id, caller.user, variant)
        fields: dict[str, Any] = {"feedback_token": token}
        headers = {RESPONSE_ID_HEADER: response_id, FEEDBACK_TOKEN_HEADER: token}
        if caller.issued:
            fields["rlhf_user"] = headers[ISSUED_USER_HEADER] = caller.issued
        if caller.admin:
            fields.update(variant=variant, policy_id=self.policy_ids[variant])
            headers[VARIANT_HEADER] = variant
        return fields, headers

    async def _call_policy(self, variant: str, call: dict[str, Any], stream: bool = False) -> tuple[Any, int]:
        """One policy call, measured and counted, and how many times it was retried because the replica
        serving it died; any other failure, or a death after the retries or the timeout, is a 502 and an
        error of that variant. `stream=True` opens the policy's stream and returns it with its first piece
        (the caller counts the call when the stream ends)."""
        started = time.perf_counter()
        deadline = started + self.args.generation.timeout_s
        retries = 0
        while True:
            try:
                if stream:
                    pieces = self.streamers[variant].remote(**call)
                    first = await _await_with_timeout(_next_or_none(pieces),
                                                      max(deadline - time.perf_counter(), 0.001))
                    if first is None:
                        raise RuntimeError("the policy's stream ended before its first piece")
                    return (pieces, first), retries
                result = await _await_with_timeout(self.generators[variant].remote(**call),
                                                   max(deadline - time.perf_counter(), 0.001))
                break
            except RayActorError as error:
                if retries >= POLICY_RETRIES or time.perf_counter() >= deadline:
                    self._fail(variant, error, started)
                retries += 1
                self._retries.inc(tags={"variant": variant})
                logger.warning("canary router: %s policy replica lost (%s); retrying the call (%d/%d)", variant,
                               type(error).__name__, retries, POLICY_RETRIES)
            except Exception as error:
                self._fail(variant, error, started)
        flagged = any(blocklist_hits(c["text"], self.args.router.blocklist) > 0 for c in result["choices"])
        self._record(variant, error=False, latency=time.perf_counter() - started, flagged=flagged)
        return result, retries

    def _fail(self, variant: str, error: BaseException, started: float) -> NoReturn:
        self._record(variant, error=True, latency=time.perf_counter() - started, flagged=False)
        logger.warning("canary router: %s policy failed: %s", variant, type(error).__name__)
        raise HTTPProblem(502, f"the {variant} policy failed ({type(error).__name__}); retry later",
                          "upstream_error") from None

    async def _shadow(self, call: dict[str, Any], incumbent_text: str) -> None:
        """The canary answers a copy; its answer is logged for offline comparison, never shown."""
        self._pending["shadow"]["canary"] += 1
        try:
            result, _ = await self._call_policy("canary", call)
        except HTTPProblem:
            return
        masked = {k: self.masker.mask(v)[0] for k, v in
                  (("prompt", conversation_text(call["messages"])), ("incumbent", incumbent_text),
                   ("canary", result["choices"][0]["text"]))}
        self.shadow_log.add({"time": datetime.now(UTC).isoformat(), "prompt_id": call["prompt_id"],
                             "incumbent_policy_id": self.policy_ids["incumbent"],
                             "canary_policy_id": self.policy_ids["canary"], **masked})

    def _record(self, variant: str, error: bool, latency: float, flagged: bool) -> None:
        self._pending["requests"][variant].append((error, latency, flagged))
        self._requests.inc(tags={"variant": variant, "outcome": "error" if error else "ok"})
        self._latency.observe(latency, tags={"variant": variant})
        if flagged:
            self._flags.inc(tags={"variant": variant})

    def _remember(self, served: ServedResponse) -> None:
        self.cache[served.response_id] = served
        while len(self.cache) > self.args.router.response_cache:
            self.cache.popitem(last=False)
        # feedback may reach another replica, or this one's replacement if it dies: share via the monitor
        self._pending["served"].append(served.to_dict())

    # ------------------------------------------------------------------ feedback

    async def feedback(self, request: Request) -> JSONResponse:
        """Feedback on an answer this server gave the caller, proven by the answer's feedback token; refused
        (and not recorded) otherwise. One rating per (response, user, kind); a per-user rate limit."""
        self._ensure_reporter()
        try:
            caller = self._caller(request, None)
            item = parse_model(FEEDBACK_ADAPTER, await self._json_body(request))
            served = await self._served(item.response_id, "response_id")
            # without an API key the giver is the one the answer was served to; the token proves it holds it
            giver = caller.user if caller.authenticated else served.actor_id
            if served.authenticated and not caller.authenticated:
                raise HTTPProblem(401, "header 'Authorization': missing, expected 'Bearer <API key>' of the user "
                                       "this answer was served to", "authentication_error")
            if not self.rate_limit.allow(giver, time.monotonic()):
                raise HTTPProblem(429, f"feedback rate: more than {self.args.feedback.burst} at once or "
                                       f"{self.args.feedback.rate_per_s:g}/s from one user; retry later",
                                  "rate_limit_exceeded")
            self._check_token(served, giver, request.headers.get(FEEDBACK_TOKEN_HEADER) or item.feedback_token,
                              "feedback_token")
            other_id = getattr(item, "other_response_id", None)
            other = await self._served(other_id, "other_response_id") if other_id else None
            if other is not None:
                self._check_token(other, giver, item.other_feedback_token, "other_feedback_token")
            signal_id = f"sig-{uuid.uuid4().hex}"
            row, _ = feedback_row(item, served, signal_id=signal_id, now=datetime.now(UTC),
                                  actor_id=giver, masker=self.masker, other=other,
                                  authenticated=caller.authenticated)
            key = (served.response_id, giver, item.kind)
            if key in self.rated or not await self.monitor.claim_feedback.remote(key):
                self.rated.add(key)
                raise HTTPProblem(409, f"feedback: this user already gave {item.kind!r} feedback on "
                                       f"{served.response_id[:80]!r}; expected one per answer and kind", "conflict")
            self.rated.add(key)
        except HTTPProblem as problem:
            return problem.response()
        except (ValueError, FeedbackError) as error:
            return HTTPProblem(422 if isinstance(error, FeedbackError) else 400, str(error)).response()
        self.feedback_shards.add(row)
        thumbs = item.value if isinstance(item, ThumbsFeedback) else None
        for outcome in outcomes(item, served, other):
            self._pending["judgments"].append((outcome.variant, outcome.accepted, outcome.safety_flag, thumbs,
                                               outcome.response_id, giver, caller.authenticated))
            if outcome.safety_flag:
                self._flags.inc(tags={"variant": outcome.variant})
        self._feedback.inc(tags={"variant": served.variant, "kind": item.kind})
        body = {"id": signal_id, "status": "accepted", "signal_type": row["signal_type"],
                "authenticated": caller.authenticated}
        if caller.admin:
            body["variant"] = served.variant
        return JSONResponse(body, status_code=202)

    def _check_token(self, served: ServedResponse, giver: str, token: str | None, field: str) -> None:
        if not token:
            raise HTTPProblem(401, f"field '{field}' (or header {FEEDBACK_TOKEN_HEADER!r}): missing, expected the "
                                   "feedback token that came with the answer", "authentication_error")
        if served.actor_id != giver or not token_matches(self.token_key, token, served.response_id, giver,
                                                         served.variant):
            raise HTTPProblem(403, f"field '{field}': not the feedback token of an answer served to this user, "
                                   "expected the token that came with the answer", "permission_error")

    async def _served(self, response_id: str, field: str) -> ServedResponse:
        served = self.cache.get(response_id)
        if served is None:  # answered by another router replica: the monitor has every replica's answers
            await self._report()
            record = await self.monitor.lookup.remote(response_id)
            served = ServedResponse.from_dict(record) if record else None
        if served is None:
            raise HTTPProblem(404, f"field '{field}': unknown response id {response_id[:80]!r}, expected the id "
                                   "of a recent answer of this server", "not_found")
        return served

    # ------------------------------------------------------------------ canary status and admin

    async def canary_status(self, request: Request) -> JSONResponse:
        await self._report()
        return JSONResponse(await self.monitor.status.remote())

    async def canary_admin(self, request: Request, action: str) -> JSONResponse:
        try:
            self._authorize(request)
            if action not in ADMIN_ACTIONS:
                raise HTTPProblem(404, f"path: unknown admin action {action[:40]!r}, expected one of "
                                       f"{', '.join(ADMIN_ACTIONS)}", "not_found")
            body = await self._json_body(request, allow_empty=action != "weights")
            if action == "weights":
                change = parse_model(WeightsRequest, body)
                kwargs = {"canary_weight": change.canary_weight, "mode": change.mode, "reason": change.reason}
            else:
                kwargs = {"reason": parse_model(DecisionRequest, body or {}).reason}
        except HTTPProblem as problem:
            return problem.response()
        except ValueError as error:
            return HTTPProblem(400, str(error)).response()
        if action == "kill":  # this replica stops sending traffic to the canary before anything else happens
            self.state = self.state.model_copy(update={"canary_weight": 0.0, "phase": "killed"})
        await self._report()
        result = await self.monitor.admin.remote(action, **kwargs)
        if "error" in result:
            return HTTPProblem(409, result["error"], "conflict").response()
        self._adopt(RouterState.model_validate({k: result[k] for k in RouterState.model_fields}))
        return JSONResponse(result)

    async def healthz(self, request: Request) -> JSONResponse:
        return JSONResponse({"status": "ok"})

    def _authorize(self, request: Request) -> None:
        if self.admin_token is None:
            raise HTTPProblem(403, f"admin endpoints are disabled: no admin token configured (set "
                                   f"{self.args.admin.token_env} or admin.token_file)", "permission_error")
        if not bearer_matches(request.headers.get("authorization"), self.admin_token):
            raise HTTPProblem(401, "header 'Authorization': missing or wrong bearer token, expected "
                                   "'Bearer <admin token>'", "authentication_error")

    # ------------------------------------------------------------------ plumbing

    async def _json_body(self, request: Request, allow_empty: bool = False) -> Any:
        limit = self.args.router.max_body_bytes
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limit:
            raise HTTPProblem(413, f"body: {declared} bytes, expected at most {limit}")
        try:
            raw = await _await_with_timeout(request.body(), BODY_TIMEOUT_S)
        except TimeoutError:
            raise HTTPProblem(408, f"body: not received within {BODY_TIMEOUT_S:.0f} s, expected the request body; "
                                   "send the request again", "timeout") from None
        if len(raw) > limit:
            raise HTTPProblem(413, f"body: {len(raw)} bytes, expected at most {limit}")
        if not raw.strip() and allow_empty:
            return None
        try:
            return json.loads(raw)
        except (UnicodeDecodeError, json.JSONDecodeError) as error:
            raise HTTPProblem(400, f"body: not valid JSON ({error}), expected a JSON object") from None

    @staticmethod
    def _empty_batch() -> dict[str, Any]:
        return {"requests": {v: [] for v in VARIANTS}, "shadow": {v: 0 for v in VARIANTS}, "judgments": [],
                "served": []}

    def _spawn(self, coroutine: Any) -> None:
        task = asyncio.get_running_loop().create_task(coroutine)
        self._background.add(task)  # keep a reference: the loop holds tasks only weakly
        task.add_done_callback(self._background.discard)

    def _ensure_reporter(self) -> None:
        if self._reporter is None or self._reporter.done():
            self._reporter = asyncio.get_running_loop().create_task(self._report_loop())

    async def _report_loop(self) -> None:
        while True:
            await asyncio.sleep(self.args.router.report_interval_s)
            try:
                await self._report()
            except Exception as error:  # the monitor restarting must not stop reporting for good
                logger.warning("canary router: report failed: %s", error)

    async def _report(self) -> None:
        """Send what happened since the last report to the monitor; write shards that are due (even when the
        monitor cannot be reached), and now and then those a dead replica left in its journal."""
        async with self._report_lock:
            batch, self._pending = self._pending, self._empty_batch()
            try:
                if any(batch["requests"][v] or batch["shadow"][v] for v in VARIANTS) or batch["judgments"] \
                        or batch["served"]:
                    self._adopt(RouterState.model_validate(await self.monitor.report.remote(batch)))
            finally:
                sweep = time.monotonic() - self._last_sweep >= JOURNAL_SWEEP_S
                if sweep:
                    self._last_sweep = time.monotonic()
                for shards in (self.feedback_shards, self.shadow_log):
                    if shards.due():
                        await asyncio.to_thread(shards.flush)
                    if sweep:
                        await asyncio.to_thread(shards.recover)

    def __del__(self) -> None:
        # Serve calls __del__ on graceful shutdown: write what is still buffered
        for shards in (self.feedback_shards, self.shadow_log):
            shards.flush()
