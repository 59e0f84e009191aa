"""The chat API as the official `openai` client uses it, served variants (a checkpoint + a system prompt + sampling
settings), shadow mode and the kill switch: real Ray Serve on the local cluster, real HTTP, a real tiny HF policy.
One Serve instance and one application (two system-prompt variants of one checkpoint) serve the Serve tests."""

from __future__ import annotations

import json
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import requests

from rlhf_ray.serving.config import GenerationSection, PolicySection, SamplingSection
from rlhf_ray.serving.variants import (
    load_variant,
    register_variant,
    resolve_sampling,
    system_prompt_digest,
    with_system_prompt,
)
from tests.test_serving import TOKEN, base_model, secrets_dir  # noqa: F401 (module fixtures)

MODEL = "rlhf-policy"
LONG_PROMPT = ("You are a thorough support assistant. Explain every step in detail, give an example for each step, "
               "and list the caveats a careful user should know about before they start.")
SHORT_PROMPT = "Answer in one sentence."
HISTORY = [{"role": "system", "content": "The user is on the premium plan."},
           {"role": "user", "content": "how do I reset my password ?"},
           {"role": "assistant", "content": "open the settings page ."},
           {"role": "user", "content": "and then what ?"}]


# ---------------------------------------------------------------------------------------------- pure parts


def test_a_variant_fills_in_defaults_clamps_requests_and_is_versioned_by_its_prompt(tmp_path: Path) -> None:
    from rlhf_ray.lineage import LineageRegistry

    sampling = SamplingSection(temperature=0.2, max_tokens=16, max_temperature=1.0, max_top_p=0.9,
                               max_tokens_limit=32)
    generation = GenerationSection(max_tokens=8, temperature=0.7)
    assert resolve_sampling(sampling, generation) == resolve_sampling(sampling, generation, None, None, None)
    default = resolve_sampling(sampling, generation)
    assert (default.max_new_tokens, default.temperature, default.top_p) == (16, 0.2, 0.9)
    clamped = resolve_sampling(sampling, generation, max_tokens=100, temperature=1.8, top_p=1.0, stop=["\n"])
    assert (clamped.max_new_tokens, clamped.temperature, clamped.top_p, clamped.stop) == (32, 1.0, 0.9, ("\n",))
    plain = resolve_sampling(SamplingSection(), generation)
    assert (plain.max_new_tokens, plain.temperature) == (8, 0.7)  # the deployment's generation defaults

    assert with_system_prompt(HISTORY[1:], SHORT_PROMPT)[0] == {"role": "system", "content": SHORT_PROMPT}
    merged = with_system_prompt(HISTORY, SHORT_PROMPT)  # one system turn: the variant's first, then the client's
    assert merged[0]["content"] == f"{SHORT_PROMPT}\n\n{HISTORY[0]['content']}" and merged[1:] == HISTORY[1:]
    assert with_system_prompt(HISTORY, None) == HISTORY

    (tmp_path / "concise.txt").write_text(SHORT_PROMPT + "\n")
    (tmp_path / "concise.yaml").write_text("system_prompt_file: concise.txt\nmodel_path: ckpt\n"
                                           "sampling: {temperature: 0.2}\n")
    variant = load_variant(str(tmp_path / "concise.yaml"))
    assert (variant.name, variant.system_prompt, variant.model_path) == ("concise", SHORT_PROMPT,
                                                                          str(tmp_path / "ckpt"))
    (tmp_path / "bad.yaml").write_text("system_prompt: x\nsampling: {temprature: 0.2}\n")
    with pytest.raises(ValueError, match="temprature"):
        load_variant(str(tmp_path / "bad.yaml"))

    registry = LineageRegistry(tmp_path / "lineage")
    checkpoint = registry.register("checkpoint", "ckpt", "digest-of-the-weights").id
    ids = {prompt: register_variant(registry, PolicySection(policy_id=checkpoint, system_prompt=prompt), "v")
           for prompt in (SHORT_PROMPT, LONG_PROMPT)}
    assert len(set(ids.values())) == 2  # two prompts on one checkpoint: two variants
    assert register_variant(registry, PolicySection(policy_id=checkpoint, system_prompt=SHORT_PROMPT), "again") \
        == ids[SHORT_PROMPT]  # the same text is the same version
    record = registry.get(ids[SHORT_PROMPT])
    prompt = registry.get(record.parents[1])
    assert record.kind == "variant" and record.parents[0] == checkpoint
    assert prompt.kind == "system-prompt" and prompt.content_digest == system_prompt_digest(SHORT_PROMPT)


