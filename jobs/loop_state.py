"""The loop's memory between runs: per iteration and stage, a fingerprint of what the stage ran on and the
figures it produced (and, for ingest, the shard listing it read: an iteration's feedback is what had arrived
when its ingest ran; shards landing later belong to the next iteration). A re-run (after a crash, or to add
an iteration) skips every stage whose fingerprint is unchanged and whose output is still there, so it resumes
at the first incomplete stage. Which policy is the incumbent follows from it too (the last promoted canary).
The state file is replaced atomically after every stage; a stage that died mid-way never recorded a
fingerprint and runs again (the jobs themselves write their outputs to temp paths and rename).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any

from pydantic import BaseModel

from rlhf_ray.lineage.hashing import canonical_json, sha256_hex
from rlhf_ray.storage import StorageRoot

STATE_FILE = "loop_state.json"
SHARD_SUFFIXES = (".parquet", ".jsonl")
# Settings that say how a stage runs (restart after a crash, which Ray, where logs go), not what it computes.
NOT_COMPUTED = ("resume", "ray", "wandb")


def shard_listing(input_dir: str, ignore: Callable[[str], bool] | None = None) -> list[list[Any]]:
    """[relative path, size] of every committed shard under `input_dir`, but those `ignore(relative path)`."""
    root = StorageRoot.from_uri(input_dir)
    return [[root.relative(path), root.fs.get_file_info(path).size]
            for path in root.list_files(suffixes=SHARD_SUFFIXES) if not (ignore and ignore(root.relative(path)))]


def fingerprint(stage_config: BaseModel, upstream: Mapping[str, Any], files: list[list[Any]] | None = None) -> str:
    """sha256 over the stage's resolved config (but `NOT_COMPUTED`), the artifact ids it reads, and — for a stage
    reading a shard folder — the `shard_listing` it reads (new or changed shards change the fingerprint)."""
    payload = {"config": stage_config.model_dump(mode="json", exclude=set(NOT_COMPUTED)), "upstream": dict(upstream),
               "files": files or []}
    return sha256_hex(canonical_json(payload))


class LoopState:
    """`<output_dir>/loop_state.json`: {"iterations": {"1": {stage: {"fingerprint": ..., "figures": ...}}}}."""

    def __init__(self, output_dir: str) -> None:
        self.root = StorageRoot.from_uri(output_dir)
        self.data: dict[str, Any] = (json.loads(self.root.read_bytes(STATE_FILE)) if self.root.exists(STATE_FILE)
                                     else {"iterations": {}})

    def done(self, iteration: int, stage: str, print_: str) -> dict[str, Any] | None:
        """The stage's recorded figures if it already ran on exactly this fingerprint, else None."""
        record = self.data["iterations"].get(str(iteration), {}).get(stage)
        return record["figures"] if record and record["fingerprint"] == print_ else None

    def record(self, iteration: int, stage: str, print_: str, figures: Mapping[str, Any],
               inputs: list[list[Any]] | None = None) -> None:
        """Record a finished stage; `inputs` is the shard listing it read, if it reads shards."""
        record = {"fingerprint": print_, "figures": dict(figures)}
        if inputs is not None:
            record["inputs"] = inputs
        self.data["iterations"].setdefault(str(iteration), {})[stage] = record
        self._save()

    def inputs(self, iteration: int, stage: str) -> list[list[Any]] | None:
        """The shard listing the stage read when it last ran in `iteration` (None: not run, or reads no shards)."""
        record = self.data["iterations"].get(str(iteration), {}).get(stage)
        return record.get("inputs") if record else None

    def stage_figures(self, iteration: int, stage: str) -> dict[str, Any] | None:
        record = self.data["iterations"].get(str(iteration), {}).get(stage)
        return record["figures"] if record else None

    def _save(self) -> None:
        self.root.write_bytes_atomic(json.dumps(self.data, indent=2, sort_keys=True, default=str).encode(),
                                     STATE_FILE)
