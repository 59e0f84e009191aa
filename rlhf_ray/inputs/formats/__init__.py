"""`rlhf-ray import`: public preference and feedback formats → rows of the signal contracts.

One small module per format (`openai_preference`, `trl_preference`, `hh_rlhf`, `ultrafeedback`, `label_studio`,
`argilla`, `jsonl_logs`), each turning one record into contract rows; `read_import` runs one over a file. Every
record that cannot become rows — unparseable, a missing field, empty text, a row its contract refuses — is kept
with its line number and reason in `ImportResult.quarantine`; `quarantine_table` stores it masked like ingest's
quarantine (`rlhf_ray.dataplane.records.quarantine_record`). Pure: no Ray, nothing written.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from itertools import combinations
from pathlib import Path
from typing import Any

import pyarrow as pa

from rlhf_ray.contracts import RatingScale
from rlhf_ray.contracts.validation import Rejection, validate_row
from rlhf_ray.dataplane.records import INGEST_SCHEMA, RawRow, quarantine_record
from rlhf_ray.dataplane.redaction import Redactor
from rlhf_ray.inputs.formats import (
    argilla,
    hh_rlhf,
    jsonl_logs,
    label_studio,
    openai_preference,
    trl_preference,
    ultrafeedback,
)
from rlhf_ray.inputs.formats.base import BadRecord, ImportContext, SourceRecord, read_records

Parser = Callable[[Any, int, ImportContext], list[dict[str, Any]]]

__all__ = ["FORMATS", "BadRecord", "ImportContext", "ImportFormatError", "ImportResult", "preference_pairs",
           "quarantine_table", "read_import"]


class ImportFormatError(ValueError):
    """The import cannot start: an unknown format, a missing file, or a field map the format needs."""


@dataclass(frozen=True)
class ImportResult:
    """Contract rows, the records refused (with why), and counts."""

    rows: list[dict[str, Any]]
    quarantine: list[tuple[SourceRecord, Rejection]]
    input_rows: int
    skipped: dict[str, int] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        return {"input_rows": self.input_rows, "written_rows": len(self.rows),
                "quarantined_rows": len(self.quarantine),
                "written_by_type": dict(sorted(Counter(r["signal_type"] for r in self.rows).items())),
                "quarantined_by_reason": dict(sorted(Counter(r.reason for _, r in self.quarantine).items()))}


def _jsonl_parser(records: list[SourceRecord], ctx: ImportContext) -> Parser:
    """Logs need their whole file to tell thumbs from Likert (`jsonl_logs.numeric_scale`)."""
    if missing := jsonl_logs.missing_keys(dict(ctx.field_map)):
        raise ImportFormatError(f"format 'jsonl' needs --map for {missing} (e.g. --map prompt=question "
                                "response=answer rating=thumbs user=user_id time=ts)")
    chosen = ctx.field_map.get("scale")
    if chosen is not None and chosen not in (RatingScale.THUMBS.value, RatingScale.LIKERT5.value):
        raise ImportFormatError(f"--map scale={chosen!r}: expected 'thumbs' or 'likert5'")
    rating_field = ctx.field_map["rating"]
    numeric = RatingScale(chosen) if chosen else jsonl_logs.numeric_scale(
        [r.value.get(rating_field) for r in records if r.parse_error is None and isinstance(r.value, Mapping)])
    return lambda record, number, context: jsonl_logs.parse(record, number, context, numeric)


FORMATS: dict[str, Callable[[list[SourceRecord], ImportContext], Parser]] = {
    openai_preference.NAME: lambda records, ctx: openai_preference.parse,
    trl_preference.NAME: lambda records, ctx: trl_preference.parse,
    hh_rlhf.NAME: lambda records, ctx: hh_rlhf.parse,
    ultrafeedback.NAME: lambda records, ctx: ultrafeedback.parse,
    label_studio.NAME: lambda records, ctx: label_studio.parse,
    argilla.NAME: lambda records, ctx: argilla.parse,
    jsonl_logs.NAME: _jsonl_parser,
}


def read_import(format: str, path: str | Path, field_map: Mapping[str, str] | None = None, *,
                region: str = "eu", policy_version: str = "imported", confidence: float | None = None,
                now: datetime | None = None) -> ImportResult:
    """Every record of `path` in `format` as contract rows; refused records in the quarantine with their line
    number (1-based; the element number in a JSON array) and reason. A record is written whole or not at all."""
    if format not in FORMATS:
        raise ImportFormatError(f"format {format!r} is not known; expected one of {sorted(FORMATS)}")
    ctx = ImportContext(format, dict(field_map or {}), region, policy_version,
                        now or datetime.now(UTC), confidence)
    try:
        records = list(read_records(path))
    except FileNotFoundError as error:
        raise ImportFormatError(str(error)) from None
    parse = FORMATS[format](records, ctx)
    rows: list[dict[str, Any]] = []
    quarantine: list[tuple[SourceRecord, Rejection]] = []
    skipped: Counter[str] = Counter()
    for record in records:
        if record.parse_error is not None:
            quarantine.append((record, Rejection("unparseable_json", None, record.parse_error)))
            continue
        try:
            built = parse(record.value, record.number, ctx)
        except BadRecord as bad:
            quarantine.append((record, bad.rejection))
            continue
        refused = next((r for r in (validate_row(row, ctx.now) for row in built) if r is not None), None)
        if refused is not None:
            quarantine.append((record, refused))
        elif not built:
            skipped["no_label"] += 1
        else:
            rows += built
    return ImportResult(rows, quarantine, len(records), dict(skipped))


# Keys under which the formats carry a person's id (plus the field `--map user=…` names): the redactor knows only
# the contracts' `actor_id`, so these are pseudonymized before a refused record is stored.
PERSON_ID_KEYS = frozenset({"actor_id", "user_id", "user", "uid", "completed_by", "annotator", "annotator_id",
                            "created_username", "updated_by", "email"})


def _pseudonymized_ids(value: Any, keys: frozenset[str], redactor: Redactor) -> Any:
    if isinstance(value, Mapping):
        return {k: redactor.pseudonym("actor_id", v) if k in keys and v is not None
                else _pseudonymized_ids(v, keys, redactor) for k, v in value.items()}
    if isinstance(value, list):
        return [_pseudonymized_ids(v, keys, redactor) for v in value]
    return value


def quarantine_table(result: ImportResult, redactor: Redactor, source_file: str,
                     field_map: Mapping[str, str] | None = None) -> pa.Table:
    """The refused records as ingest quarantine records: person ids pseudonymized wherever they sit (in text that
    did not parse, their keys become `actor_id`, which the redactor pseudonymizes), then every field masked,
    pseudonymized or digested by `quarantine_record`."""
    keys = PERSON_ID_KEYS | ({field_map["user"]} if field_map and "user" in field_map else set())
    key_pattern = re.compile('"(' + "|".join(re.escape(k) for k in sorted(keys)) + r')"(\s*:)')
    records = []
    for record, rejection in result.quarantine:
        value = (key_pattern.sub(r'"actor_id"\2', record.value) if isinstance(record.value, str)
                 and record.parse_error is not None else _pseudonymized_ids(record.value, keys, redactor))
        raw = RawRow(source_file, record.number, value, record.parse_error)
        records.append(quarantine_record(redactor, raw, rejection))
    return pa.Table.from_pylist(records, schema=INGEST_SCHEMA)


def preference_pairs(rows: list[dict[str, Any]]) -> list[dict[str, str]]:
    """(prompt, chosen, rejected) pairs the rows state: a pairwise choice of a or b; every ordered pair of a
    ranking; two ratings of one prompt with different scores (higher chosen). Ties state no preference."""
    pairs: list[dict[str, str]] = []
    rated: dict[str, list[tuple[str, str, float]]] = {}
    for row in rows:
        kind = row["signal_type"]
        if kind == "pairwise" and row["choice"] in ("a", "b"):
            chosen, rejected = ((row["response_a"], row["response_b"]) if row["choice"] == "a"
                                else (row["response_b"], row["response_a"]))
            pairs.append({"prompt": row["prompt"], "chosen": chosen, "rejected": rejected})
        elif kind == "ranking":
            order = [row["responses"][i] for i in row["ranking"]]
            pairs += [{"prompt": row["prompt"], "chosen": better, "rejected": worse}
                      for better, worse in combinations(order, 2)]
        elif kind == "rating":
            rated.setdefault(row["prompt_id"], []).append((row["prompt"], row["response"],
                                                           row["scores"][0]["score"]))
    for ratings in rated.values():
        for (prompt, a, score_a), (_, b, score_b) in combinations(ratings, 2):
            if score_a != score_b and a != b:
                chosen, rejected = (a, b) if score_a > score_b else (b, a)
                pairs.append({"prompt": prompt, "chosen": chosen, "rejected": rejected})
    return pairs