def test_the_hf_backend_streams_what_it_generates_with_the_sampled_tokens_logprobs(base_model) -> None:  # noqa: F811
    import torch

    from rlhf_ray.rollout.backends import GenerationParams, HFBackend

    backend = HFBackend(base_model)
    params = GenerationParams(max_new_tokens=12, temperature=0.8, top_p=0.9, seed=5, logprobs=True)
    samples = backend.generate([HISTORY], ["p"], 2, params)
    for sample in samples:  # log p of each sampled token at the sampling temperature, as a forward pass gives it
        logits = backend.model(torch.tensor([sample.prompt_ids + sample.response_ids])).logits[0]
        logp = torch.log_softmax(logits / 0.8, dim=-1)
        start = len(sample.prompt_ids) - 1
        expected = [logp[start + k, token].item() for k, token in enumerate(sample.response_ids)]
        assert sample.response_logprobs == pytest.approx(expected, abs=1e-4)
    deltas = list(backend.stream(HISTORY, "p", 2, params))
    finals = [d.sample for d in deltas if d.sample is not None]
    assert [s.response_ids for s in finals] == [s.response_ids for s in samples]  # same seed, same samples
    for index, sample in enumerate(finals):
        assert "".join(d.text for d in deltas if d.index == index) == sample.response
        assert len(deltas) > len(finals)  # pieces before the end, one per token
    # stop: generation ends on the string, which is cut off; the prompt's own tail never matches
    sampled = GenerationParams(max_new_tokens=12, temperature=0.8, top_p=0.9, seed=5)
    whole = backend.generate([HISTORY], ["p"], 1, sampled)[0]
    stop = whole.response[3:6]
    cut = backend.generate([HISTORY], ["p"], 1, replace(sampled, stop=(stop,)))[0]
    assert cut.finished and cut.response == whole.response[: whole.response.index(stop)]
    assert len(cut.response_ids) < len(whole.response_ids)


# ---------------------------------------------------------------------------------------------- Serve


@pytest.fixture(scope="module")
def variant_app(serve_instance, base_model, secrets_dir, tmp_path_factory) -> dict[str, Any]:  # noqa: F811
    """Two system-prompt variants of one checkpoint: the incumbent explains at length, the canary answers in one
    sentence with its own sampling defaults. No canary traffic until a test sets a weight."""
    from actors.serve_app import deploy_canary
    from rlhf_ray.serving.config import CanaryAppArgs

    root = tmp_path_factory.mktemp("openai-app")
    policy = {"model_path": base_model, "num_cpus": 0.1}
    args = CanaryAppArgs.model_validate({
        "deployment_id": "deployment-openai", "state_dir": str(root / "state"),
        "incumbent": {**policy, "policy_id": "variant-long", "system_prompt": LONG_PROMPT},
        "canary": {**policy, "policy_id": "variant-short", "system_prompt": SHORT_PROMPT,
                   "sampling": {"temperature": 0.0, "max_tokens_limit": 4}},
        "admin": {"token_file": secrets_dir["token_file"]}, "pseudonyms": {"key_file": secrets_dir["key_file"]},
        "router": {"initial_weight": 0.0, "report_interval_s": 0.1}, "feedback": {"flush_interval_s": 0.2},
        "generation": {"max_tokens": 8, "max_tokens_limit": 256}})
    url = deploy_canary(args, name="openai-test", route_prefix="/oa", port=serve_instance)
    return {"url": url, "root": root, "model": base_model}


