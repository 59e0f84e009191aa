"""Tokenizer corpora from a user's files, so `init-model` can build a stand-in model without the world.

A corpus file is JSONL (`.jsonl`/`.json`: every string value of every row, so `prompt`/`response`,
`messages[].content`, `text`, `chosen`/`rejected` all count), Parquet (every string cell) or plain text
(one passage per non-empty line).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any


def _strings(value: Any) -> Iterator[str]:
    """Every non-empty string inside a JSON value, depth first."""
    if isinstance(value, str):
        if value.strip():
            yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from _strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)


def read_corpus(paths: list[str | os.PathLike[str]]) -> list[str]:
    """The texts of every corpus file, in file order; an unreadable file or JSON line fails naming it."""
    texts: list[str] = []
    for name in paths:
        path = Path(name)
        if not path.is_file():
            raise ValueError(f"corpus file {str(name)!r} does not exist; expected a JSONL, Parquet or text file")
        if path.suffix in (".jsonl", ".json"):
            for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
                if not line.strip():
                    continue
                try:
                    texts.extend(_strings(json.loads(line)))
                except json.JSONDecodeError as error:
                    raise ValueError(f"corpus file {str(name)!r} line {number} is not JSON: {error.msg}") from error
        elif path.suffix == ".parquet":
            import pyarrow.parquet as pq

            texts.extend(_strings(pq.read_table(path).to_pylist()))
        else:
            texts.extend(line for line in path.read_text(encoding="utf-8").splitlines() if line.strip())
    if not texts:
        raise ValueError(f"corpus files {[str(p) for p in paths]} hold no text; a tokenizer needs some to train on")
    return texts
