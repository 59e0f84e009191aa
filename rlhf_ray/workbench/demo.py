"""A small workbench input from the simulated world, written in the layouts `rlhf-ray ingest` and
`rlhf-ray curate` write, without Ray: for tests, the benchmark and `rlhf-ray workbench --demo`.

Rows get what ingest would give them (keyed pseudonyms for annotator and session ids; the world plants no
PII here), then `rlhf_ray.annotation.curate` runs in-process, exactly as the curate job calls it.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa

from rlhf_ray.annotation.active import ActiveSettings
from rlhf_ray.annotation.curate import CurateSettings, curate
from rlhf_ray.contracts import SIGNAL_SCHEMAS, SignalType
from rlhf_ray.dataplane.versions import LATEST, curated_folder, manifest_path
from rlhf_ray.governance import Pseudonymizer
from rlhf_ray.inputs.world import ShardConfig, WorldConfig, shard_rows
from rlhf_ray.storage import StorageRoot

DEMO_ROWS = {"pairwise": 600, "ranking": 150, "rating": 300}


@dataclass(frozen=True)
class DemoInputs:
    curated: str
    dataset: str
    gold: str


def write_demo_inputs(root: str | Path, pseudonymizer: Pseudonymizer, num_prompts: int = 120, seed: int = 0,
                      rows: dict[str, int] | None = None, active_budget: int = 60) -> DemoInputs:
    base = Path(root)
    world = WorldConfig(num_prompts=num_prompts)
    clean = ShardConfig(rows=1, malformed_fraction=0.0, duplicate_fraction=0.0, pii_fraction=0.0, gold_fraction=0.3)
    tables, gold = {}, []
    for index, (signal_type, count) in enumerate((rows or DEMO_ROWS).items()):
        built, gold_items = shard_rows(world, seed, clean, signal_type, index, count)
        for row in built:
            row["actor_id"] = pseudonymizer.pseudonym(row["actor_id"])
            if row.get("session_id"):
                row["session_id"] = pseudonymizer.pseudonymize_session(row["session_id"])
        tables[signal_type] = pa.Table.from_pylist(built, schema=SIGNAL_SCHEMAS[SignalType(signal_type)])
        gold += gold_items
    version, pairs_version = f"ds-demo{seed}", f"pairs-demo{seed}"
    dataset = StorageRoot.from_uri(base / "dataset")
    for signal_type, table in tables.items():
        dataset.write_parquet_atomic(table, curated_folder(version, signal_type), "part-00000.parquet")
    dataset.write_bytes_atomic(json.dumps({"version": version, "dataset_id": version}).encode(),
                               manifest_path(version))
    dataset.write_bytes_atomic(version.encode(), LATEST)
    answers = {g["item_id"]: str(g["answer"][0]) if isinstance(g["answer"], list) else g["answer"] for g in gold}
    result = curate(tables, answers, CurateSettings(active=ActiveSettings(budget=active_budget)))
    out = StorageRoot.from_uri(base / "curated")
    out.write_parquet_atomic(result.adjudication, "adjudication", f"{pairs_version}.parquet")
    out.write_parquet_atomic(result.active, "active_learning", f"{pairs_version}.parquet")
    out.write_parquet_atomic(result.annotators, "annotators.parquet")
    report = {**result.report, "dataset_version": version, "pairs_version": pairs_version}
    out.write_bytes_atomic(json.dumps(report, sort_keys=True, default=str).encode(), "agreement.json")
    gold_path = base / "gold" / "gold_items.jsonl"
    gold_path.parent.mkdir(parents=True, exist_ok=True)
    gold_path.write_text("".join(json.dumps(g) + "\n" for g in gold))
    return DemoInputs(str(base / "curated"), str(base / "dataset"), str(gold_path))


def scripted_answer(task: dict[str, Any], rng: random.Random | None = None, choice: str | None = None,
                    rationale: str = "scripted: the chosen answer covers more required facts") -> dict[str, Any]:
    """A valid label for a task as `next_task` shows it: what a scripted annotator (benchmark, tests) submits.
    Random with `rng`, else fixed (choice "a", the shown order, all 4s); `choice` forces the pairwise choice."""
    kind = task["task_type"]
    body: dict[str, Any] = {"rationale": rationale}
    if kind == "pairwise":
        body["choice"] = choice or (rng.choice(["a", "b", "b", "tie"]) if rng else "a")
    elif kind == "ranking":
        order = list(range(len(task["responses"])))
        if rng:
            rng.shuffle(order)
        body["ranking"] = order
    elif kind == "rubric":
        body["scores"] = {c: rng.randint(2, 5) if rng else 4 for c in task["criteria"]}
    else:
        body["edited_response"] = task["responses"][0]["text"] + " contact support for help ."
    return body
