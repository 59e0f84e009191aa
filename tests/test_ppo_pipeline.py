"""Pipelined PPO (issue 22): the pipeline modes' config, the rollout's log-probs laid out as the learner's, log-prob
parity at numerical noise on the CPU hf backend, and an async run with a rollout worker killed mid-run whose ledger
accounts for every draw exactly."""

from __future__ import annotations

import json
import random
import threading
import time
from pathlib import Path

import pytest
import ray
import torch

from jobs.ppo import PPOConfig, controller_for
from rlhf_ray.config import WandbConfig
from rlhf_ray.rollout.batch import Sample, pack_samples, response_token_view, rollout_token_logprobs, stale_rows
from rlhf_ray.rollout.prompts import with_draw_keys
from rlhf_ray.rollout.weights import state_digest
from rlhf_ray.telemetry import MetricsSink
from rlhf_ray.training.ledger import SampleLedger
from tests.test_ppo import _config as ppo_config
from tests.test_ppo import policy  # noqa: F401 (module fixture: the tiny policy)


def test_a_prompt_file_that_repeats_a_prompt_gives_each_row_its_own_draw() -> None:
    rows = [{"prompt_id": f"p-{text}", "prompt": text} for text in ("a", "b", "a", "a")]
    assert [row["draw_key"] for row in with_draw_keys(rows)] == ["p-a", "p-b", "p-a#2", "p-a#3"]
    ledger = SampleLedger()
    assert len({ledger.draw(0, row["draw_key"]) for row in with_draw_keys(rows)}) == 4  # no "already drawn"


def test_pipeline_modes_refuse_what_they_cannot_train_right() -> None:
    with pytest.raises(ValueError, match=r"rollout.temperature=1.*top_p=1.*top_k=0; got temperature=0.7"):
        PPOConfig(pipeline={"mode": "async", "max_staleness": 2}, rollout={"temperature": 0.7})
    with pytest.raises(ValueError, match="top_k=5"):
        PPOConfig(pipeline={"mode": "one_step_off"}, rollout={"top_k": 5})
    with pytest.raises(ValueError, match=r"pipeline\.max_staleness=2 with pipeline\.mode='one_step_off'"):
        PPOConfig(pipeline={"mode": "one_step_off", "max_staleness": 2})
    assert PPOConfig(pipeline={"mode": "async", "max_staleness": 3}).pipeline.lookahead() == 3
    assert PPOConfig().pipeline.lookahead() == 0
    with pytest.raises(ValueError, match="mode"):
        PPOConfig(pipeline={"mode": "overlap"})


def test_rollout_logprobs_sit_where_the_learner_puts_token_logprobs() -> None:
    samples = [Sample("a", "p", "r", [1, 2], [3, 4, 5], True, (-0.1, -0.2, -0.3)),
               Sample("b", "p", "r", [1], [6, 7], True, (-0.4, -0.5))]
    sequences = pack_samples(samples, pad_token_id=0)
    placed = rollout_token_logprobs(samples, sequences)
    assert placed.shape == (2, 4)
    view, mask = response_token_view(placed, sequences["response_mask"])
    assert torch.equal(view, torch.tensor([[-0.1, -0.2, -0.3], [-0.4, -0.5, 0.0]]))
    assert mask.tolist() == [[True, True, True], [True, True, False]]
    with pytest.raises(ValueError, match="'b': the rollout reported None log-probs for 2 response tokens"):
        rollout_token_logprobs([samples[0], Sample("b", "p", "r", [1], [6, 7], True)], sequences)
    assert stale_rows([5, 3, 4, 2], iteration=5, max_staleness=2) == [3]


def _config(model: str, out: Path, **overrides) -> PPOConfig:
    """test_ppo's run, smaller: 4 prompts × 2 samples, GRPO on one learner rank, 2 held-out answers at the end."""
    return ppo_config(model, out, **{
        "prompts_per_iteration": 4, "eval_every": 100, "eval_prompts": 2, "eval_samples_per_prompt": 1,
        "rollout": {"max_new_tokens": 8}, "advantage": {"estimator": "grpo"},
        "learner": {"num_workers": 1, "num_cpus": 0.2, "lr": 1e-3}, **overrides})


def _sink(out: Path) -> MetricsSink:
    return MetricsSink("ppo", WandbConfig(mode="disabled"), str(out))


