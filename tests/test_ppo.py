"""PPO on separate Ray actors: experience maths, the learner group, weight sync, fault tolerance, resume."""

from __future__ import annotations

import json
import random
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import ray
import torch

from actors.ppo_config import PPOError
from actors.ppo_controller import PPOController, gather_timed
from jobs.ppo import PPOConfig, controller_for
from rlhf_ray.algos.advantages import AdvantageSettings
from rlhf_ray.config import LineageConfig, RayConfig, WandbConfig
from rlhf_ray.models import init_model
from rlhf_ray.roles.learner import trim
from rlhf_ray.rollout.prompts import PromptSampler
from rlhf_ray.rollout.weights import state_digest
from rlhf_ray.sim import World, WorldConfig
from rlhf_ray.telemetry import MetricsSink
from rlhf_ray.training.experience import build_experience, shard_rows
from rlhf_ray.training.ledger import SampleLedger

WORLD = WorldConfig(num_prompts=200)


def _sequences() -> dict[str, torch.Tensor]:
    """Two rows: prompt [1, 2] + response [3, 4, 5], and prompt [1] + response [6, 7] then padding."""
    ids = torch.tensor([[1, 2, 3, 4, 5], [1, 6, 7, 0, 0]])
    attention = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]])
    response = torch.tensor([[0, 0, 1, 1, 1], [0, 1, 1, 0, 0]])
    return {"input_ids": ids, "attention_mask": attention, "response_mask": response}


def test_kl_goes_where_the_estimator_expects_it() -> None:
    sequences = _sequences()
    old = torch.full((2, 4), -1.0)
    ref = torch.full((2, 4), -1.5)  # k1 KL per token = old − ref = 0.5
    scores = torch.tensor([1.0, 0.0])
    settings = AdvantageSettings(gamma=1.0, lam=1.0, group_size=2, whiten=False)
    values = torch.zeros(2, 4)
    gae, stats = build_experience(sequences, old, ref, values, scores, "gae", settings, 0.1, "k1")
    # row 0: 3 response tokens, rewards −0.05 each and +1 at the end → returns from the first token: 0.85
    assert stats["kl"] == pytest.approx((3 * 0.5 + 2 * 0.5) / 2)
    assert gae["returns"][0, 0] == pytest.approx(1.0 - 3 * 0.05)
    assert gae["returns"][1, 0] == pytest.approx(0.0 - 2 * 0.05)
    assert gae["old_logprobs"].shape == (2, 3) and gae["ref_logprobs"][0, 0] == -1.5
    grpo, _ = build_experience(sequences, old, ref, None, scores, "grpo", settings, 0.1, "k1")
    grpo_free, _ = build_experience(sequences, old, old, None, scores, "grpo", settings, 0.1, "k1")
    assert torch.equal(grpo["advantages"], grpo_free["advantages"])  # GRPO's KL is in the loss, not the reward
    rloo, _ = build_experience(sequences, old, ref, None, scores, "rloo", settings, 0.1, "k1")
    # RLOO scores become s − β·ΣKL = [1 − 0.15, 0 − 0.10]; with G = 2, A_0 = s_0 − s_1 = 0.95
    assert rloo["advantages"][0, 0] == pytest.approx(0.95)
    assert rloo["advantages"][1, 0] == pytest.approx(-0.95)
    assert "returns" not in rloo


def test_shards_and_trim_keep_rows_aligned() -> None:
    experience, _ = build_experience(_sequences(), torch.zeros(2, 4), torch.zeros(2, 4), None, torch.tensor([1.0, 0.0]),
                                     "rloo", AdvantageSettings(group_size=2), 0.0, "k1")
    first, second = shard_rows(experience, 2)
    assert first["input_ids"].shape[0] == second["input_ids"].shape[0] == 1
    trimmed = trim(second)
    assert trimmed["input_ids"].shape == (1, 3) and trimmed["advantages"].shape == (1, 2)


def test_config_rejects_inconsistent_settings() -> None:
    with pytest.raises(ValueError, match="samples_per_prompt must be ≥ 2"):
        PPOConfig(advantage={"estimator": "grpo"}, samples_per_prompt=1)
    with pytest.raises(ValueError, match="cannot fill"):
        PPOConfig(prompts_per_iteration=2, learner={"num_workers": 2, "num_minibatches": 2})
    with pytest.raises(PPOError, match="--model"):
        controller_for(PPOConfig(), MetricsSink("ppo", WandbConfig(mode="disabled"), "/tmp"))