def _client(url: str, user: str, admin: bool = True) -> Any:
    """The official client; the admin token (sent as its API key) lets it see which variant answered and name the
    user it speaks for."""
    import openai

    return openai.OpenAI(base_url=f"{url}/v1", api_key=TOKEN if admin else "no-key-configured", max_retries=0,
                         default_headers={"x-user-id": user})


def _prompt_tokens(model: str, messages: list[dict[str, str]]) -> int:
    from rlhf_ray.models import load_tokenizer
    from rlhf_ray.training.encoding import prompt_text

    tokenizer = load_tokenizer(model)
    return len(tokenizer(prompt_text(tokenizer, messages), add_special_tokens=False)["input_ids"])


@pytest.mark.ray
def test_the_openai_client_chats_and_streams_with_system_prompts_and_history(variant_app) -> None:
    import openai

    url, client = variant_app["url"], _client(variant_app["url"], "user-oa-1")
    assert [m.id for m in client.models.list()] == [MODEL]  # the variants are not models

    raw = client.chat.completions.with_raw_response.create(model=MODEL, messages=HISTORY, max_tokens=6, n=2,
                                                           temperature=0.0, logprobs=True)
    completion = raw.parse()
    assert completion.model_extra["variant"] == "incumbent" and len(completion.choices) == 2
    # the whole conversation reached the template, after the variant's system prompt; n answers counted
    assert completion.usage.prompt_tokens == _prompt_tokens(variant_app["model"],
                                                            with_system_prompt(HISTORY, LONG_PROMPT))
    assert completion.usage.completion_tokens == 12 and completion.choices[0].finish_reason == "length"
    for choice in completion.choices:
        entries = choice.logprobs.content
        assert len(entries) == 6 and all(e.logprob <= 0 for e in entries)
        assert "".join(e.token for e in entries) == choice.message.content

    # newer clients' forms, the system turn as `developer` and content as text parts: the same turns reach the template
    as_parts = [{"role": "developer" if m["role"] == "system" else m["role"],
                 "content": [{"type": "text", "text": m["content"]}]} for m in HISTORY]
    same = client.chat.completions.create(model=MODEL, messages=as_parts, max_tokens=6, temperature=0.0)
    assert same.usage.prompt_tokens == completion.usage.prompt_tokens
    assert same.choices[0].message.content == completion.choices[0].message.content

    # stop: the same seeded answer, cut before the stop string
    sampled = dict(model=MODEL, messages=HISTORY, max_tokens=12, temperature=1.0, seed=7)
    text = client.chat.completions.create(**sampled).choices[0].message.content
    stop = text[4:7]
    cut = client.chat.completions.create(**sampled, stop=[stop]).choices[0]
    assert cut.finish_reason == "stop" and cut.message.content == text[: text.index(stop)]

    # streaming: chunks arrive as tokens are generated, the first long before the last
    started = time.perf_counter()
    stream = client.chat.completions.create(model=MODEL, messages=HISTORY, max_tokens=200, temperature=0.0,
                                            stream=True, stream_options={"include_usage": True})
    arrivals, pieces, usage, finish = [], [], None, None
    for chunk in stream:
        arrivals.append(time.perf_counter() - started)
        if chunk.usage is not None:
            usage = chunk.usage
        for choice in chunk.choices:
            pieces.append(choice.delta.content or "")
            finish = choice.finish_reason or finish
    first_token = next(t for t, piece in zip(arrivals, pieces, strict=False) if piece)
    total = arrivals[-1]
    print(f"streaming through the router: first token {first_token * 1000:.0f} ms, all 200 {total * 1000:.0f} ms")
    assert first_token < 0.5 * total and sum(1 for p in pieces if p) >= 100
    assert finish == "length" and usage.completion_tokens == 200
    plain = client.chat.completions.create(model=MODEL, messages=HISTORY, max_tokens=200, temperature=0.0)
    assert "".join(pieces) == plain.choices[0].message.content  # streamed = whole, greedy

    # the raw event stream ends with [DONE]; errors come in OpenAI's shape, through the client's exceptions
    reply = requests.post(f"{url}/v1/chat/completions", json={"model": MODEL, "messages": HISTORY, "max_tokens": 2,
                                                              "stream": True}, stream=True, timeout=60)
    events = [line for line in reply.iter_lines(decode_unicode=True) if line]
    assert reply.headers["content-type"].startswith("text/event-stream") and events[-1] == "data: [DONE]"
    assert json.loads(events[0][6:])["object"] == "chat.completion.chunk"
    with pytest.raises(openai.NotFoundError) as missing:
        client.chat.completions.create(model="gpt-4o", messages=HISTORY)
    assert (missing.value.code, missing.value.param) == ("model_not_found", "model")
    with pytest.raises(openai.BadRequestError) as too_many:
        client.chat.completions.create(model=MODEL, messages=HISTORY, n=50)
    assert too_many.value.param == "n" and "at most 4" in too_many.value.message
    unknown = requests.get(f"{url}/v1/nothing-here", timeout=30)
    assert unknown.status_code == 404 and set(unknown.json()["error"]) == {"message", "type", "param", "code"}
    wrong_method = requests.get(f"{url}/v1/chat/completions", timeout=30)
    assert (wrong_method.status_code, wrong_method.headers["allow"]) == (405, "POST")
    assert "method not allowed" in wrong_method.json()["error"]["message"]


