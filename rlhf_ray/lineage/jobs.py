"""Where a job records lineage, and the artifact a model directory handed to a job stands for."""

from __future__ import annotations

import os

from rlhf_ray.config import JobConfig
from rlhf_ray.lineage.registry import LineageRegistry
from rlhf_ray.storage import StorageRoot, digest_files


def lineage_root(config: JobConfig, inherited: str | None = None) -> str:
    """Where lineage goes: the configured root, else the root the input was registered in (so one log holds
    the whole chain), else `<output_dir>/lineage`. Local roots are made absolute for manifests."""
    root = config.lineage.root or inherited or f"{config.output_dir.rstrip('/')}/lineage"
    return root if "://" in root else os.path.abspath(root)


def lineage_for(config: JobConfig, inherited: str | None = None) -> LineageRegistry:
    return LineageRegistry(lineage_root(config, inherited))


def directory_digest(path: str) -> str:
    files = StorageRoot.from_uri(path)
    return digest_files(files, files.list_files())


def register_input_checkpoint(registry: LineageRegistry, path: str) -> str:
    """The artifact a model directory handed to a job stands for, the run's parent: the newest model this
    registry already holds with exactly that content (an earlier job's output, so the chain runs through it),
    else a new `checkpoint` artifact (by content)."""
    digest = directory_digest(path)
    produced = [record for record in registry.with_content(digest) if record.kind != "checkpoint"]
    if produced:
        return produced[-1].id
    return registry.register("checkpoint", path, digest, uri=path).id