@pytest.fixture(scope="module")
def policy(tmp_path_factory: pytest.TempPathFactory) -> str:
    return str(init_model(World(WORLD, 0).corpus(), tmp_path_factory.mktemp("ppo") / "model", "tiny", seed=0).path)


def _config(policy: str, out: Path, **overrides) -> PPOConfig:
    fields = {"model_path": policy, "output_dir": str(out), "world": WORLD, "iterations": 2,
              "prompts_per_iteration": 8, "samples_per_prompt": 2, "eval_every": 2, "eval_prompts": 8,
              "checkpoint_every": 1, "rollout": {"max_new_tokens": 12},
              "learner": {"num_workers": 2, "num_cpus": 0.2, "entropy_coef": 0.01, "lr": 1e-3},
              "reward": {"rule_keywords": ["order", "refund", "tracking", "password"]},
              "ray": RayConfig(num_cpus=2), "wandb": WandbConfig(mode="disabled"),
              "lineage": LineageConfig(root=str(out / "lineage"))}
    return PPOConfig(**{**fields, **overrides})


@pytest.mark.ray
def test_prompt_batches_are_a_function_of_the_iteration(ray_cluster) -> None:
    rows = [{"prompt_id": str(i), "prompt": f"p{i}"} for i in range(10)]
    sampler = PromptSampler(rows, 4, seed=3)
    batches = [sampler.batch(i) for i in range(4)]
    assert batches[2] != batches[0]  # epoch 1 is reshuffled
    assert PromptSampler(rows, 4, seed=3).batch(3) == batches[3]
    assert PromptSampler(rows, 4, seed=4).batch(0) != batches[0]
    epoch = [row["prompt_id"] for batch in batches[:2] for row in batch]
    assert len(set(epoch)) == 8  # an epoch draws each prompt at most once
    _, seconds = gather_timed({"slow": ray.remote(lambda: time.sleep(0.3)).remote()})
    assert seconds["slow"] >= 0.3


@pytest.mark.ray
def test_learner_group_syncs_weights_and_survives_a_dead_rollout_worker(ray_cluster, policy: str,
                                                                       tmp_path: Path) -> None:
    controller = controller_for(_config(policy, tmp_path), MetricsSink("ppo", WandbConfig(mode="disabled"),
                                                                      str(tmp_path)))
    try:
        before = ray.get(controller.rollout.actors[0].weights_digest.remote())
        controller.step()
        learner_states = [ray.get(ray.get(actor.publish.remote())) for actor in controller.learners.actors]
        digests = {state_digest(state) for state in learner_states}
        assert len(digests) == 1, "DDP ranks diverged"
        rollout = set(ray.get(controller.rollout.call("weights_digest")))
        assert rollout == digests and before not in rollout

        victim = controller.rollout.actors[1]
        pid = ray.get(victim.ready.remote())["pid"]
        ray.kill(victim, no_restart=False)
        metrics = controller.step()
        assert metrics["step_retries"] >= 1
        assert ray.get(victim.ready.remote())["pid"] != pid
        assert len(set(ray.get(controller.rollout.call("weights_digest")))) == 1
    finally:
        controller.shutdown()


def _train_with_a_random_kill(controller: PPOController, out: Path, kill: Callable[[], None]) -> dict[str, Any]:
    """Run `controller.train()` while a thread calls `kill` at a random moment (seeded, the seed in every failure
    message) after the first checkpoint; returns the summary with the seed and delay."""
    seed = random.randrange(1 << 16)
    delay = random.Random(seed).uniform(0.0, 1.0)  # the iterations after the first checkpoint take longer

    def kill_after_the_first_checkpoint() -> None:
        while not (out / "checkpoints" / "latest").exists():
            time.sleep(0.05)
        time.sleep(delay)
        kill()

    killer = threading.Thread(target=kill_after_the_first_checkpoint, daemon=True)
    killer.start()
    result = controller.train()
    killer.join(timeout=5)
    assert not killer.is_alive(), (seed, delay)
    return {**result, "drill": (seed, delay)}


def _each_iteration_logged_once(out: Path, iterations: int, drill: Any) -> None:
    history = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [row["iteration"] for row in history] == list(range(iterations + 1)), drill
    # A save the kill interrupted can only have left a hidden staging folder, never a visible partial checkpoint.
    assert all(Path(folder, "controller.json").exists() for folder in (out / "checkpoints").glob("iter-*")), drill


