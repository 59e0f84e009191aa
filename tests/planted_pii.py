"""PII planted in every field of every signal type, identifiers included: rows for the no-PII-anywhere tests.

`variants(row)` takes a clean contract row and returns (name, row, expected reason) for: every free-text,
label and raw-id field holding PII (accepted, masked and pseudonymized), then one row per other field
holding PII (identifiers, enums, region, versions, times, numbers, booleans, rankings, scores), an
unknown field whose name and value hold PII, and a well-formed identifier that is a phone number.
None of `SECRETS` may survive anywhere ingest writes or logs.
"""

from __future__ import annotations

import copy
from typing import Any

from rlhf_ray.contracts import IDENTIFIER_FIELDS, MASKED_FIELDS, SIGNAL_SCHEMAS, SignalType

EMAIL = "zorblat.quenby@example.com"
PHONE = "(415) 555-0134"
CARD = "4111 1111 1111 1111"
IPV4 = "203.0.113.77"
IPV6 = "2001:db8:85a3::8a2e:370:7334"
NATIONAL_ID = "123-45-6789"
TEXT = (f"Hi Ada, my name is Zorblat Quenby, mail {EMAIL} or call {PHONE}; card {CARD}, ip {IPV4} or {IPV6}, "
        f"ssn {NATIONAL_ID}. Please ship it to 42 Quenby Avenue, Springfield.\nThanks,\nZorblat")
# What must never appear in any output (names in any case).
SECRETS = (EMAIL, "555-0134", "4111 1111", "4111111111111111", IPV4, "2001:db8:85a3", NATIONAL_ID, "zorblat", "quenby")
RAW_USER = "user-000123"


def leaks(text: str) -> list[str]:
    """The secrets found in `text` (names compared case-insensitively)."""
    lower = text.lower()
    return [s for s in SECRETS if (s.lower() in lower if s.isalpha() else s in text)]


def _with_pii_text(row: dict[str, Any]) -> dict[str, Any]:
    """Every free-text and label field (and the raw ids) of the row holds PII; the row stays valid."""
    out = copy.deepcopy(row)
    for name in MASKED_FIELDS:
        if name not in out:
            continue
        out[name] = [TEXT] * len(out[name]) if name == "responses" else TEXT
    out["actor_id"] = f"{RAW_USER} {EMAIL}"
    if "session_id" in out:
        out["session_id"] = f"{RAW_USER} {EMAIL}/s0-1"
    return out


def variants(row: dict[str, Any], typed_only: bool = False) -> list[tuple[str, dict[str, Any], str | None]]:
    """(name, row, expected reason or None for accepted). `typed_only`: only rows whose values keep the column
    types of the contract (a Parquet shard can hold them)."""
    signal_type = SignalType(row["signal_type"])
    names = SIGNAL_SCHEMAS[signal_type].names
    base = _with_pii_text(row)
    out: list[tuple[str, dict[str, Any], str | None]] = [("text", base, None)]
    for name in IDENTIFIER_FIELDS:
        if name in names:
            out.append((f"{name}=text", base | {name: f"{row['signal_id']} {TEXT}"}, f"bad_identifier:{name}"))
            out.append((f"{name}=phone", base | {name: "415-555-0134"}, f"pii_in_identifier:{name}"))
    strings = {"signal_type", "schema_version", "source", "region", "choice", "scale", "event", "category"}
    for name in names:
        if name in IDENTIFIER_FIELDS or name in MASKED_FIELDS or name in ("actor_id", "session_id"):
            continue
        if typed_only and name not in strings:
            continue
        value: Any = TEXT
        if name == "ranking":
            value = [0, TEXT]
        elif name == "scores":
            value = [{"criterion": TEXT, "score": 1.0}]
        reason = _reason(name)
        out.append((f"{name}=text", base | {name: value}, reason))
    if not typed_only:
        out.append(("unknown field", base | {f"my name is Zorblat Quenby {EMAIL}": TEXT}, "unknown_field"))
    return out


def _reason(name: str) -> str:
    """The reason code (prefix) expected when field `name` holds free text."""
    codes = {"signal_type": "unknown_enum", "schema_version": "unsupported_schema_version", "region": "unknown_region",
             "event_time": "bad_timestamp", "ranking": "wrong_type", "scores": "unknown_enum"}
    if name in ("source", "choice", "scale", "event", "category"):
        return f"unknown_enum:{name}"
    if name in codes:
        return codes[name]
    return f"wrong_type:{name}"