def _admin(url: str, action: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
    reply = requests.post(f"{url}/v1/canary/{action}", json=body or {}, headers={"Authorization": f"Bearer {TOKEN}"},
                          timeout=60)
    assert reply.status_code == 200, reply.text
    return reply.json()


def _variant_of(url: str, user: str) -> tuple[str, Any]:
    raw = _client(url, user).chat.completions.with_raw_response.create(
        model=MODEL, messages=[{"role": "user", "content": f"question of {user}"}], max_tokens=2)
    return raw.headers["x-rlhf-variant"], raw.parse()


@pytest.mark.ray
def test_shadow_mode_answers_with_the_incumbent_and_logs_the_canarys_copy(variant_app) -> None:
    url = variant_app["url"]
    _admin(url, "weights", {"canary_weight": 1.0, "mode": "shadow", "reason": "shadow test"})
    users = [f"shadow-user-{i}" for i in range(4)]
    seen = [_variant_of(url, user) for user in users]
    assert {variant for variant, _ in seen} == {"incumbent"}  # every user is on the canary's side, none sees it
    shadow_dir = variant_app["root"] / "state" / "shadow"
    deadline, rows = time.monotonic() + 15, []
    while time.monotonic() < deadline and len(rows) < len(users):
        requests.get(f"{url}/v1/canary", timeout=30)  # a report writes the shadow shards that are due
        rows = [json.loads(line) for path in shadow_dir.glob("[!.]*.jsonl") for line in path.read_text().splitlines()]
        time.sleep(0.3)
    assert sorted(row["prompt"] for row in rows) == sorted(f"question of {user}" for user in users)
    assert all(row["canary_policy_id"] == "variant-short" and isinstance(row["canary"], str) for row in rows)
    incumbent_answers = {completion.choices[0].message.content for _, completion in seen}
    assert {row["incumbent"] for row in rows} <= incumbent_answers  # the users' answers; the copies are discarded
    status = requests.get(f"{url}/v1/canary", timeout=30).json()
    assert status["variants"]["canary"]["shadow_requests"] >= len(users)


@pytest.mark.ray
def test_the_kill_switch_sends_the_very_next_request_to_the_incumbent(variant_app) -> None:
    url = variant_app["url"]
    _admin(url, "weights", {"canary_weight": 1.0, "mode": "split", "reason": "kill test"})
    variant, completion = _variant_of(url, "kill-user")
    deadline = time.monotonic() + 10
    while variant != "canary" and time.monotonic() < deadline:  # the weight reaches the router replica
        time.sleep(0.2)
        variant, completion = _variant_of(url, "kill-user")
    assert variant == "canary" and completion.usage.completion_tokens <= 4  # the canary variant's own limit
    assert _admin(url, "kill", {"reason": "kill test"})["phase"] == "killed"
    assert _variant_of(url, "kill-user")[0] == "incumbent"  # the next request, not eventually
    assert {_variant_of(url, f"kill-user-{i}")[0] for i in range(5)} == {"incumbent"}


# ---------------------------------------------------------------------------------------------- variant canary

CONCISE_PROMPT_TOKENS: dict[str, int] = {}  # user turn → prompt tokens under the concise variant (set by the test)


def prefers_the_concise_prompt(request: dict[str, Any], response: str, meta: dict[str, Any]) -> bool:
    """The scripted user of the variant canary: a thumb up for answers given under the one-sentence system prompt.
    A random-weight checkpoint ignores what a system prompt asks, so the user recognises it by the one thing it
    changes for sure, the rendered prompt's length that `usage.prompt_tokens` reports."""
    return meta["usage"]["prompt_tokens"] == CONCISE_PROMPT_TOKENS[request["messages"][-1]["content"]]


@pytest.mark.ray
def test_a_canary_of_two_system_prompts_on_one_checkpoint_runs_to_a_decision(
        serve_instance, base_model, secrets_dir, tmp_path: Path) -> None:  # noqa: F811
    from jobs.canary import CanaryConfig, run
    from rlhf_ray.config import WandbConfig
    from rlhf_ray.lineage import LineageRegistry

    rows = [{"prompt": "how do I reset my password ?"}, {"prompt": "where is my parcel ?"}]
    (tmp_path / "traffic.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    for row in rows:
        CONCISE_PROMPT_TOKENS[row["prompt"]] = _prompt_tokens(
            base_model, with_system_prompt([{"role": "user", "content": row["prompt"]}], SHORT_PROMPT))
    (tmp_path / "long.yaml").write_text(json.dumps({"system_prompt": LONG_PROMPT}))
    (tmp_path / "short.txt").write_text(SHORT_PROMPT)
    (tmp_path / "short.yaml").write_text("system_prompt_file: short.txt\nsampling: {temperature: 0.0}\n")
    config = CanaryConfig.model_validate({
        "incumbent_path": base_model, "canary_path": base_model, "output_dir": str(tmp_path / "out"), "seed": 0,
        "incumbent_variant": str(tmp_path / "long.yaml"), "canary_variant": str(tmp_path / "short.yaml"),
        "wandb": WandbConfig(mode="disabled"),
        "serve": {"port": serve_instance, "app_name": "variant-canary", "route_prefix": "/variants"},
        "ramp": {"steps": []},
        "traffic": {"replay": str(tmp_path / "traffic.jsonl"), "feedback": f"{__name__}:prefers_the_concise_prompt",
                    "max_requests": 200, "max_tokens": 2},
        "incumbent": {"num_cpus": 0.1}, "canary": {"num_cpus": 0.1},
        "router": {"initial_weight": 0.5, "report_interval_s": 0.1},
        "sequential": {"alpha": 0.05, "power": 0.8, "mde": 0.3, "min_samples": 6},
        "pseudonyms": {"key_file": secrets_dir["key_file"]}, "admin": {"token_file": secrets_dir["token_file"]},
    })
    summary = run(config)
    assert (summary["decision"], summary["decision_source"]) == ("promote", "sequential"), summary
    assert summary["accept_rate"] == {"incumbent": 0.0, "canary": 1.0} and summary["requests_sent"] < 200
    # lineage: two variants of one checkpoint, each with its system prompt by content hash, under the deployment
    registry = LineageRegistry(summary["lineage_root"])
    variants = [registry.get(summary["policies"][v]) for v in ("incumbent", "canary")]
    assert [v.kind for v in variants] == ["variant", "variant"] and variants[0].id != variants[1].id
    assert variants[0].parents[0] == variants[1].parents[0]  # the one checkpoint
    prompts = [registry.get(v.parents[1]).content_digest for v in variants]
    assert prompts == [system_prompt_digest(LONG_PROMPT), system_prompt_digest(SHORT_PROMPT)]
    promoted = [e for e in registry.events() if e.event == "canary.promote"]
    assert [e.payload["policy_id"] for e in promoted] == [variants[1].id]