def _each_draw_trained_once(result: dict[str, Any], iterations: int, prompts: int) -> None:
    """The ledger's accounting after a drill: every prompt drawn went through exactly one optimizer step (the
    ledger raises on a second), `prompts` of them in each iteration, none dropped or left in flight."""
    drill = result.get("drill")
    draws = iterations * prompts
    assert result["ledger"] == {"drawn": draws, "trained": draws, "dropped": {}, "in_flight": 0, "replayed": 0}, \
        (drill, result["ledger"])
    ledger = SampleLedger.load(str(Path(result["checkpoint"], "ledger.json")))
    per_iteration = Counter(entry["iteration"] for entry in ledger.entries.values())
    assert per_iteration == dict.fromkeys(range(iterations), prompts), (drill, per_iteration)


@pytest.mark.ray
@pytest.mark.parametrize("victim_rank", [0, 1])
def test_a_killed_learner_rank_is_rebuilt_from_the_checkpoint_and_no_iteration_is_logged_twice(
        ray_cluster, policy: str, tmp_path: Path, victim_rank: int) -> None:
    """Fault drill: kill a DDP learner rank at a random point after the first checkpoint, while the controller
    trains (GAE, so a critic group too). The controller rebuilds the policy groups from that checkpoint, replays
    the iterations since, and finishes; the history has each iteration once and every actor agrees on the
    weights."""
    controller = controller_for(_config(policy, tmp_path, iterations=8, eval_every=8, checkpoint_every=2),
                               MetricsSink("ppo", WandbConfig(mode="disabled"), str(tmp_path)))
    victim = controller.learners.actors[victim_rank]
    try:
        result = _train_with_a_random_kill(controller, tmp_path, lambda: ray.kill(victim, no_restart=True))
        assert result["iterations"] == 8 and result["learner_recoveries"] == 1, result
        assert victim not in controller.learners.actors
        learner_digests = {state_digest(ray.get(ray.get(actor.publish.remote())))
                           for actor in controller.learners.actors}
        assert learner_digests == set(ray.get(controller.rollout.call("weights_digest")))
    finally:
        controller.shutdown()
    _each_iteration_logged_once(tmp_path, 8, result["drill"])
    _each_draw_trained_once(result, 8, 8)
    assert json.loads(Path(result["checkpoint"], "controller.json").read_text())["learner_recoveries"] == 1


@pytest.mark.ray
def test_a_rollout_worker_killed_at_a_random_point_is_restarted_and_resynced(ray_cluster, policy: str,
                                                                            tmp_path: Path) -> None:
    """Fault drill: kill a rollout worker (Ray restarts it) at a random point after the first checkpoint —
    mid-generation, mid-sync or between calls. Whichever, the controller notices (a failed call, or a restarted
    worker answering with its checkpoint's weights), re-syncs and retries, and the run finishes in step."""
    controller = controller_for(_config(policy, tmp_path, iterations=8, eval_every=8, checkpoint_every=2,
                                       advantage={"estimator": "grpo"}, learner={"num_workers": 1}),
                               MetricsSink("ppo", WandbConfig(mode="disabled"), str(tmp_path)))
    victim = controller.rollout.actors[1]
    try:
        pid = ray.get(victim.ready.remote())["pid"]
        result = _train_with_a_random_kill(controller, tmp_path, lambda: ray.kill(victim, no_restart=False))
        assert result["iterations"] == 8 and result["step_retries"] >= 1, result
        assert ray.get(victim.ready.remote())["pid"] != pid
        learner = state_digest(ray.get(ray.get(controller.learners.actors[0].publish.remote())))
        assert set(ray.get(controller.rollout.call("weights_digest"))) == {learner}
    finally:
        controller.shutdown()
    _each_iteration_logged_once(tmp_path, 8, result["drill"])
    _each_draw_trained_once(result, 8, 8)


