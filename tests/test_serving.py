"""Canary serving: real Ray Serve on the local cluster, real HTTP (the openai client and requests), real
tiny HF policies. One Serve instance (loopback, a free port) serves every test of this module."""

from __future__ import annotations

import json
import random
import shutil
import time
from collections import Counter
from datetime import UTC
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import requests

from rlhf_ray.contracts import MAX_TEXT_CHARS
from rlhf_ray.contracts.validation import validate_row
from rlhf_ray.governance import PiiMasker, generate_key_file
from rlhf_ray.serving.assignment import assign_variant, user_bucket
from rlhf_ray.serving.feedback import FeedbackError, ServedResponse, feedback_row, outcomes
from rlhf_ray.serving.guardrails import GuardrailBounds, VariantStats, check_guardrails, percentile
from rlhf_ray.serving.schemas import FEEDBACK_ADAPTER, ChatCompletionRequest, parse_model
from rlhf_ray.serving.shards import JsonlShardBuffer

TOKEN = "test-admin-token-" + "x" * 24
MODEL = "rlhf-policy"
NUM_SIM_PROMPTS = 8
WORLD_SIZE = 200  # the simulated world of this module (as the session fixtures use)


# ---------------------------------------------------------------------------------------------- pure parts


def test_assignment_is_sticky_weighted_and_monotone_in_the_weight() -> None:
    users = [f"user-{i}" for i in range(20000)]
    share = np.mean([assign_variant(u, 0.1, "dep-a") == "canary" for u in users])
    assert abs(share - 0.1) < 0.01
    assert all(assign_variant(u, 0.1, "dep-a") == assign_variant(u, 0.1, "dep-a") for u in users[:100])
    # raising the weight keeps every canary user on the canary
    assert all(assign_variant(u, 0.25, "dep-a") == "canary" for u in users if assign_variant(u, 0.1, "dep-a")
               == "canary")
    # another deployment (salt) draws a different group
    assert user_bucket("user-1", "dep-a") != user_bucket("user-1", "dep-b")
    with pytest.raises(ValueError, match="canary_weight"):
        assign_variant("u", 1.5, "s")


def _served(response_id: str = "r1", variant: str = "canary", response: str = "an answer .") -> ServedResponse:
    return ServedResponse(response_id=response_id, variant=variant, policy_id=f"policy-{variant}", prompt_id="p-1",
                          prompt="how do I reset my router ?", response=response, actor_id="usr_0123456789abcdef",
                          region="eu")


def test_every_feedback_kind_becomes_a_valid_contract_row_with_pii_masked() -> None:
    now = time.time()
    from datetime import datetime

    moment = datetime.fromtimestamp(now, UTC)
    other = _served("r2", "incumbent", "another answer .")
    bodies = [{"kind": "thumbs", "response_id": "r1", "value": 1},
              {"kind": "likert", "response_id": "r1", "value": 2},
              {"kind": "pairwise", "response_id": "r1", "other_response_id": "r2", "choice": "b"},
              {"kind": "correction", "response_id": "r1", "text": "write to jane.doe@example.com instead"},
              {"kind": "flag", "response_id": "r1", "category": "privacy", "severity": 2}]
    types = []
    for body in bodies:
        item = parse_model(FEEDBACK_ADAPTER, body)
        row, pii = feedback_row(item, _served(), signal_id=f"s-{body['kind']}", now=moment, actor_id="usr_x",
                                masker=PiiMasker(), other=other)
        assert validate_row(row, moment) is None
        types.append(row["signal_type"])
        if body["kind"] == "correction":
            assert "<EMAIL>" in row["edited_response"] and pii == {"email": 1}
    assert types == ["rating", "rating", "pairwise", "correction", "safety_flag"]
    pairwise = parse_model(FEEDBACK_ADAPTER, bodies[2])
    assert [(o.variant, o.accepted, o.response_id) for o in outcomes(pairwise, _served(), other)] == [
        ("incumbent", True, "r2"), ("canary", False, "r1")]  # each outcome names the answer it judges
    with pytest.raises(FeedbackError, match="other_response_id"):
        feedback_row(pairwise, _served(), signal_id="s", now=moment, actor_id="usr_x", masker=PiiMasker())


@pytest.mark.parametrize(("prompt_id", "reason"), [("p-1 my name is Ada Quenby", "whitespace"),
                                                   ("415-555-0134", "found: phone")])
def test_feedback_on_a_prompt_id_that_is_not_an_id_is_refused(prompt_id: str, reason: str) -> None:
    from dataclasses import replace
    from datetime import datetime

    thumbs = parse_model(FEEDBACK_ADAPTER, {"kind": "thumbs", "response_id": "r1", "value": 1})
    with pytest.raises(FeedbackError, match=reason) as error:
        feedback_row(thumbs, replace(_served(), prompt_id=prompt_id), signal_id="s-1",
                     now=datetime.now(UTC), actor_id="usr_x", masker=PiiMasker())
    assert "field 'prompt_id'" in str(error.value) and "555-0134" not in str(error.value)


def test_bad_bodies_name_field_value_and_expectation() -> None:
    with pytest.raises(ValueError, match=r"field 'messages\[0\].role': got 'bot'"):
        parse_model(ChatCompletionRequest, {"model": MODEL, "messages": [{"role": "bot", "content": "x"}]})
    with pytest.raises(ValueError, match=r"field 'value': got 7, expected 0 or 1"):
        parse_model(FEEDBACK_ADAPTER, {"kind": "thumbs", "response_id": "r", "value": 7})


