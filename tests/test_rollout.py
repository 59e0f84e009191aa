"""Rollout side of PPO: sample packing and alignment, HF generation, weight sync to Ray rollout workers,
actor restarts, and placement errors."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import torch

from actors.groups import ActorGroup, PlacementError
from actors.rollout import RolloutWorker
from actors.transport import publish_weights, resolve_weights
from rlhf_ray.algos.logprobs import masked_sum
from rlhf_ray.models import init_model, load_causal_lm
from rlhf_ray.rollout import (
    BACKENDS,
    GenerationBackend,
    GenerationParams,
    HFBackend,
    Sample,
    VLLMBackend,
    make_backend,
    pack_samples,
    response_token_view,
    state_dict_nbytes,
    state_digest,
)
from rlhf_ray.rollout.backends import make_sample
from rlhf_ray.sim import World, WorldConfig

PROMPTS = ["How do I reset my password?", "Summarise the refund policy.", "Plan a trip to Lisbon."]
PROMPT_IDS = ["p0", "p1", "p2"]
SAMPLED = GenerationParams(max_new_tokens=12, temperature=1.0, seed=7)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> str:
    out = tmp_path_factory.mktemp("rollout") / "model"
    return str(init_model(World(WorldConfig(num_prompts=200), 0).corpus(), out, "tiny", seed=0).path)


@pytest.fixture(scope="module")
def backend(model_dir: str) -> HFBackend:
    return HFBackend(model_dir)


@pytest.fixture(scope="module")
def end_id(backend: HFBackend) -> int:
    return backend.tokenizer.convert_tokens_to_ids("<|end|>")


def stopping_policy(model_dir: str, end_id: int, gap: float) -> torch.nn.Module:
    """The tiny model edited to emit end-of-turn with a chosen eagerness (a stand-in for a learner update).

    Embeddings are tied, so giving every token embedding the constant 1 in coordinate 0 (end-of-turn 1 + gap)
    and letting the final norm read only coordinate 0 makes every logit equal except end-of-turn's, which is
    higher by gap · (normalised coordinate 0 > 0): gap 2 stops at the first token, gap 0.5 at random lengths.
    """
    model = load_causal_lm(model_dir)
    with torch.no_grad():
        embedding = model.get_input_embeddings().weight
        embedding[:, 0] = 1.0
        embedding[end_id, 0] = 1.0 + gap
        model.model.norm.weight.zero_()
        model.model.norm.weight[0] = 1.0
    return model


# ------------------------------------------------------------------------------------------ packing / alignment


def test_pack_samples_aligns_response_mask_with_input_ids() -> None:
    samples = [Sample("a", "p", "r", [1, 2, 3], [4, 5], True), Sample("b", "q", "s", [1, 2], [6, 7, 8, 9], False)]
    batch = pack_samples(samples, pad_token_id=0)
    assert batch["input_ids"].tolist() == [[1, 2, 3, 4, 5, 0], [1, 2, 6, 7, 8, 9]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 1, 1, 0], [1, 1, 1, 1, 1, 1]]
    assert batch["response_mask"].tolist() == [[0, 0, 0, 1, 1, 0], [0, 0, 1, 1, 1, 1]]
    assert batch["prompt_lengths"].tolist() == [3, 2]
    assert batch["response_lengths"].tolist() == [2, 4]


def test_response_token_view_gathers_column_t_minus_1_left_aligned_and_zero_padded() -> None:
    samples = [Sample("a", "p", "r", [1, 2, 3], [4, 5], True), Sample("b", "q", "s", [1, 2], [6, 7, 8, 9], False)]
    batch = pack_samples(samples, pad_token_id=0)
    # token t's value sits at column t−1: make it 10 × the token id so the gather is readable
    token_values = (10.0 * batch["input_ids"][:, 1:].float()).requires_grad_()
    values, mask = response_token_view(token_values, batch["response_mask"])
    assert values.tolist() == [[40.0, 50.0, 0.0, 0.0], [60.0, 70.0, 80.0, 90.0]]
    assert mask.tolist() == [[True, True, False, False], [True, True, True, True]]
    # the same total as the trainers' masked sum over response_mask[:, 1:]
    torch.testing.assert_close(values.sum(-1), masked_sum(token_values, batch["response_mask"][:, 1:]))
    values.sum().backward()
    assert token_values.grad.tolist() == batch["response_mask"][:, 1:].float().tolist()


def test_response_token_view_works_with_left_padding_and_rejects_bad_shapes() -> None:
    response_mask = torch.tensor([[0, 0, 1, 1], [0, 1, 1, 0]])
    token_values = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
    values, mask = response_token_view(token_values, response_mask)
    assert values.tolist() == [[2.0, 3.0], [4.0, 5.0]] and mask.all()
    with pytest.raises(ValueError, match="T−1"):
        response_token_view(token_values, response_mask[:, :3])
    with pytest.raises(ValueError, match="empty prompt_ids"):
        pack_samples([Sample("a", "", "r", [], [4], True)], pad_token_id=0)


def test_make_sample_keeps_the_stop_token_and_cuts_what_follows(backend: HFBackend, end_id: int) -> None:
    tokenizer = backend.tokenizer
    words = tokenizer("hello world", add_special_tokens=False)["input_ids"]
    finished = make_sample(tokenizer, "a", "p", [1], [*words, end_id, 0, 0], backend.stops)
    assert finished.finished and finished.response_ids == [*words, end_id]
    assert finished.response == "hello world"
    capped = make_sample(tokenizer, "a", "p", [1], words, backend.stops)
    assert not capped.finished and capped.response_ids == words


def test_generation_params_reject_bad_values() -> None:
    for bad, field in [({"max_new_tokens": 0}, "max_new_tokens"), ({"temperature": -1}, "temperature"),
                       ({"top_p": 0}, "top_p"), ({"top_k": -2}, "top_k")]:
        with pytest.raises(ValueError, match=field):
            GenerationParams(**bad)


# ------------------------------------------------------------------------------------------ backends


def test_hf_backend_returns_num_samples_per_prompt_in_prompt_order(backend: HFBackend) -> None:
    assert isinstance(backend, GenerationBackend)
    samples = backend.generate(PROMPTS, PROMPT_IDS, 2, SAMPLED)
    assert [s.prompt_id for s in samples] == ["p0", "p0", "p1", "p1", "p2", "p2"]
    assert [s.prompt for s in samples] == [p for p in PROMPTS for _ in range(2)]
    for sample in samples:
        assert sample.prompt_ids == backend.tokenizer(backend.tokenizer.apply_chat_template(
            [{"role": "user", "content": sample.prompt}], add_generation_prompt=True, tokenize=False),
            add_special_tokens=False)["input_ids"]
        assert sample.response == backend.tokenizer.decode(sample.response_ids, skip_special_tokens=True)
        assert 1 <= len(sample.response_ids) <= SAMPLED.max_new_tokens


def test_hf_backend_same_seed_same_samples_other_seed_other_samples(backend: HFBackend) -> None:
    first = backend.generate(PROMPTS, PROMPT_IDS, 2, SAMPLED)
    again = backend.generate(PROMPTS, PROMPT_IDS, 2, SAMPLED)
    other = backend.generate(PROMPTS, PROMPT_IDS, 2, GenerationParams(max_new_tokens=12, seed=8))
    assert first == again
    assert [s.response_ids for s in first] != [s.response_ids for s in other]
    # a prompt's two samples are two draws, not one repeated
    assert first[0].response_ids != first[1].response_ids
    greedy = GenerationParams(max_new_tokens=8, temperature=0.0)
    assert backend.generate(PROMPTS[:1], PROMPT_IDS[:1], 2, greedy)[0] == backend.generate(
        PROMPTS[:1], PROMPT_IDS[:1], 1, greedy)[0]


def test_hf_backend_respects_max_new_tokens_and_finished_flag(model_dir: str, end_id: int) -> None:
    local = HFBackend(model_dir, max_batch_size=4)  # two chunks for 6 rows
    capped = local.generate(PROMPTS, PROMPT_IDS, 2, GenerationParams(max_new_tokens=5, seed=1))
    assert all(len(s.response_ids) == 5 and not s.finished for s in capped)  # an untrained model never stops

    local.load_state_dict(stopping_policy(model_dir, end_id, gap=0.5).state_dict())
    samples = local.generate(PROMPTS, PROMPT_IDS, 4, GenerationParams(max_new_tokens=16, seed=1))
    assert {s.finished for s in samples} == {True, False}, "the edited policy should stop at random lengths"
    for sample in samples:
        stops = [k for k, token in enumerate(sample.response_ids) if token in local.stops]
        if sample.finished:  # exactly one stop token, the last one, and no padding after it
            assert stops == [len(sample.response_ids) - 1]
            assert "<|end|>" not in sample.response
        else:
            assert stops == [] and len(sample.response_ids) == 16


def test_backend_registry_and_vllm_without_vllm(model_dir: str) -> None:
    assert set(BACKENDS) == {"hf", "vllm"}
    with pytest.raises(ValueError, match="unknown generation backend 'tgi'"):
        make_backend("tgi", model_dir)
    try:
        import vllm  # noqa: F401
    except ImportError:
        with pytest.raises(ImportError, match=r"pip install rlhf-ray\[vllm\]"):
            VLLMBackend(model_dir)


def test_vllm_backend_generates_and_takes_new_weights(model_dir: str, end_id: int) -> None:
    pytest.importorskip("vllm")
    if not torch.cuda.is_available():
        pytest.skip("vLLM needs a GPU")
    engine = VLLMBackend(model_dir, dtype="float32", gpu_memory_utilization=0.2)
    samples = engine.generate(PROMPTS, PROMPT_IDS, 2, SAMPLED)
    assert [s.prompt_id for s in samples] == ["p0", "p0", "p1", "p1", "p2", "p2"]
    assert samples == engine.generate(PROMPTS, PROMPT_IDS, 2, SAMPLED)
    policy = stopping_policy(model_dir, end_id, gap=2.0)
    engine.load_state_dict(policy.state_dict())
    assert engine.state_digest() == state_digest(policy.state_dict())
    assert all(s.response_ids == [end_id] and s.finished for s in engine.generate(PROMPTS, PROMPT_IDS, 2, SAMPLED))


def test_state_digest_and_nbytes(model_dir: str, end_id: int) -> None:
    base = load_causal_lm(model_dir).state_dict()
    assert state_digest(base) == state_digest({k: v.clone() for k, v in reversed(list(base.items()))})
    assert state_digest(base) != state_digest(stopping_policy(model_dir, end_id, 0.5).state_dict())
    assert state_dict_nbytes(base) == sum(v.numel() * 4 for v in base.values())


# ------------------------------------------------------------------------------------------ Ray actors

RESTARTS = 1


@pytest.fixture(scope="module")
def workers(ray_cluster, model_dir: str):
    group = ActorGroup(RolloutWorker, count=2, num_cpus=0.25, max_restarts=RESTARTS, max_task_retries=1,
                       init_args=(model_dir, "hf"), init_kwargs={"seed": 0})
    group.ready(timeout_s=120)
    yield group
    group.shutdown()


@pytest.mark.ray
def test_publish_weights_is_one_object_and_resolves(ray_cluster, model_dir: str) -> None:
    model = load_causal_lm(model_dir)
    ref = publish_weights(model)
    assert isinstance(ref, ray_cluster.ObjectRef)
    state = resolve_weights(ref)
    assert list(state) == sorted(model.state_dict())
    assert state_digest(state) == state_digest(model.state_dict())
    with pytest.raises(TypeError, match="state dict"):
        resolve_weights([1, 2])


@pytest.mark.ray
def test_weight_sync_reaches_every_worker_and_changes_generation(ray_cluster, workers: ActorGroup,
                                                                model_dir: str, end_id: int) -> None:
    ray = ray_cluster
    checkpoint = state_digest(load_causal_lm(model_dir).state_dict())
    before = ray.get(workers.call("weights_digest"))
    assert before == [checkpoint, checkpoint]
    old = ray.get(workers.call("generate", PROMPTS, PROMPT_IDS, 2, SAMPLED))
    assert old[0]["samples"] == old[1]["samples"]  # same weights, same seed: the same samples on every worker
    assert old[0]["tokens"] == sum(len(s.response_ids) for s in old[0]["samples"]) and old[0]["seconds"] > 0

    learner = stopping_policy(model_dir, end_id, gap=2.0)
    ref = publish_weights(learner)
    start = time.perf_counter()
    digests = ray.get(workers.call("load_weights", ref))
    sync_seconds = time.perf_counter() - start
    assert digests == [state_digest(learner.state_dict())] * 2 != before
    assert ray.get(workers.call("weights_digest")) == digests
    print(f"sync of {state_dict_nbytes(learner.state_dict()) / 1e6:.1f} MB to 2 workers: {sync_seconds:.3f}s")

    new = ray.get(workers.call("generate", PROMPTS, PROMPT_IDS, 2, SAMPLED))
    for result in new:
        assert result["weights_version"] == 1
        assert all(s.finished and s.response_ids == [end_id] for s in result["samples"])

    # one shard of prompts per worker
    shards = [(PROMPTS[:2], PROMPT_IDS[:2], 1, SAMPLED), (PROMPTS[2:], PROMPT_IDS[2:], 3, SAMPLED)]
    results = ray.get(workers.call_sharded("generate", shards))
    assert [s.prompt_id for s in results[0]["samples"]] == ["p0", "p1"]
    assert [s.prompt_id for s in results[1]["samples"]] == ["p2"] * 3
    with pytest.raises(ValueError, match="one shard per actor"):
        workers.call_sharded("generate", shards[:1])


@pytest.mark.ray
def test_a_killed_worker_restarts_and_takes_weights_again(ray_cluster, workers: ActorGroup, model_dir: str,
                                                         end_id: int) -> None:
    ray = ray_cluster
    learner = stopping_policy(model_dir, end_id, gap=2.0)
    learner_digest = state_digest(learner.state_dict())
    ray.get(workers.call("load_weights", publish_weights(learner)))
    pid_before = ray.get(workers.actors[0].ready.remote())["pid"]

    ray.kill(workers.actors[0], no_restart=False)  # asynchronous: poll until the restarted process answers
    deadline = time.time() + 120
    answers = workers.ready(timeout_s=120)  # through the same handles; calls in flight are retried
    while answers[0]["pid"] == pid_before and time.time() < deadline:
        time.sleep(0.2)
        answers = workers.ready(timeout_s=120)
    assert answers[0]["pid"] != pid_before
    assert answers[0]["weights_version"] == 0  # a restart rebuilds the worker from the checkpoint
    assert ray.get(workers.actors[0].weights_digest.remote()) == state_digest(load_causal_lm(model_dir).state_dict())

    assert ray.get(workers.call("load_weights", publish_weights(learner))) == [learner_digest] * 2
    results = ray.get(workers.call("generate", PROMPTS[:1], PROMPT_IDS[:1], 1, SAMPLED))
    assert [r["samples"][0].response_ids for r in results] == [[end_id], [end_id]]


@pytest.mark.ray
def test_placement_that_cannot_fit_is_a_clear_error(ray_cluster, workers: ActorGroup) -> None:
    ray = ray_cluster
    with pytest.raises(PlacementError, match=r"no node has \{'CPU': 8.0\}"):
        ActorGroup(RolloutWorker, count=2, num_cpus=8, init_args=("unused",))
    # fits the cluster on paper but not next to the running workers: waits, then fails and releases its bundles
    available = ray.available_resources().get("CPU", 0.0)
    with pytest.raises(PlacementError, match="could not reserve 2 bundle"):
        ActorGroup(RolloutWorker, count=2, num_cpus=1.0, init_args=("unused",), ready_timeout_s=2)
    deadline = time.time() + 10
    while ray.available_resources().get("CPU", 0.0) < available and time.time() < deadline:
        time.sleep(0.1)
    assert ray.available_resources().get("CPU", 0.0) == pytest.approx(available)


def test_actor_group_rejects_bad_settings() -> None:
    with pytest.raises(ValueError, match="count"):
        ActorGroup(RolloutWorker, count=0)
    with pytest.raises(ValueError, match="strategy"):
        ActorGroup(RolloutWorker, count=1, strategy="RANDOM")
    with pytest.raises(ValueError, match="both 0"):
        ActorGroup(RolloutWorker, count=1, num_cpus=0)


def test_rollout_worker_runs_in_process(model_dir: str, end_id: int, tmp_path: Path) -> None:
    worker = RolloutWorker(model_dir, "hf", {"max_batch_size": 2}, seed=3)
    out = worker.generate(PROMPTS[:1], PROMPT_IDS[:1], 2, {"max_new_tokens": 4, "seed": 1})
    assert len(out["samples"]) == 2 and out["tokens"] == 8 and out["weights_version"] == 0
    policy = stopping_policy(model_dir, end_id, 2.0).state_dict()
    digest = worker.load_weights(policy, verify=False)  # a worker's first load is hashed regardless
    assert worker.weights_version == 1 and worker.weights_digest() == digest == state_digest(policy)
    other = stopping_policy(model_dir, end_id, 0.5).state_dict()
    assert worker.load_weights(other, version=4, verify=False) == "unverified:4"  # loaded, not hashed
    assert worker.weights_digest() == state_digest(other) == worker.load_weights(other, version=5)
