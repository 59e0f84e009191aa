"""A user's SFT file → conversations to train on, with every bad row reported (line number and reason).

Accepted rows (JSONL, one object a line, or Parquet, one row each):
- OpenAI chat fine-tuning: `{"messages": [{"role": "system"|"user"|"assistant", "content": "..."}, ...]}`, an
  assistant turn's optional `"weight": 0` keeping it out of the loss;
- `{"prompt": "...", "response": "..."}` (with an optional `"system"`).
A bad row (not JSON, no usable fields, an unknown role, empty text, no assistant turn) is skipped and reported;
reasons name fields, never the row's text.
"""

from __future__ import annotations

import json
import os
import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rlhf_ray.training.encoding import as_messages, check_conversation


@dataclass(frozen=True)
class BadRow:
    """A skipped row: its 1-based line (JSONL) or row number (Parquet), and why."""

    line: int
    reason: str


@dataclass
class SFTData:
    """The usable rows as `{"messages": <JSON text>}` (one column type whatever the source) and the bad ones."""

    rows: list[dict[str, str]] = field(default_factory=list)
    bad: list[BadRow] = field(default_factory=list)

    @property
    def input_rows(self) -> int:
        return len(self.rows) + len(self.bad)


def row_messages(row: Any) -> list[dict[str, Any]]:
    """The checked conversation of one row, or ValueError with the reason."""
    if not isinstance(row, dict):
        raise ValueError(f"row is {type(row).__name__}, expected a JSON object")
    if row.get("messages") is not None:
        return check_conversation(row["messages"])
    prompt, response, system = row.get("prompt"), row.get("response"), row.get("system")
    if prompt is None or response is None:
        raise ValueError("row has neither `messages` nor both `prompt` and `response`")
    for name, value in (("prompt", prompt), ("response", response)):
        if not isinstance(value, str) or not value.strip():
            raise ValueError(f"{name} is empty or not text")
    if system is not None and not isinstance(system, str):
        raise ValueError("system is not text")
    return check_conversation([*as_messages(prompt, system), {"role": "assistant", "content": response}])


def _rows(path: Path) -> Iterator[tuple[int, Any]]:
    """(line number, parsed row) pairs; a line that is not JSON yields a ValueError in place of the row."""
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        yield from enumerate(pq.read_table(path).to_pylist(), start=1)
        return
    with path.open(encoding="utf-8") as stream:
        for number, line in enumerate(stream, start=1):
            if not line.strip():
                continue
            try:
                yield number, json.loads(line)
            except json.JSONDecodeError as error:
                yield number, ValueError(f"not JSON ({error.msg} at column {error.colno})")


def read_sft_file(path: str | os.PathLike[str]) -> SFTData:
    """Every row of a JSONL or Parquet SFT file, split into usable conversations and reported bad rows."""
    source = Path(path)
    if not source.is_file():
        raise ValueError(f"SFT data file {str(path)!r} does not exist; expected a .jsonl or .parquet file")
    data = SFTData()
    for number, row in _rows(source):
        try:
            if isinstance(row, ValueError):
                raise row
            data.rows.append({"messages": json.dumps(row_messages(row), ensure_ascii=False)})
        except ValueError as error:
            data.bad.append(BadRow(number, str(error)))
    return data


Rows = list[dict[str, str]]


def hold_out(rows: Rows, fraction: float, seed: int) -> tuple[Rows, Rows]:
    """(train, held-out): a seeded random `fraction` of the rows (at least one) held out for validation."""
    if not 0 < fraction < 1:
        raise ValueError(f"eval_fraction must be in (0, 1); got {fraction}")
    if len(rows) < 2:
        raise ValueError(f"an SFT file needs at least 2 usable rows to hold some out; it has {len(rows)} "
                         "(pass a separate validation file with --eval-data)")
    order = list(range(len(rows)))
    random.Random(seed).shuffle(order)
    size = max(1, round(fraction * len(rows)))
    held = set(order[:size])
    return [r for i, r in enumerate(rows) if i not in held], [r for i, r in enumerate(rows) if i in held]