def test_text_content_parts_and_the_developer_role_reach_the_template_as_plain_turns() -> None:
    """OpenAI's newer clients send content as a list of parts and the system turn as `developer`."""
    chat = parse_model(ChatCompletionRequest, {"model": MODEL, "messages": [
        {"role": "developer", "content": [{"type": "text", "text": "Be brief."}]},
        {"role": "user", "content": [{"type": "text", "text": "where is"}, {"type": "text", "text": "my parcel ?"}]}]})
    assert chat.conversation() == [{"role": "system", "content": "Be brief."},
                                   {"role": "user", "content": "where is\nmy parcel ?"}]
    image = {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}}
    for content, error in (([image], r"field 'messages\[0\].content': got .*text parts only.*part 0 is 'image_url'"),
                           ([], r"field 'messages\[0\].content': got \[\], expected a string, or a list of 1 to"),
                           ([{"type": "text", "text": "x" * (MAX_TEXT_CHARS // 2 + 1)}] * 2,  # each fits, not both
                            rf"field 'messages\[0\].content': got 'x+…, expected .*at most {MAX_TEXT_CHARS}")):
        with pytest.raises(ValueError, match=error):
            parse_model(ChatCompletionRequest, {"model": MODEL, "messages": [{"role": "user", "content": content}]})


def test_guardrails_judge_a_sliding_window_after_min_requests() -> None:
    bounds = GuardrailBounds(max_error_rate=0.1, max_p95_latency_s=1.0, max_safety_flag_rate=0.1, min_requests=10,
                             window=20)
    stats = VariantStats(window=20)
    stats.add_requests([(True, 0.1, False)] * 5)
    assert check_guardrails(stats.window_figures(), bounds) == []  # too few requests to judge
    stats.add_requests([(False, 0.1, False)] * 5)
    assert [b.metric for b in check_guardrails(stats.window_figures(), bounds)] == ["error_rate"]
    stats.add_requests([(False, 2.0, False)] * 20)  # the errors leave the window, slow answers enter
    assert [b.metric for b in check_guardrails(stats.window_figures(), bounds)] == ["p95_latency_s"]
    assert percentile([1, 2, 3, 4], 50) == 2 and percentile([], 95) == 0.0


_KILLED_WRITERS = """
import os, signal, sys
from rlhf_ray.serving import shards
root = sys.argv[1]
cut = shards.JsonlShardBuffer(root, "cut", 100, 60.0)  # dies with rows buffered and a line half-written
for i in range(3):
    cut.add({"signal_id": f"cut-{i}"})
os.write(cut._segment.fd, b'{"signal_id": "cut-half')
late = shards.JsonlShardBuffer(root, "late", 100, 60.0)  # dies after writing its shard, before deleting its journal
for i in range(2):
    late.add({"signal_id": f"late-{i}"})
shards._Segment.close = lambda self, delete: os.kill(os.getpid(), signal.SIGKILL)
late.flush()
"""


def test_shard_journal_gives_a_killed_writers_rows_to_a_shard_once(tmp_path: Path) -> None:
    import subprocess
    import sys

    root = tmp_path / "feedback"
    live = JsonlShardBuffer(str(root), "live", 100, 60.0)
    live.add({"signal_id": "live-0"})
    died = subprocess.run([sys.executable, "-c", _KILLED_WRITERS, str(root)], capture_output=True, timeout=120)
    assert died.returncode == -9, died.stderr.decode()[-2000:]
    assert [p.name.split("-")[-2] for p in root.glob("*.jsonl") if not p.name.startswith(".")] == ["late"]
    recovered = JsonlShardBuffer(str(root), "next", 100, 60.0).files_recovered  # a new writer recovers on start
    assert recovered == 1  # the cut writer's shard; the late one's existed already
    assert JsonlShardBuffer(str(root), "again", 100, 60.0).recover() == []  # a second look finds nothing left
    assert [p.name for p in root.glob(".journal-*")] == [f".journal-{live._name}.wal"]  # the live one is kept
    live.flush()
    rows = [json.loads(line) for path in sorted(root.glob("[!.]*.jsonl")) for line in path.read_text().splitlines()]
    assert sorted(r["signal_id"] for r in rows) == ["cut-0", "cut-1", "cut-2", "late-0", "late-1", "live-0"]
    assert list(root.glob(".*")) == []


def test_router_retries_a_policy_call_once_when_the_replica_under_it_died() -> None:
    import asyncio
    from types import SimpleNamespace

    from ray.exceptions import ActorDiedError, ActorUnavailableError

    from actors.serve_router import CanaryRouter, HTTPProblem
    from rlhf_ray.serving.config import CanaryAppArgs

    class Policy:  # a deployment handle whose calls fail in turn with the given errors, then answer
        def __init__(self, *errors: BaseException) -> None:
            self.errors, self.calls = list(errors), 0

        def remote(self, **call: Any) -> Any:
            self.calls += 1
            error = self.errors.pop(0) if self.errors else None

            async def answer() -> dict[str, Any]:
                if error is not None:
                    raise error
                return {"choices": [{"text": call["prompt"]}], "prompt_tokens": 1, "completion_tokens": 1}

            return answer()

    retried: list[str] = []  # the variants counted by rlhf_serve_policy_retries_total

    def call(policy: Policy) -> tuple[Any, list[bool]]:
        router_class, recorded = CanaryRouter.func_or_class, []
        router = SimpleNamespace(args=CanaryAppArgs(), generators={"canary": policy},
                                 _record=lambda variant, error, latency, flagged: recorded.append(error),
                                 _retries=SimpleNamespace(inc=lambda tags: retried.append(tags["variant"])))
        router._fail = lambda *args: router_class._fail(router, *args)
        try:
            return asyncio.run(router_class._call_policy(router, "canary", {"prompt": "hi"})), recorded
        except HTTPProblem as problem:
            return problem.status, recorded

    assert call(Policy(ActorDiedError())) == (({"choices": [{"text": "hi"}], "prompt_tokens": 1,
                                                "completion_tokens": 1}, 1), [False])
    assert call(Policy(ActorUnavailableError("gone", b"1" * 16)))[0][1] == 1
    twice = Policy(ActorDiedError(), ActorDiedError())
    assert call(twice) == (502, [True]) and twice.calls == 2  # one retry, then the variant's error
    broken = Policy(ValueError("the model raised"))
    assert call(broken) == (502, [True]) and broken.calls == 1  # the policy's own failure is not retried
    assert retried == ["canary"] * 3  # one per retry: the two answered calls and the twice-failed one


# ---------------------------------------------------------------------------------------------- Serve fixtures


def _copy_model(source: str, target: Path, config_changes: dict[str, Any] | None = None,
                perturb_seed: int | None = None) -> str:
    """A second real checkpoint: a copy with other weights (a distinct policy) or an edited config."""
    shutil.copytree(source, target)
    if perturb_seed is not None:
        import torch

        from rlhf_ray.models import load_causal_lm

        model = load_causal_lm(target)
        generator = torch.Generator().manual_seed(perturb_seed)
        with torch.no_grad():
            for parameter in model.parameters():
                parameter.add_(0.02 * torch.randn(parameter.shape, generator=generator))
        model.save_pretrained(target)
    if config_changes:
        path = target / "config.json"
        path.write_text(json.dumps({**json.loads(path.read_text()), **config_changes}))
    return str(target)


@pytest.fixture(scope="module")
def secrets_dir(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("serving-secrets")
    generate_key_file(root / "pseudonym.key")
    (root / "admin.token").write_text(TOKEN)
    return {"key_file": str(root / "pseudonym.key"), "token_file": str(root / "admin.token")}


@pytest.fixture(scope="module")
def base_model(tmp_path_factory: pytest.TempPathFactory) -> str:
    """The tiny base policy (random weights, gibberish answers); quicker to build than `world_assets`."""
    from rlhf_ray.models import init_model
    from rlhf_ray.sim import World, WorldConfig

    world = World(WorldConfig(num_prompts=WORLD_SIZE), 0)
    return str(init_model(world.corpus(), tmp_path_factory.mktemp("base") / "model", "tiny", seed=0).path)


def _args(root: Path, incumbent: str, canary: str, secrets: dict[str, str], **sections: Any) -> Any:
    from rlhf_ray.serving.config import CanaryAppArgs

    base = {"deployment_id": f"deployment-{root.name}", "state_dir": str(root / "state"),
            "lineage_root": str(root / "lineage"),
            "incumbent": {"model_path": incumbent, "policy_id": "policy-incumbent", "num_cpus": 0.1},
            "canary": {"model_path": canary, "policy_id": "policy-canary", "num_cpus": 0.1},
            "admin": {"token_file": secrets["token_file"]}, "pseudonyms": {"key_file": secrets["key_file"]},
            "router": {"initial_weight": 0.1, "report_interval_s": 0.1},
            "feedback": {"flush_interval_s": 0.2}}
    for name, values in sections.items():
        base[name] = {**base.get(name, {}), **values}
    return CanaryAppArgs.model_validate(base)


@pytest.fixture(scope="module")
def canary_app(serve_instance, base_model, secrets_dir, tmp_path_factory) -> dict[str, Any]:
    from actors.serve_app import deploy_canary

    root = tmp_path_factory.mktemp("canary-app")
    canary_model = _copy_model(base_model, root / "canary-model", perturb_seed=1)
    args = _args(root, base_model, canary_model, secrets_dir, generation={"max_tokens": 8})
    url = deploy_canary(args, name="canary-test", route_prefix="/", port=serve_instance)
    return {"url": url, "args": args, "root": root, "app": "canary-test"}


def _as(user: str) -> dict[str, str]:
    """Headers of a trusted front end (the admin token) speaking for `user`: its arm and feedback are the user's,
    and it sees which variant answered."""
    return {"Authorization": f"Bearer {TOKEN}", "x-user-id": user}


def _pseudonym(secrets: dict[str, str], user: str) -> str:
    """The router's id of `user`, which its arm is drawn from."""
    from rlhf_ray.governance import Pseudonymizer, load_key

    return Pseudonymizer(load_key(key_file=secrets["key_file"])).pseudonym(user)


def _chat(url: str, user: str, content: str = "how do I reset my password ?", max_tokens: int = 1,
          **extra: Any) -> requests.Response:
    body = {"model": MODEL, "messages": [{"role": "user", "content": content}], "max_tokens": max_tokens,
            "user": user, **extra}
    return requests.post(f"{url}/v1/chat/completions", json=body, headers=_as(user), timeout=60)


def _feedback(url: str, user: str, answer: dict[str, Any], body: dict[str, Any]) -> requests.Response:
    """`user`'s feedback on `answer` (a chat completion it was given), with the answer's feedback token."""
    return requests.post(f"{url}/v1/feedback", json={"response_id": answer["id"],
                                                     "feedback_token": answer["feedback_token"], **body},
                         headers=_as(user), timeout=30)


def _admin(url: str, action: str, body: dict[str, Any] | None = None, token: str | None = TOKEN) -> requests.Response:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return requests.post(f"{url}/v1/canary/{action}", json=body or {}, headers=headers, timeout=60)


def _variants_of(url: str, users: list[str]) -> dict[str, str]:
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=8) as pool:
        replies = list(pool.map(lambda u: _chat(url, u), users))
    assert all(r.status_code == 200 for r in replies), [r.text for r in replies if r.status_code != 200][:2]
    return {u: r.headers["x-rlhf-variant"] for u, r in zip(users, replies, strict=True)}


# ---------------------------------------------------------------------------------------------- Serve tests


@pytest.mark.ray
def test_openai_client_gets_a_chat_completion(canary_app) -> None:
    import openai

    client = openai.OpenAI(base_url=f"{canary_app['url']}/v1", api_key=TOKEN, max_retries=0)  # admin: sees variant
    raw = client.chat.completions.with_raw_response.create(
        model=MODEL, messages=[{"role": "user", "content": "how do I reset my password ?"}], max_tokens=8,
        temperature=0.0, user="user-000001")
    completion = raw.parse()
    assert isinstance(completion.choices[0].message.content, str)
    assert completion.usage.completion_tokens >= 1 and completion.usage.total_tokens > completion.usage.prompt_tokens
    assert completion.id.startswith("chatcmpl-") and raw.headers["x-rlhf-response-id"] == completion.id
    assert raw.headers["x-rlhf-variant"] in ("incumbent", "canary")
    assert completion.model_extra["variant"] == raw.headers["x-rlhf-variant"]


@pytest.mark.ray
def test_weights_split_users_and_each_user_keeps_one_variant(canary_app, secrets_dir) -> None:
    users = [f"user-{i:06d}" for i in range(300)]
    first = _variants_of(canary_app["url"], users)
    share = Counter(first.values())["canary"] / len(users)
    expected = np.mean([user_bucket(_pseudonym(secrets_dir, u), canary_app["args"].deployment_id) < 0.1
                        for u in users])
    assert share == expected and abs(share - 0.1) < 0.05  # the exact sticky assignment, ≈ 10 %
    again = _variants_of(canary_app["url"], users[:40] * 2)
    assert all(again[u] == first[u] for u in users[:40])


@pytest.mark.ray
def test_reweight_at_runtime_without_restarting_replicas(canary_app) -> None:
    from actors.serve_control import replica_ids

    url, app = canary_app["url"], canary_app["app"]
    before = {d: replica_ids(app, d) for d in ("CanaryRouter", "incumbent", "canary")}
    assert _admin(url, "weights", {"canary_weight": 0.6, "reason": "ramp"}).json()["canary_weight"] == 0.6
    users = [f"reweight-{i}" for i in range(120)]
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:  # the user_config update reaches the replica within a moment
        share = Counter(_variants_of(url, users).values())["canary"] / len(users)
        if share > 0.4:
            break
        time.sleep(0.5)
    assert share > 0.4
    assert {d: replica_ids(app, d) for d in before} == before
    assert _admin(url, "weights", {"canary_weight": 0.1}).status_code == 200
    audit = sorted((canary_app["root"] / "state" / "audit").glob("*-weights-*.json"))
    assert [json.loads(p.read_text())["after"]["canary_weight"] for p in audit][-2:] == [0.6, 0.1]


@pytest.mark.ray
def test_bad_requests_get_4xx_with_a_message(canary_app) -> None:
    url = canary_app["url"]
    cases = [
        (requests.post(f"{url}/v1/chat/completions", data=b"{not json", timeout=30), 400, "not valid JSON"),
        (requests.post(f"{url}/v1/chat/completions", json={"model": MODEL}, timeout=30), 400, "messages"),
        (_chat(url, "u", n=9), 400, "'n'"),
        (_chat(url, "u", stream="sometimes"), 400, "'stream'"),
        (_chat(url, "u", max_tokens=100000), 400, "max_tokens"),
        (_chat(url, "u", temperature="hot"), 400, "temperature"),
        (requests.post(f"{url}/v1/chat/completions", json={"model": "gpt-4", "messages": [
            {"role": "user", "content": "hi"}]}, timeout=30), 404, "model"),
        (requests.post(f"{url}/v1/chat/completions", data=b"x" * 70000, timeout=30), 413, "at most"),
        (_chat(url, "u", content="y" * 9000), 400, "content"),
        (requests.post(f"{url}/v1/feedback", json={"kind": "thumbs", "response_id": "nope", "value": 1},
                       timeout=30), 404, "response_id"),
        (requests.post(f"{url}/v1/feedback", json={"kind": "stars", "response_id": "x"}, timeout=30), 400, "kind"),
        (requests.post(f"{url}/v1/feedback", json=[1, 2], timeout=30), 400, "body"),
        (_admin(url, "weights", {"canary_weight": 2}), 400, "canary_weight"),
        (_admin(url, "explode"), 404, "unknown admin action"),
    ]
    for reply, status, words in cases:
        assert reply.status_code == status, (reply.status_code, reply.text)
        assert words in reply.json()["error"]["message"], reply.text


@pytest.mark.ray
def test_admin_endpoints_refuse_without_the_token(canary_app) -> None:
    url = canary_app["url"]
    for action in ("weights", "promote", "rollback", "kill"):
        for token in (None, "wrong-token-0123456789"):
            reply = _admin(url, action, {"canary_weight": 1.0} if action == "weights" else {}, token=token)
            assert reply.status_code == 401 and reply.headers["www-authenticate"] == "Bearer"
    assert requests.get(f"{url}/v1/canary", timeout=30).json()["phase"] == "running"


@pytest.mark.ray
def test_feedback_is_validated_masked_and_readable_by_ingest(canary_app, secrets_dir, tmp_path) -> None:
    from actors.ingest import IngestConfig, ingest
    from rlhf_ray.config import LineageConfig, WandbConfig

    url = canary_app["url"]
    first, second = (_chat(url, "fb-user-0", content="how do I renew a passport ?").json() for _ in range(2))
    bodies = [(first, {"kind": "thumbs", "value": 1}), (first, {"kind": "likert", "value": 5}),
              (first, {"kind": "pairwise", "other_response_id": second["id"], "choice": "a",
                       "other_feedback_token": second["feedback_token"]}),
              (first, {"kind": "correction", "text": "call me on +44 20 7946 0958 or mail jo@example.org"}),
              (second, {"kind": "flag", "category": "privacy"})]
    for answer, body in bodies:
        reply = _feedback(url, "fb-user-0", answer, body)
        assert reply.status_code == 202, reply.text
    status = requests.get(f"{url}/v1/canary", timeout=30).json()
    # the pairwise compares two answers of one variant (one user's): feedback, but no judgment of a variant
    assert sum(v["feedback"] for v in status["variants"].values()) >= len(bodies) - 1
    feedback_dir = Path(canary_app["args"].feedback_dir)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and len(_rows(feedback_dir)) < len(bodies):
        requests.get(f"{url}/v1/canary", timeout=30)  # a report also writes shards that are due
        time.sleep(0.3)
    rows = _rows(feedback_dir)
    text = json.dumps(rows)
    assert "jo@example.org" not in text and "fb-user-0" not in text and "<EMAIL>" in text
    with pytest.MonkeyPatch.context() as patch:
        patch.delenv("RLHF_RAY_PSEUDONYM_KEY", raising=False)
        summary = ingest(IngestConfig(input=str(feedback_dir), output_dir=str(tmp_path / "ingested"),
                                      pseudonyms={"key_file": secrets_dir["key_file"]},
                                      wandb=WandbConfig(mode="disabled"),
                                      lineage=LineageConfig(root=str(tmp_path / "lineage"))))
    assert summary["quarantined_rows"] == 0 and summary["accepted_rows"] == len(rows) >= len(bodies)


def _rows(folder: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for path in sorted(folder.glob("*.jsonl")) for line in path.read_text().splitlines()]


@pytest.mark.ray
def test_a_canary_that_raises_errors_is_rolled_back_automatically(serve_instance, base_model, secrets_dir,
                                                                  tmp_path_factory) -> None:
    from actors.serve_app import deploy_canary
    from rlhf_ray.lineage import LineageRegistry

    root = tmp_path_factory.mktemp("broken-canary")
    # a real misconfigured checkpoint: 8 positions, so every prompt overflows and generate raises
    broken = _copy_model(base_model, root / "broken", {"max_position_embeddings": 8})
    args = _args(root, base_model, broken, secrets_dir, router={"initial_weight": 0.5},
                 guardrails={"min_requests": 10, "max_error_rate": 0.2})
    url = deploy_canary(args, name="broken-test", route_prefix="/broken", port=serve_instance)
    codes = Counter(_chat(url, f"b-user-{i}").status_code for i in range(60))
    assert codes[502] >= 10  # canary users got errors until the guardrail tripped
    status = requests.get(f"{url}/v1/canary", timeout=30).json()
    assert status["phase"] == "rolled_back" and status["canary_weight"] == 0.0
    decision = status["decisions"][-1]
    assert decision["source"] == "guardrail" and "error_rate" in decision["reason"]
    time.sleep(1.0)
    assert {_chat(url, f"b-user-{i}").headers.get("x-rlhf-variant") for i in range(20)} == {"incumbent"}
    events = LineageRegistry(args.lineage_root).events()
    assert [e.payload["policy_id"] for e in events if e.event == "canary.rollback"] == ["policy-canary"]
    from ray import serve

    serve.delete("broken-test")


# ---------------------------------------------------------------------------------------------- simulation


def _memorize(base: str, out: Path, steps: int = 120) -> str:
    """A truly better policy, cheaply: fine-tune the tiny base model on good answers to the simulation's
    prompts until it reproduces them (its generations score high true utility; the base model's do not).
    The simulation's 8 train prompts ask 7 distinct intents (seed 0): 70 steps leave a mean true utility of 0.25
    on them, 100 or more reach 1.49."""
    import torch

    from rlhf_ray.algos.sft import sft_loss
    from rlhf_ray.models import load_causal_lm, load_tokenizer
    from rlhf_ray.sim import World, WorldConfig
    from rlhf_ray.sim.responses import STYLES
    from rlhf_ray.training.encoding import encode_chat

    world = World(WorldConfig(num_prompts=WORLD_SIZE), 0)
    rng = np.random.default_rng(0)
    examples = [(p.text, world.respond(p, STYLES["good"], rng)) for p in world.split("train")[:NUM_SIM_PROMPTS]]
    tokenizer, model = load_tokenizer(base), load_causal_lm(base)
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=5e-3)
    batch = encode_chat(tokenizer, [p for p, _ in examples], [r for _, r in examples], 256)
    for _ in range(steps):
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        loss = sft_loss(logits, batch["input_ids"], batch["response_mask"])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return str(out)


@pytest.fixture(scope="module")
def better_policy(base_model, tmp_path_factory) -> str:
    return _memorize(base_model, tmp_path_factory.mktemp("better") / "model")


def _simulate(incumbent: str, canary: str, out: Path, port: int, secrets: dict[str, str]) -> dict[str, Any]:
    from jobs.canary import CanaryConfig, run
    from rlhf_ray.config import WandbConfig

    config = CanaryConfig.model_validate({
        "incumbent_path": incumbent, "canary_path": canary, "output_dir": str(out), "seed": 0,
        "world": {"num_prompts": WORLD_SIZE}, "wandb": WandbConfig(mode="disabled"),
        "serve": {"port": port, "app_name": f"sim-{out.name}", "route_prefix": f"/{out.name}"},
        "ramp": {"steps": [0.5], "requests_per_step": 40},
        "simulation": {"max_requests": 600, "concurrency": 4, "num_prompts": NUM_SIM_PROMPTS, "max_tokens": 40},
        "incumbent": {"num_cpus": 0.1}, "canary": {"num_cpus": 0.1},
        "router": {"initial_weight": 0.25, "report_interval_s": 0.1},
        "sequential": {"alpha": 0.05, "power": 0.8, "mde": 0.2, "baseline_rate": 0.5, "min_samples": 20},
        "pseudonyms": {"key_file": secrets["key_file"]}, "admin": {"token_file": secrets["token_file"]},
    })
    return run(config)


@pytest.mark.ray
@pytest.mark.slow
def test_simulated_canary_promotes_a_better_policy_and_rolls_back_a_worse_one(
        serve_instance, base_model, better_policy, secrets_dir, tmp_path) -> None:
    from rlhf_ray.lineage import LineageRegistry

    better = _simulate(base_model, better_policy, tmp_path / "better", serve_instance, secrets_dir)
    assert better["decision"] == "promote" and better["decision_source"] == "sequential", better
    assert better["true_utility"]["canary"] > better["true_utility"]["incumbent"]
    assert better["judged_at_decision"] < better["fixed_horizon_total"] and better["decided_before_fixed_horizon"]
    events = LineageRegistry(better["lineage_root"]).events(better["deployment_id"])
    canary_events = [e for e in events if e.event.startswith("canary.")]
    assert canary_events[-1].event == "canary.promote"
    # every ramp step before the decision is a chain event too, with the weights before and after
    assert all(e.event == "canary.weights" and e.payload["after"]["canary_weight"] > e.payload["before"]
               ["canary_weight"] for e in canary_events[:-1])

    worse = _simulate(better_policy, base_model, tmp_path / "worse", serve_instance, secrets_dir)
    assert worse["decision"] == "rollback" and worse["decision_source"] == "sequential", worse
    assert worse["judged_at_decision"] < worse["fixed_horizon_total"]


# ---------------------------------------------------------------------------------------------- fault drill

DRILL_APP = "drill-test"
DRILL_USERS_PER_VARIANT = 2
DRILL_TIMEOUT_S = 30  # a drill client gives up on a call after this long (no call should take so long)


def _drill_users(deployment_id: str, weight: float, secrets: dict[str, str]) -> dict[str, list[str]]:
    """Users whose sticky assignment puts them on each variant, so both policies get steady traffic."""
    users: dict[str, list[str]] = {"incumbent": [], "canary": []}
    index = 0
    while min(len(group) for group in users.values()) < DRILL_USERS_PER_VARIANT:
        user = f"drill-user-{index}"
        index += 1
        group = users["canary" if user_bucket(_pseudonym(secrets, user), deployment_id) < weight else "incumbent"]
        if len(group) < DRILL_USERS_PER_VARIANT:
            group.append(user)
    return users


@pytest.fixture(scope="module")
def drill_app(serve_instance, base_model, secrets_dir, tmp_path_factory) -> dict[str, Any]:
    """A canary app of its own for the fault drills (killing replicas of `canary_app` would disturb the tests that
    pin its replica ids). The sequential test is off, so only a guardrail could end the canary; the latency bound
    is loose because a call that waits for a replacement replica is slow, not wrong."""
    from actors.serve_app import deploy_canary

    root = tmp_path_factory.mktemp("drill-app")
    args = _args(root, base_model, base_model, secrets_dir, router={"initial_weight": 0.5},
                 generation={"max_tokens": 8}, guardrails={"max_p95_latency_s": 120.0},
                 sequential={"auto_decide": False}, feedback={"rate_per_s": 1000.0})  # a thumb per answer
    url = deploy_canary(args, name=DRILL_APP, route_prefix="/drill", port=serve_instance)
    return {"url": url, "args": args, "root": root, "users": _drill_users(args.deployment_id, 0.5, secrets_dir)}


def _drill_client(url: str, user: str, stop: Any, log: list[dict[str, Any]]) -> None:
    """One user: ask, then give a thumb on the answer, until told to stop. Every call is logged, failed or not."""
    turn = 0
    while not stop.is_set():
        turn += 1
        entry: dict[str, Any] = {"kind": "chat", "user": user, "start": time.monotonic()}
        try:
            reply = requests.post(f"{url}/v1/chat/completions", timeout=DRILL_TIMEOUT_S, headers=_as(user), json={
                "model": MODEL, "max_tokens": 8, "user": user,
                "messages": [{"role": "user", "content": f"drill question {turn} : how do I reset my password ?"}]})
            entry.update(status=reply.status_code, end=time.monotonic())
            if reply.status_code == 200:
                entry.update(id=reply.json()["id"], token=reply.json()["feedback_token"],
                             variant=reply.headers["x-rlhf-variant"],
                             retries=int(reply.headers.get("x-rlhf-retries", 0)))
        except requests.RequestException as error:
            entry.update(status=type(error).__name__, end=time.monotonic())
        log.append(entry)
        if entry.get("id") is None:
            continue
        note: dict[str, Any] = {"kind": "feedback", "user": user, "start": time.monotonic(), "of": entry["id"]}
        try:
            reply = requests.post(f"{url}/v1/feedback", headers=_as(user), timeout=DRILL_TIMEOUT_S, json={
                "kind": "thumbs", "response_id": entry["id"], "feedback_token": entry["token"], "value": turn % 2})
            note.update(status=reply.status_code, end=time.monotonic())
            if reply.status_code == 202:
                note["id"] = reply.json()["id"]
        except requests.RequestException as error:
            note.update(status=type(error).__name__, end=time.monotonic())
        log.append(note)


def _shard_rows(folder: Path) -> list[dict[str, Any]]:
    """Every row of every committed shard, read as ingest lists them (temporaries are hidden): each file must be
    complete JSONL, a row per line, with a newline at its end."""
    from rlhf_ray.storage import StorageRoot

    rows = []
    for path in StorageRoot.from_uri(str(folder)).list_files(suffixes=(".jsonl",)):
        text = Path(path).read_text()
        assert text.endswith("\n"), f"half-written shard {path}"
        rows += [json.loads(line) for line in text.splitlines()]
    return rows


@pytest.mark.ray
@pytest.mark.parametrize("victim", ["canary", "incumbent", "CanaryRouter"])
def test_fault_drill_a_killed_replica_is_replaced_without_losing_answers_or_duplicating_rows(
        drill_app, victim: str) -> None:
    """Fault drill: users chat and give feedback while one replica (a policy's or the router's) is SIGKILLed at a
    seeded random point. Serve starts a replacement (a new actor); a policy call cut off by the death is retried
    by the router, so no user sees an error; a router death fails the calls in flight on it, and its replacement
    writes the feedback it had accepted but not yet written (from its journal). Either way every accepted row
    lands in a complete shard file exactly once, every answer id is unique, the canary keeps running and both
    variants answer afterwards. The three cases run one after another on one app, so each is also a re-run on a
    deployment that survived the previous kill."""
    import threading

    import ray

    from actors.serve_control import replica_actors, replica_ids

    url, users = drill_app["url"], drill_app["users"]
    feedback_dir = Path(drill_app["args"].feedback_dir)
    seed = random.randrange(1 << 16)
    delay = random.Random(seed).uniform(0.3, 1.5)
    deployments = ("CanaryRouter", "incumbent", "canary")
    before = {d: replica_ids(DRILL_APP, d) for d in deployments}
    rows_before = {row["signal_id"] for row in _shard_rows(feedback_dir)}
    (victim_id, victim_actor), = replica_actors(DRILL_APP, victim).items()

    log: list[dict[str, Any]] = []
    stop = threading.Event()
    clients = [threading.Thread(target=_drill_client, args=(url, user, stop, log), daemon=True)
               for group in users.values() for user in group]
    started = time.monotonic()
    for client in clients:
        client.start()
    try:
        time.sleep(delay)
        killed_at, killed_wall = time.monotonic(), time.time()
        ray.kill(victim_actor, no_restart=True)
        deadline = killed_at + 60
        while time.monotonic() < deadline:  # Serve notices the death and starts a new replica
            now = replica_ids(DRILL_APP, victim)
            if now and victim_id not in now:
                break
            time.sleep(0.2)
        replaced_at = time.monotonic()
        assert now and victim_id not in now, (seed, delay, now)
        # the re-run: every user keeps being served after the replacement
        deadline = replaced_at + 30
        while time.monotonic() < deadline and not all(
                sum(e["kind"] == "chat" and e["start"] > replaced_at and e.get("id") is not None
                    and e["user"] == user for e in list(log)) >= 2 for group in users.values() for user in group):
            time.sleep(0.1)
    finally:
        stop.set()
        for client in clients:
            client.join(timeout=70)
    assert not any(client.is_alive() for client in clients)
    after = {d: replica_ids(DRILL_APP, d) for d in deployments}
    assert {d: ids for d, ids in after.items() if d != victim} == {d: ids for d, ids in before.items()
                                                                   if d != victim}, "only the victim restarted"

    chats = [e for e in log if e["kind"] == "chat"]
    feedback = [e for e in log if e["kind"] == "feedback"]
    failed = [e for e in chats if e["status"] != 200]
    retried = sum(e.get("retries", 0) for e in chats)
    figures = {"victim": victim, "seed": seed, "delay_s": round(delay, 2), "chats": len(chats),
               "failed": len(failed), "retried": retried, "replace_s": round(replaced_at - killed_at, 2),
               "phase_s": round(time.monotonic() - started, 2)}
    # every answer id once; after the replacement everyone is answered, by both variants
    ids = [e["id"] for e in chats if e.get("id")]
    assert len(ids) == len(set(ids)), figures
    late = [e for e in chats if e["start"] > replaced_at]
    assert late and all(e["status"] == 200 for e in late), (figures, late)
    assert {e["variant"] for e in late} == {"incumbent", "canary"}, figures
    status = requests.get(f"{url}/v1/canary", timeout=30).json()
    assert status["phase"] == "running", (figures, status["decisions"])

    # every accepted feedback row reaches a shard, once: a dead router's unwritten rows from its journal
    accepted = {e["id"] for e in feedback if e["status"] == 202}
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:  # a status read reports, and so writes the shards that are due
        rows = _shard_rows(feedback_dir)
        if accepted <= {row["signal_id"] for row in rows}:
            break
        requests.get(f"{url}/v1/canary", timeout=30)
        time.sleep(0.3)
    signal_ids = [row["signal_id"] for row in rows]
    new_rows = set(signal_ids) - rows_before
    refused = [e for e in feedback if e["status"] != 202]
    figures.update(feedback_accepted=len(accepted), feedback_lost=len(accepted - new_rows),
                   feedback_refused=len(refused),
                   failures=[(e["kind"], e["status"], round(e["start"] - killed_at, 2), round(e["end"] - killed_at, 2))
                             for e in log if e["status"] not in (200, 202)])
    if victim == "CanaryRouter":  # shards of the dead router's tag written after its death: from its journal
        shards = [(p.name.split("-")[-2], p.stat().st_mtime, p) for p in feedback_dir.glob("[!.]*.jsonl")]
        old_tags = {tag for tag, mtime, _ in shards if mtime < killed_wall}
        figures["feedback_recovered"] = sum(len(p.read_text().splitlines()) for tag, mtime, p in shards
                                            if mtime >= killed_wall and tag in old_tags)
    print("fault drill:", figures)
    assert len(signal_ids) == len(set(signal_ids)), figures  # no row twice
    answered = [row["item_id"] for row in rows]
    assert len(answered) == len(set(answered)), figures  # one thumb per answer, so one row per answer
    assert accepted <= new_rows, figures  # nothing lost
    # and nothing we did not send: a row the client saw no answer for (a feedback call the kill cut off) is there
    # at most once, as the one feedback on its answer
    cut_off = {e["of"] for e in refused}
    assert all(row["item_id"] in cut_off for row in rows if row["signal_id"] in new_rows - accepted), figures
    assert JsonlShardBuffer(str(feedback_dir), "drill-check", 100, 60.0).recover() == [], "an orphaned journal"
    if victim == "CanaryRouter":
        # the calls in flight on the dead ingress fail (each user has at most one), then the proxy waits for the new
        # replica. Now and then Serve hands that one a call whose body the dead one had already read: it answers 408
        # after BODY_TIMEOUT_S rather than hang. The new replica knows the answers the dead one had reported to the
        # monitor, so feedback is refused as unknown only on answers given in the last moment before the kill.
        broken = [e for e in log if e["status"] not in (200, 202, 404)]
        assert all(e["start"] <= killed_at + 1.0 for e in broken), figures  # only around the moment of the kill
        assert all(isinstance(e["status"], int) and (e["status"] == 408 or e["status"] >= 500) for e in broken), \
            figures  # an answer each: no call left hanging until the client gave up
        assert len(broken) <= 2 * len(clients), figures
        answered_at = {e["id"]: e["end"] for e in chats if e.get("id")}
        assert all(e["start"] <= killed_at or answered_at[e["of"]] >= killed_at - 1.0 for e in refused), figures
    else:
        assert failed == [] and refused == [], figures  # the router retried what the dead policy replica had
        assert status["variants"][victim]["errors"] == 0, figures


# ---------------------------------------------------------------------------------------------- replayed traffic

REPLAY_ROWS = [
    {"prompt": "how do I reset my password ?"},
    {"messages": [{"role": "system", "content": "answer briefly"},
                  {"role": "user", "content": "where is my parcel ?"}]},
    {"prompt": "can I change my plan ?", "skip": True},
    {"prompt": "how do I close my account ?", "user": "replay-regular"},
]


def likes_the_canary(request: dict[str, Any], response: str, meta: dict[str, Any]) -> bool | None:
    """The scripted user of the replay test: a thumb up for the canary's answers, down for the incumbent's (the
    variant the API reports), and no verdict on rows marked `skip`."""
    assert isinstance(response, str) and meta["response_id"] and request["messages"][-1]["role"] == "user"
    return None if request.get("skip") else meta["variant"] == "canary"


def test_traffic_files_and_scripted_verdicts_are_checked_naming_line_and_value(tmp_path: Path) -> None:
    from rlhf_ray.serving.replay import TrafficFileError, feedback_body, read_traffic

    good = json.dumps(REPLAY_ROWS[0])
    for line, expected in (('{"text": "hi"}', "line 2: got {'messages': None, 'prompt': None}, expected 'messages'"),
                           ('{"messages": [{"role": "bot", "content": "hi"}]}', "line 2: field 'messages'"),
                           ('{"prompt": "hi", "user": 7}', "line 2: field 'user': got 7"),
                           ("{not json", "line 2: not JSON")):
        (tmp_path / "traffic.jsonl").write_text(f"{good}\n{line}\n")
        with pytest.raises(TrafficFileError, match=expected.replace("(", r"\(").replace("[", r"\[")):
            read_traffic(str(tmp_path / "traffic.jsonl"))
    assert feedback_body(True, "r1") == {"kind": "thumbs", "value": 1, "response_id": "r1"}
    assert feedback_body(4, "r1") == {"kind": "likert", "value": 4, "response_id": "r1"}
    assert feedback_body({"kind": "flag", "category": "privacy"}, "r1")["category"] == "privacy"
    assert feedback_body(None, "r1") is None
    with pytest.raises(ValueError, match="scripted user returned 7: field 'value': got 7"):
        feedback_body(7, "r1")


@pytest.mark.ray
def test_a_replayed_traffic_file_judged_by_a_scripted_user_decides_the_canary(serve_instance, base_model, secrets_dir,
                                                                               tmp_path: Path) -> None:
    """`traffic.replay` + `traffic.feedback`: the file's requests go through the HTTP API again and again, the
    scripted user's thumbs go to the feedback endpoint, and the sequential test promotes the arm it prefers."""
    from jobs.canary import CanaryConfig, run
    from rlhf_ray.config import WandbConfig

    (tmp_path / "traffic.jsonl").write_text("".join(json.dumps(row) + "\n" for row in REPLAY_ROWS))
    canary = _copy_model(base_model, tmp_path / "canary-model", perturb_seed=2)
    max_requests = 200
    config = CanaryConfig.model_validate({
        "incumbent_path": base_model, "canary_path": canary, "output_dir": str(tmp_path / "out"), "seed": 0,
        "wandb": WandbConfig(mode="disabled"),
        "serve": {"port": serve_instance, "app_name": "replay-test", "route_prefix": "/replay"},
        "ramp": {"steps": []},
        "traffic": {"replay": str(tmp_path / "traffic.jsonl"), "feedback": f"{__name__}:likes_the_canary",
                    "max_requests": max_requests, "max_tokens": 2},
        "incumbent": {"num_cpus": 0.1}, "canary": {"num_cpus": 0.1},
        "router": {"initial_weight": 0.5, "report_interval_s": 0.1},
        "sequential": {"alpha": 0.05, "power": 0.8, "mde": 0.3, "min_samples": 6},
        "pseudonyms": {"key_file": secrets_dir["key_file"]}, "admin": {"token_file": secrets_dir["token_file"]},
    })
    summary = run(config)
    assert (summary["decision"], summary["decision_source"]) == ("promote", "sequential"), summary
    assert summary["requests_sent"] < max_requests and summary["replay_passes"] >= 2
    assert summary["accept_rate"] == {"incumbent": 0.0, "canary": 1.0}
    # one row in four gets no verdict; the other answers' thumbs reached the feedback endpoint (the monitor counts
    # them from the routers' reports, which may lag the last few) and its shards
    assert summary["answers_unjudged"] > 0
    assert 0 < sum(summary["judged"].values()) <= summary["feedback_sent"]["thumbs"]
    assert summary["feedback_id"] is not None
