"""SFT on Ray Train: it learns, 2 DDP workers agree with 1, and a resumed run continues its step count."""

from __future__ import annotations

from pathlib import Path

import pytest

from jobs.sft import SFTConfig, SFTError, train
from rlhf_ray.config import LineageConfig, RayConfig, WandbConfig
from rlhf_ray.lineage import LineageRegistry
from rlhf_ray.models import ModelNotFoundError, init_model, load_causal_lm
from rlhf_ray.sim import World, WorldConfig

pytestmark = [pytest.mark.ray, pytest.mark.slow]
WORLD = WorldConfig(num_prompts=160)


@pytest.fixture(scope="module")
def base_model(tmp_path_factory: pytest.TempPathFactory) -> str:
    out = tmp_path_factory.mktemp("base") / "model"
    return str(init_model(World(WORLD, 0).corpus(), out, "tiny", seed=0).path)


def _config(base_model: str, out: Path, **overrides) -> SFTConfig:
    fields = {"model_path": base_model, "output_dir": str(out), "world": WORLD, "ray": RayConfig(num_cpus=2),
              "wandb": WandbConfig(mode="disabled"), "lineage": LineageConfig(root=str(out / "lineage")),
              "train": {"epochs": 2, "batch_size": 16}}
    return SFTConfig(**{**fields, **overrides})


@pytest.fixture(scope="module")
def single(ray_cluster, base_model: str, tmp_path_factory: pytest.TempPathFactory) -> dict:
    return train(_config(base_model, tmp_path_factory.mktemp("sft1")))


def test_sft_lowers_heldout_loss_and_writes_a_loadable_model(single: dict) -> None:
    assert single["heldout_loss"] < 0.6 * single["heldout_loss_before"]
    assert load_causal_lm(single["model_dir"]).num_parameters() > 0
    registry = LineageRegistry(str(Path(single["model_dir"]).parent / "lineage"))
    assert [a.kind for a in registry.ancestors(single["sft_model_id"])] == ["checkpoint"]


def test_two_ddp_workers_match_one_worker(single: dict, base_model: str, tmp_path: Path) -> None:
    """Half the batch on each of two ranks is the same global batch: the outcome must agree."""
    double = train(_config(base_model, tmp_path, scaling={"num_workers": 2, "cpus_per_worker": 1.0},
                           train={"epochs": 2, "batch_size": 8}))
    assert double["num_workers"] == 2
    assert double["steps"] == pytest.approx(single["steps"], abs=2)
    assert double["heldout_loss"] == pytest.approx(single["heldout_loss"], rel=0.15)


def test_resume_continues_the_step_count(single: dict, base_model: str, tmp_path: Path) -> None:
    first = train(_config(base_model, tmp_path / "first", train={"epochs": 1, "batch_size": 16}))
    resumed = train(_config(base_model, tmp_path / "resumed", resume_from=first["checkpoint"],
                            train={"epochs": 2, "batch_size": 16}))
    assert resumed["steps"] == 2 * first["steps"] == single["steps"]
    assert resumed["epochs"] == 2


def test_deepspeed_zero1_on_two_cpu_workers_trains_and_resumes(single: dict, base_model: str,
                                                                 tmp_path: Path) -> None:
    """ZeRO-1 partitions AdamW state across the two ranks: each saves its shard, and a resumed run loads both."""
    deepspeed = {"zero_stage": 1}
    scaling = {"num_workers": 2, "cpus_per_worker": 1.0}
    first = train(_config(base_model, tmp_path / "first", scaling=scaling,
                          train={"epochs": 1, "batch_size": 8, "deepspeed": deepspeed}))
    shards = sorted(p.name for p in Path(first["checkpoint"]).rglob("*optim_states.pt"))
    assert len(shards) == 2, shards
    resumed = train(_config(base_model, tmp_path / "resumed", scaling=scaling, resume_from=first["checkpoint"],
                            train={"epochs": 2, "batch_size": 8, "deepspeed": deepspeed}))
    assert resumed["steps"] == 2 * first["steps"]
    assert resumed["heldout_loss"] == pytest.approx(single["heldout_loss"], rel=0.15)


def test_missing_or_hub_model_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(SFTError, match="--model"):
        train(SFTConfig(output_dir=str(tmp_path)))
    with pytest.raises(ModelNotFoundError, match="gpt2"):
        train(SFTConfig(model_path="gpt2", output_dir=str(tmp_path)))