def _history(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.ray
def test_sync_rollout_logprobs_match_the_learners_and_stand_in_for_old_logprobs(
        ray_cluster, policy: str, tmp_path: Path) -> None:  # noqa: F811 (the imported fixture)
    """Sync mode on the CPU hf backend: the log-probs the rollout reports for its tokens equal the learner's
    recomputation to numerical noise, so they are the old log-probs: the learner's forward runs only to check
    parity (logprob_parity_every 2: iteration 0, not 1); every draw trained once, the ledger saved in each
    checkpoint."""
    controller = controller_for(_config(policy, tmp_path, rollout={"max_new_tokens": 8, "logprob_parity_every": 2}),
                                _sink(tmp_path))
    try:
        result = controller.train()
    finally:
        controller.shutdown()
    rows = _history(tmp_path)[1:]
    assert rows[0]["rollout/logprob_diff_max"] < 1e-4 and rows[0]["rollout/logprob_diff_alerts"] == 0, rows[0]
    assert "timing/old_logprobs" in rows[0]
    assert "timing/old_logprobs" not in rows[1] and "rollout/logprob_diff_max" not in rows[1], rows[1]
    assert all(row["pipeline/staleness_0"] == 8 for row in rows)
    assert "policy/is_weight_mean" not in rows[-1]  # no stale sample: the plain PPO loss
    assert result["ledger"] == {"drawn": 8, "trained": 8, "dropped": {}, "in_flight": 0, "replayed": 0}, result
    saved = SampleLedger.load(str(Path(result["checkpoint"], "ledger.json")))
    assert sorted({entry["iteration"] for entry in saved.entries.values()}) == [0, 1]
    assert all(0 <= row[f"idle/{role}"] <= 1 for row in rows for role in ("rollout", "scorer", "reference",
                                                                            "learner"))


@pytest.mark.ray
def test_async_run_with_a_killed_rollout_worker_trains_every_draw_once(
        ray_cluster, policy: str, tmp_path: Path) -> None:  # noqa: F811 (the imported fixture)
    """Async, two batches in flight: samples come one and two policy versions old and are trained with the
    decoupled loss; a rollout worker killed at a random point (Ray restarts it) costs a retry, and the ledger
    still has every draw trained exactly once, with the policy version that generated it. Resumed from the first
    checkpoint, the draws in flight then are replayed."""
    config = _config(policy, tmp_path, iterations=3, checkpoint_every=1,
                     pipeline={"mode": "async", "max_staleness": 2})
    controller = controller_for(config, _sink(tmp_path))
    victim = controller.rollout.actors[1]
    seed = random.randrange(1 << 16)
    delay = random.Random(seed).uniform(0.0, 0.3)  # the two iterations and the final evaluation take longer

    def kill_after_the_first_checkpoint() -> None:
        while not (tmp_path / "checkpoints" / "latest").exists():
            time.sleep(0.05)
        time.sleep(delay)
        ray.kill(victim, no_restart=False)

    killer = threading.Thread(target=kill_after_the_first_checkpoint, daemon=True)
    killer.start()
    try:
        result = controller.train()
        killer.join(timeout=30)
        learner = state_digest(ray.get(ray.get(controller.learners.actors[0].publish.remote())))
        assert set(ray.get(controller.rollout.call("weights_digest"))) == {learner}, (seed, delay)
    finally:
        controller.shutdown()
    # the kill is noticed by a step or by the final evaluation (whose retry no step's metrics show)
    assert controller.step_retries >= 1, (seed, delay)
    assert result["iterations"] == 3, (seed, delay, result)
    assert result["ledger"] == {"drawn": 12, "trained": 12, "dropped": {}, "in_flight": 0, "replayed": 0}, \
        (seed, delay, result["ledger"])
    rows = _history(tmp_path)
    assert [row["iteration"] for row in rows] == [0, 1, 2, 3], (seed, delay)
    # batch 0 fresh; batches 1 and 2 were submitted before update 0 ran (two ahead), unless a retry regenerated them
    assert rows[1]["pipeline/staleness_0"] == 8 and rows[1]["pipeline/staleness_mean"] == 0
    assert sum(row["pipeline/staleness_mean"] for row in rows[2:]) > 0, (seed, delay, rows)
    assert any("policy/is_weight_mean" in row for row in rows[2:]), rows
    ledger = SampleLedger.load(str(Path(result["checkpoint"], "ledger.json")))
    trained = [entry for entry in ledger.entries.values() if entry["state"] == "trained"]
    assert len(trained) == 12 and all(0 <= entry["iteration"] - entry["policy_version"] <= 2 for entry in trained)

    # A driver killed after the first checkpoint, resumed: the two batches then in flight come back with the
    # checkpoint's ledger, are recorded lost_on_restart and drawn again (replayed), and trained once each.
    in_flight = SampleLedger.load(str(tmp_path / "checkpoints" / "iter-000001" / "ledger.json")).summary()
    assert in_flight["trained"] == 4 and in_flight["in_flight"] == 8, in_flight
    (tmp_path / "checkpoints" / "latest").write_text("iter-000001")
    controller = controller_for(config.model_copy(update={"resume": True}), _sink(tmp_path))
    try:
        resumed = controller.train()
    finally:
        controller.shutdown()
    assert resumed["iterations_this_run"] == 2
    assert resumed["ledger"] == {"drawn": 12, "trained": 12, "dropped": {}, "in_flight": 0, "replayed": 8}, resumed
