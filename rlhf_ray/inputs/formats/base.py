"""What every import format shares: reading a file record by record, the problems a record can have, and the
signal-contract rows an importer writes.

A format module turns one parsed record (a JSON line, one element of a JSON export, one Parquet row) into rows of
the signal contracts (`rlhf_ray.contracts`), or raises `BadRecord` naming the field, the value and what was
expected; the registry (`rlhf_ray.inputs.formats`) quarantines that record with its line number.

Conversations: the contracts hold a prompt as one text. A prompt of one user turn is that turn's text; a prompt with
a system message or earlier turns is kept whole as a transcript, one block per turn (`System: …`, `User: …`,
`Assistant: …`, separated by a blank line, the final user turn last), so no history is lost.
"""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from rlhf_ray.contracts import SCHEMA_VERSION, PairwiseChoice, RatingScale, SignalType, Source
from rlhf_ray.contracts.validation import NO_VALUE, Rejection, parse_event_time, reject
from rlhf_ray.inputs.prompts import ROLE_LABELS, conversation_text


class BadRecord(Exception):
    """A record that cannot become a signal row: `rejection` says why (code, field, value, expected)."""

    def __init__(self, code: str, field_name: str | None, expected: str, value: Any = NO_VALUE) -> None:
        self.rejection: Rejection = reject(code, field_name, expected, value)
        super().__init__(self.rejection.detail)


@dataclass(frozen=True)
class ImportContext:
    """What an importer fills in that a public format does not carry (all settable from the command line)."""

    format: str
    field_map: Mapping[str, str] = field(default_factory=dict)
    region: str = "eu"
    policy_version: str = "imported"
    now: datetime = field(default_factory=lambda: datetime.now(UTC))
    confidence: float | None = None

    def field(self, key: str, default: str) -> str:
        """The input field that holds `key` (`--map key=field`), else `default`."""
        return self.field_map.get(key, default)


# --- reading -----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SourceRecord:
    """One record of an input file: its 1-based line (JSONL) or element (JSON array, Parquet) number, and the
    parsed value, or the raw text and why it did not parse."""

    number: int
    value: Any
    parse_error: str | None = None


def read_records(path: str | Path) -> Iterator[SourceRecord]:
    """Records of a JSONL file (one per line), a JSON file (an array, or one object) or a Parquet file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"input {str(path)!r} does not exist")
    data = path.read_bytes()
    if path.suffix == ".parquet":
        for number, row in enumerate(pq.read_table(io.BytesIO(data)).to_pylist(), start=1):
            yield SourceRecord(number, row)
        return
    text = data.decode("utf-8", errors="replace")
    if path.suffix == ".json":
        try:
            parsed = json.loads(text)
        except json.JSONDecodeError as error:
            yield SourceRecord(error.lineno, text, f"unparseable_json: {error.msg} at line {error.lineno}")
            return
        for number, value in enumerate(parsed if isinstance(parsed, list) else [parsed], start=1):
            yield SourceRecord(number, value)
        return
    # JSONL separates records by "\n" only; str.splitlines would also split on U+2028 inside strings.
    for number, line in enumerate(text.split("\n"), start=1):
        line = line.removesuffix("\r")
        if not line.strip():
            continue
        try:
            yield SourceRecord(number, json.loads(line))
        except json.JSONDecodeError as error:
            yield SourceRecord(number, line, f"unparseable_json: {error.msg} at column {error.colno}")


# --- fields ------------------------------------------------------------------------------------------------------


def require(record: Any, key: str) -> Any:
    """`record[key]`, or `BadRecord` missing_field / wrong_type (the record is not an object)."""
    if not isinstance(record, Mapping):
        raise BadRecord("wrong_type", None, "a JSON object", record)
    value = record.get(key)
    if value is None:
        raise BadRecord("missing_field", key, "a value (required field)")
    return value


def nested(record: Any, dotted: str) -> Any:
    """`record["a"]["b"]` for `a.b`; missing_field naming the dotted path when a level is absent."""
    value = record
    for part in dotted.split("."):
        if not isinstance(value, Mapping) or value.get(part) is None:
            raise BadRecord("missing_field", dotted, "a value (required field)")
        value = value[part]
    return value


def text_of(value: Any, name: str) -> str:
    """A non-empty string (leading/trailing space kept); empty_text or wrong_type otherwise."""
    if not isinstance(value, str):
        raise BadRecord("wrong_type", name, "a string", value)
    if not value.strip():
        raise BadRecord("empty_text", name, "non-empty text", value)
    return value


def _content(message: Any, name: str) -> tuple[str, str]:
    """(role, text) of a chat message; OpenAI content parts ([{type: text, text}]) are joined."""
    if not isinstance(message, Mapping):
        raise BadRecord("wrong_type", name, "a message {role, content}", message)
    role = message.get("role")
    if role not in ROLE_LABELS:
        raise BadRecord("unknown_enum", f"{name}.role", f"one of {sorted(ROLE_LABELS)}", role)
    content = message.get("content")
    if isinstance(content, list):
        parts = [p.get("text") for p in content if isinstance(p, Mapping) and p.get("type") == "text"]
        content = "".join(p for p in parts if isinstance(p, str))
    if content is None:
        raise BadRecord("missing_field", f"{name}.content", "a value (required field)")
    return role, text_of(content, f"{name}.content")


def messages_of(value: Any, name: str) -> list[tuple[str, str]]:
    """A non-empty list of chat messages as (role, text) pairs."""
    if not isinstance(value, list):
        raise BadRecord("wrong_type", name, "a list of messages {role, content}", value)
    if not value:
        raise BadRecord("empty_text", name, "at least one message")
    return [_content(m, f"{name}[{i}]") for i, m in enumerate(value)]


def conversation_prompt(turns: list[tuple[str, str]], name: str) -> str:
    """The prompt text of a conversation (see the module doc): one user turn as it is, else a transcript."""
    if not turns:
        raise BadRecord("empty_text", name, "at least one message")
    return conversation_text([{"role": role, "content": text} for role, text in turns])


def answer_of(value: Any, name: str) -> str:
    """An answer given as text, as one assistant message, or as a list of messages ending in an assistant turn."""
    if isinstance(value, str):
        return text_of(value, name)
    if isinstance(value, Mapping):
        value = [value]
    turns = messages_of(value, name)
    if turns[-1][0] != "assistant":
        raise BadRecord("unknown_enum", f"{name}[{len(turns) - 1}].role", "an assistant answer last", turns[-1][0])
    return turns[-1][1]


def event_time(value: Any, name: str) -> datetime:
    """An ISO-8601 string or a Unix time (seconds, or milliseconds when above 1e11)."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        seconds = value / 1000 if value > 1e11 else value
        try:
            return datetime.fromtimestamp(seconds, UTC)
        except (OverflowError, OSError, ValueError):
            raise BadRecord("bad_timestamp", name, "an ISO-8601 time or a Unix time", value) from None
    try:
        return parse_event_time(value)
    except (TypeError, ValueError):
        raise BadRecord("bad_timestamp", name, "an ISO-8601 time or a Unix time", value) from None