@pytest.mark.ray
def test_resume_continues_the_iteration_count_and_matches_an_uninterrupted_run(ray_cluster, policy: str,
                                                                              tmp_path: Path) -> None:
    """GRPO with an adaptive β on its in-loss KL: 2 iterations, then resumed to 3, train exactly as 3 in one go —
    the same β reaches the loss at every update (not the one the learner started with) and the same weights come
    out."""
    from safetensors.torch import load_file

    from jobs.ppo import run

    grpo = {"advantage": {"estimator": "grpo"}, "learner": {"num_workers": 1},
            "kl": {"coef": 0.1, "target": 0.01, "horizon": 16}}
    first = run(_config(policy, tmp_path / "resumed", **grpo))
    assert first["iterations"] == 2 and Path(first["policy_dir"], "config.json").exists()
    resumed = run(_config(policy, tmp_path / "resumed", iterations=3, resume=True, **grpo))
    assert resumed["iterations"] == 3 and resumed["iterations_this_run"] == 1
    _each_draw_trained_once(resumed, 3, 8)  # the first run's draws came back with its checkpoint's ledger
    history = [json.loads(line) for line in (tmp_path / "resumed" / "metrics.jsonl").read_text().splitlines()]
    assert [h["iteration"] for h in history] == [0, 1, 2, 3]  # the start's held-out figures, then each iteration
    assert "eval/true_utility" in history[0] and "reward/rm" not in history[0]
    assert {"timing/generate", "timing/reward", "timing/reference", "timing/policy_update",
            "timing/sync"} <= set(history[-1])

    whole = run(_config(policy, tmp_path / "whole", iterations=3, **grpo))
    uninterrupted = [json.loads(line) for line in (tmp_path / "whole" / "metrics.jsonl").read_text().splitlines()]
    betas = [h["kl_coef"] for h in uninterrupted[1:]]
    assert len(set(betas)) == 3, betas  # the adaptive controller moved β every iteration
    assert [h["kl_coef"] for h in history[1:]] == betas
    for key in ("policy/loss", "policy/kl_loss", "reward/total", "kl"):
        assert [h[key] for h in history[1:]] == pytest.approx([h[key] for h in uninterrupted[1:]], rel=1e-5), key
    weights = [load_file(Path(run["policy_dir"], "model.safetensors")) for run in (resumed, whole)]
    assert weights[0].keys() == weights[1].keys()
    assert all(torch.allclose(weights[0][k], weights[1][k], atol=1e-6) for k in weights[0])


@pytest.mark.ray
def test_deepspeed_zero1_learner_group_trains_on_cpu_on_a_users_prompt_files(ray_cluster, policy: str,
                                                                             tmp_path: Path) -> None:
    """Two learner ranks with a DeepSpeed ZeRO-1 engine (torch AdamW on CPU) step and checkpoint their shards; the
    prompts come from files, not the world, so no oracle judges (no `true_utility` anywhere)."""
    from jobs.ppo import run

    world = World(WORLD, 0)
    files = {}
    for split in ("train", "validation"):
        files[split] = tmp_path / f"{split}.jsonl"
        files[split].write_text("".join(json.dumps({"prompt": p.text}) + "\n" for p in world.split(split)))
    result = run(_config(policy, tmp_path / "run", iterations=1, advantage={"estimator": "rloo"},
                         prompts={name: str(path) for name, path in files.items()},
                         learner={"num_workers": 2, "num_cpus": 0.2, "entropy_coef": 0.01,
                                  "deepspeed": {"zero_stage": 1}}))
    shards = sorted(p.name for p in Path(result["checkpoint"], "policy").rglob("*optim_states.pt"))
    assert len(shards) == 2, shards
    assert result["policy/entropy"] > 0
    assert "end/reward" in result and not [key for key in result if "true_utility" in key], result


@pytest.mark.ray
@pytest.mark.slow
@pytest.mark.parametrize("estimator", ["gae", "grpo"])
def test_rl_raises_reward_and_true_utility_over_the_sft_policy(trained_policy: dict, estimator: str,
                                                               tmp_path: Path) -> None:
    """On the world: the RM reward and the held-out true utility (simulation only, never a training signal) rise
    over the SFT policy, with the KL to it bounded."""
    from jobs.ppo import run

    result = run(_config(
        trained_policy["sft"]["model_dir"], tmp_path, iterations=20, eval_every=10,
        prompts_per_iteration=8, samples_per_prompt=4,
        advantage={"estimator": estimator}, rollout={"max_new_tokens": 48}, learner={"lr": 1e-4},
        reward={"model_path": trained_policy["rm"]["reward_model_dir"]}, eval_prompts=32, checkpoint_every=20))
    assert result["end/reward"] > result["start/reward"] + 0.2, result
    # Validation prompts ask (intent, item) pairs and phrasings train never saw, so the gain is smaller than on the
    # old in-sample split (GAE measured +0.088, GRPO above +0.1); a learner that does not learn stays near 0.
    assert result["end/true_utility"] > result["start/true_utility"] + 0.05, result
    assert result["kl"] < 3.0, result
