"""Reward model and DPO on Ray Train, trained on curated pairs and judged against the world's hidden truth."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from jobs.dpo import DPOConfig, train_dpo
from jobs.train_rm import RewardModelError, TrainRMConfig, train_reward_model
from rlhf_ray.config import LineageConfig, RayConfig, WandbConfig
from rlhf_ray.evaluation.reward_model import length_correlation_at_equal_utility, reward_model_report
from rlhf_ray.models import load_tokenizer
from rlhf_ray.sim import WorldConfig
from rlhf_ray.training.encoding import encode_chat
from rlhf_ray.training.reward_model import RewardModel

WORLD = WorldConfig(num_prompts=200)


def _common(out: Path) -> dict:
    return {"output_dir": str(out), "world": WORLD, "ray": RayConfig(num_cpus=2), "wandb": WandbConfig(mode="disabled"),
            "lineage": LineageConfig(root=str(out / "lineage"))}


def test_encode_chat_masks_only_the_response(world_assets: dict[str, str]) -> None:
    tokenizer = load_tokenizer(world_assets["model"])
    batch = encode_chat(tokenizer, ["where is my book package ?", "hi"], ["use the tracking number .", "ok"], 64)
    assert batch["input_ids"].shape == batch["response_mask"].shape
    first = batch["input_ids"][0][batch["response_mask"][0].bool()]
    assert tokenizer.decode(first).startswith("use the tracking number .")
    assert (batch["response_mask"] <= batch["attention_mask"]).all()


@pytest.mark.ray
@pytest.mark.slow
def test_multi_objective_reward_model_beats_chance_without_length_bias(trained_policy: dict) -> None:
    """The session's RM: preference + correctness + concision heads on the SFT backbone (see conftest)."""
    result = trained_policy["rm"]
    objectives = {"preference": 1.0, "correctness": 0.5, "concision": 0.5}
    assert result["heldout_accuracy"] > 0.8, result
    assert 0 <= result["heldout_ece"] < 0.3
    assert result["heldout_accuracy_when_longer_is_worse"] > 0.75
    assert result["heldout_length_correlation_at_equal_utility"] < 0.3
    assert set(objectives) <= {k.removeprefix("heldout_accuracy/") for k in result if "accuracy/" in k}
    reloaded = RewardModel.load(result["reward_model_dir"])
    settings = json.loads((Path(result["reward_model_dir"]) / "reward_config.json").read_text())
    assert settings["std"] > 0 and reloaded.std == settings["std"]
    assert settings["objectives"] == objectives and reloaded.objectives == tuple(objectives)
    evaluation = json.loads((Path(result["reward_model_dir"]).parent / "evaluation.json").read_text())
    assert evaluation["accuracy"] == result["heldout_accuracy"]


@pytest.mark.ray
@pytest.mark.slow
def test_dpo_learns_preferences_from_a_frozen_reference(ray_cluster, world_assets: dict[str, str],
                                                        tmp_path: Path) -> None:
    result = train_dpo(DPOConfig(model_path=world_assets["model"], pairs=world_assets["pairs"],
                                 train={"epochs": 1, "batch_size": 16, "lr": 5e-4}, **_common(tmp_path)))
    assert result["heldout_reward_accuracy"] > 0.65, result
    assert Path(result["policy_dir"], "config.json").exists()


def test_curated_pairs_carry_criterion_objectives(world_assets: dict[str, str]) -> None:
    pairs = pq.read_table(world_assets["pairs"])
    objectives = set(pairs.column("objective").to_pylist())
    assert {"preference", "safety", "concision", "helpfulness", "correctness"} <= objectives
    assert len(set(pairs.column("pair_id").to_pylist())) == pairs.num_rows


def test_unknown_objective_is_a_config_error() -> None:
    with pytest.raises(ValueError, match=r"unknown objective.*verbosity"):
        TrainRMConfig(train={"objectives": {"preference": 1.0, "verbosity": 1.0}})
    with pytest.raises(ValueError, match="positive sum"):
        TrainRMConfig(train={"objectives": {"preference": 0.0}})


def test_objective_heads_combine_with_their_weights_and_survive_save(tmp_path: Path) -> None:
    from transformers import LlamaConfig, LlamaModel

    torch.manual_seed(0)
    backbone = LlamaModel(LlamaConfig(vocab_size=32, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                      intermediate_size=32))
    model = RewardModel(backbone, {"preference": 1.0, "safety": 0.5}).eval()
    ids, mask = torch.tensor([[5, 6, 7], [8, 9, 10]]), torch.ones(2, 3, dtype=torch.long)
    per = model(ids, mask, per_objective=True)
    assert per.shape == (2, 2)
    assert torch.allclose(model(ids, mask), per[:, 0] + 0.5 * per[:, 1])
    model.save_pretrained(tmp_path)
    reloaded = RewardModel.load(tmp_path).eval()
    assert reloaded.objectives == ("preference", "safety")
    assert torch.allclose(reloaded(ids, mask), model(ids, mask), atol=1e-6)


def test_missing_inputs_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(RewardModelError, match="--pairs"):
        train_reward_model(TrainRMConfig(model_path=str(tmp_path)))


def test_reward_model_report_on_known_cases() -> None:
    r_chosen, r_rejected = np.array([2.0, 1.0, -1.0, 0.5]), np.array([1.0, 2.0, -2.0, 0.0])
    report = reward_model_report(r_chosen, r_rejected, np.array([5, 9, 3, 4.0]), np.array([9, 5, 8, 4.0]),
                                 np.ones(4), np.zeros(4))
    assert report["accuracy"] == 0.75
    assert report["pairs_longer_is_worse"] == 2 and report["accuracy_when_longer_is_worse"] == 1.0
    rng = np.random.default_rng(0)
    lengths = rng.integers(5, 50, 400).astype(float)
    utilities = np.repeat([0.0, 1.0], 200)
    assert length_correlation_at_equal_utility(lengths * 0.1 + utilities, lengths, utilities) > 0.99
    assert abs(length_correlation_at_equal_utility(rng.normal(size=400) + utilities, lengths, utilities)) < 0.15


def test_reward_model_scores_the_last_real_token() -> None:
    from transformers import LlamaConfig, LlamaModel

    torch.manual_seed(0)
    model = RewardModel(LlamaModel(LlamaConfig(vocab_size=32, hidden_size=16, num_hidden_layers=1,
                                               num_attention_heads=2, intermediate_size=32)))
    ids = torch.tensor([[5, 6, 7, 0, 0], [5, 6, 7, 8, 9]])
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])
    padded = model(ids, mask)[0]
    alone = model(ids[:1, :3], mask[:1, :3])[0]
    assert torch.allclose(padded, alone, atol=1e-5)