# --- rows --------------------------------------------------------------------------------------------------------


def digest(*parts: Any) -> str:
    return hashlib.sha256("\0".join(str(p) for p in parts).encode()).hexdigest()


def prompt_id(prompt: str) -> str:
    """The same prompt text gets the same id in every file (as `rlhf_ray.inputs.prompts` does)."""
    return f"p-{digest(prompt)[:16]}"


def envelope(ctx: ImportContext, signal_type: SignalType, key: tuple[Any, ...], prompt: str, *,
             source: Source, actor_id: str, when: datetime | None = None, item_id: str | None = None,
             session_id: str | None = None, confidence: float | None = None) -> dict[str, Any]:
    """The contract envelope of an imported row. `signal_id` is a content hash of the format, the record's
    position and `key`, so importing the same file twice writes the same ids (ingest then de-duplicates)."""
    return {
        "signal_id": f"imp-{digest(ctx.format, signal_type.value, *key)[:24]}",
        "signal_type": signal_type.value,
        "schema_version": SCHEMA_VERSION,
        "event_time": (when or ctx.now).astimezone(UTC).isoformat(timespec="milliseconds"),
        "source": source.value,
        "actor_id": actor_id,
        "item_id": item_id,
        "session_id": session_id,
        "session_position": None,
        "prompt_id": prompt_id(prompt),
        "prompt": prompt,
        "topic": None,
        "segment": None,
        "policy_version": ctx.policy_version,
        "guideline_version": None,
        "region": ctx.region,
        "confidence": ctx.confidence if confidence is None else confidence,
    }


def pairwise_row(ctx: ImportContext, key: tuple[Any, ...], prompt: str, chosen: str, rejected: str,
                 **envelope_args: Any) -> dict[str, Any]:
    """A pairwise row whose preferred answer is `response_a` (choice "a")."""
    return {**envelope(ctx, SignalType.PAIRWISE, key, prompt, **envelope_args), "response_a": chosen,
            "response_b": rejected, "choice": PairwiseChoice.A.value, "rationale": None}


def ranking_row(ctx: ImportContext, key: tuple[Any, ...], prompt: str, responses: list[str], ranking: list[int],
                **envelope_args: Any) -> dict[str, Any]:
    """A ranking row: `ranking` lists response indices, best first."""
    return {**envelope(ctx, SignalType.RANKING, key, prompt, **envelope_args), "responses": responses,
            "ranking": ranking, "rationale": None}


def rating_row(ctx: ImportContext, key: tuple[Any, ...], prompt: str, response: str, scale: RatingScale,
               score: float, **envelope_args: Any) -> dict[str, Any]:
    """An overall rating (thumbs 0/1 or Likert 1..5)."""
    return {**envelope(ctx, SignalType.RATING, key, prompt, **envelope_args), "response": response,
            "scale": scale.value, "scores": [{"criterion": "overall", "score": float(score)}], "rationale": None}
