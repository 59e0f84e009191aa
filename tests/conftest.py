"""Shared fixtures: one local Ray cluster for the whole session (ray.init costs seconds)."""

from __future__ import annotations

import os
import shutil

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("WANDB_SILENT", "true")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark `ray` every test that reaches the shared cluster through its fixtures (`fixturenames` holds them all,
    those of its fixtures included), so that `-m "not ray"` (the unit phase of `make test`, run under
    pytest-xdist) never starts a Ray of its own in a worker."""
    for item in items:
        if "ray_cluster" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.ray)


@pytest.fixture(scope="session")
def ray_cluster():
    import ray

    if not ray.is_initialized():
        ray.init(num_cpus=2, include_dashboard=False, namespace="rlhf-ray-tests", log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def serve_session(ray_cluster) -> int:
    """One Ray Serve (controller and HTTP proxy on loopback) for every test module that serves: starting it
    costs ~20 s. Yields its port."""
    from ray import serve

    from rlhf_ray.roles.learner import free_port

    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    yield port
    serve.shutdown()


@pytest.fixture(scope="module")
def serve_instance(serve_session: int) -> int:
    """The shared Serve for one module; the applications the module deployed are deleted at its end, so the
    next module starts with Serve's CPUs free."""
    from ray import serve

    yield serve_session
    for name in list(serve.status().applications):
        serve.delete(name)


WORLD_SIZE = 200


@pytest.fixture(scope="session")
def world_assets(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """A tiny base model and curated pairs (pairwise + ranking + rubric/ratings, annotator noise included)
    from a 200-prompt world, written as a pairs folder; shared by every training test."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from rlhf_ray.annotation.curate import CurateSettings, curate
    from rlhf_ray.contracts import SIGNAL_SCHEMAS, SignalType
    from rlhf_ray.models import init_model
    from rlhf_ray.sim import ShardConfig, ShardSpec, World, WorldConfig
    from rlhf_ray.sim.shards import build_shard_rows

    root = tmp_path_factory.mktemp("world-assets")
    world = World(WorldConfig(num_prompts=WORLD_SIZE), 0)
    model = init_model(world.corpus(), root / "model", "tiny", seed=0)
    clean = ShardConfig(rows=100, malformed_fraction=0.0, duplicate_fraction=0.0, pii_fraction=0.0)
    tables = {}
    for signal_type, rows in (("pairwise", 2400), ("ranking", 600), ("rating", 1200)):
        built, _ = build_shard_rows(world, clean, ShardSpec(signal_type, 0, rows, "parquet"))
        tables[signal_type] = pa.Table.from_pylist(built, schema=SIGNAL_SCHEMAS[SignalType(signal_type)])
    (root / "pairs").mkdir()
    pq.write_table(curate(tables, {}, CurateSettings()).pairs, root / "pairs" / "part-0.parquet")
    return {"model": str(model.path), "pairs": str(root / "pairs"), "root": str(root)}


@pytest.fixture(scope="session")
def trained_policy(ray_cluster, world_assets: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> dict:
    """An SFT policy and a multi-objective reward model on its backbone: the starting point of RL tests."""
    from jobs.sft import SFTConfig, train
    from jobs.train_rm import TrainRMConfig, train_reward_model
    from rlhf_ray.config import LineageConfig, RayConfig, WandbConfig
    from rlhf_ray.sim import WorldConfig

    root = tmp_path_factory.mktemp("trained-policy")
    common = {"world": WorldConfig(num_prompts=WORLD_SIZE), "ray": RayConfig(num_cpus=2),
              "wandb": WandbConfig(mode="disabled"), "lineage": LineageConfig(root=str(root / "lineage"))}
    sft = train(SFTConfig(model_path=world_assets["model"], output_dir=str(root / "sft"), references_per_prompt=4,
                          train={"epochs": 8, "batch_size": 16, "lr": 2e-3}, **common))
    rm = train_reward_model(TrainRMConfig(
        model_path=sft["model_dir"], pairs=world_assets["pairs"], output_dir=str(root / "rm"),
        train={"epochs": 2, "batch_size": 16, "lr": 1e-3,
               "objectives": {"preference": 1.0, "correctness": 0.5, "concision": 0.5}}, **common))
    return {"sft": sft, "rm": rm, "root": str(root)}


@pytest.fixture(scope="session")
def chromium_executable() -> str:
    """Headless Chromium for the browser tests: $CHROMIUM, else the first one on PATH. Its absence fails the
    test in CI (`.ci/run` installs Debian's `chromium`) and skips it elsewhere."""
    candidates = [os.environ["CHROMIUM"]] if os.environ.get("CHROMIUM") else ["chromium", "chromium-browser",
                                                                              "google-chrome"]
    for name in candidates:
        if found := shutil.which(name):
            return found
    message = f"headless Chromium not found (tried {candidates}); apt-get install chromium"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)
