"""Row-level contract validation: every row is accepted or gets one machine-readable reason.

Validation never raises on bad data: whatever a producer sends (wrong types, NaN, huge strings,
missing keys, a non-dict) comes back as a `Rejection` whose `reason` is `<code>` or `<code>:<field>`,
and whose `detail` names the field, the value and what was expected. The offending value also travels
in `Rejection.value`, so a writer that must not store it (ingest's quarantine) can show it redacted
(`Rejection.detail_showing`).

Identifier fields (`IDENTIFIER_FIELDS`: signal, item and prompt ids, policy and guideline versions) must
look like ids: 1 to `MAX_IDENTIFIER_CHARS` characters of letters, digits and `._:/+=-`, starting with a
letter or digit. An id that holds free text ("<uuid> reach me at …") is a `bad_identifier`.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from rlhf_ray.contracts.schemas import (
    IDENTIFIER_FIELDS,
    IDENTIFIER_PATTERN,
    MAX_IDENTIFIER_CHARS,
    MAX_RANKED_RESPONSES,
    MAX_TEXT_CHARS,
    RUBRIC_CRITERIA,
    SCALE_BOUNDS,
    SCHEMA_VERSION,
    SIGNAL_SCHEMAS,
    ImplicitEvent,
    PairwiseChoice,
    RatingScale,
    SafetyCategory,
    SignalType,
    Source,
)

SUPPORTED_SCHEMA_VERSIONS = frozenset({SCHEMA_VERSION})
EARLIEST_EVENT_TIME = datetime(2000, 1, 1, tzinfo=UTC)
MAX_CLOCK_SKEW = timedelta(hours=1)
MAX_SEVERITY = 3
MAX_SESSION_POSITION = 1_000_000
MAX_EXACT_INTEGER = 2**53
_PREVIEW_CHARS = 40

ENUMS: dict[str, frozenset[str]] = {
    "source": frozenset(s.value for s in Source),
    "choice": frozenset(c.value for c in PairwiseChoice),
    "scale": frozenset(s.value for s in RatingScale),
    "event": frozenset(e.value for e in ImplicitEvent),
    "category": frozenset(c.value for c in SafetyCategory),
}
_STRING_FIELDS = frozenset(
    {"signal_id", "signal_type", "schema_version", "source", "actor_id", "item_id", "session_id", "prompt_id",
     "prompt", "topic", "segment", "policy_version", "guideline_version", "region", "response", "response_a",
     "response_b", "edited_response", "rationale", "choice", "scale", "event", "category"}
)
_TEXT_FIELDS = ("prompt", "response", "response_a", "response_b", "edited_response", "rationale")
_IDENTIFIER = re.compile(IDENTIFIER_PATTERN)
IDENTIFIER_EXPECTED = (f"an identifier: 1 to {MAX_IDENTIFIER_CHARS} characters of letters, digits and ._:/+=-, "
                       "starting with a letter or digit")
NO_VALUE: Any = object()  # a rejection that names no value (missing field, oversize text, ...)


def preview(value: Any) -> str:
    """repr(value), cut to a readable length."""
    text = repr(value)
    return text if len(text) <= _PREVIEW_CHARS else text[:_PREVIEW_CHARS] + "…"


def describe(field_name: str | None, expected: str, shown: str | None = None) -> str:
    """`field 'x': got <shown>, expected <expected>` (the parts that apply)."""
    got = "" if shown is None else f"got {shown}, "
    where = "" if field_name is None else f"field {field_name!r}: "
    return f"{where}{got}expected {expected}"


@dataclass(frozen=True)
class Rejection:
    code: str
    field: str | None
    detail: str
    expected: str = ""
    value: Any = field(default=NO_VALUE, repr=False, compare=False)

    @property
    def reason(self) -> str:
        return self.code if self.field is None else f"{self.code}:{self.field}"

    def detail_showing(self, show: Callable[[Any], str]) -> str:
        """The detail with the offending value shown as `show(value)` (e.g. masked or as a keyed digest)."""
        if self.value is NO_VALUE:
            return self.detail
        return describe(self.field, self.expected, f"{show(self.value)} ({type(self.value).__name__})")


class _Reject(Exception):
    def __init__(self, rejection: Rejection) -> None:
        super().__init__(rejection.detail)
        self.rejection = rejection


def _fail(code: str, field_name: str | None, expected: str, value: Any = NO_VALUE) -> _Reject:
    shown = None if value is NO_VALUE else f"{preview(value)} ({type(value).__name__})"
    return _Reject(Rejection(code, field_name, describe(field_name, expected, shown), expected, value))


def reject(code: str, field_name: str | None, expected: str, value: Any = NO_VALUE) -> Rejection:
    """A `Rejection` with the standard detail (for checks made outside `validate_row`, e.g. residency)."""
    return _fail(code, field_name, expected, value).rejection


def identifier_problem(value: str) -> str | None:
    """Why `value` is not an identifier (None when it is one): what it holds, never the value itself."""
    if _IDENTIFIER.fullmatch(value) and len(value) <= MAX_IDENTIFIER_CHARS:
        return None
    if not value:
        return "it is empty"
    if len(value) > MAX_IDENTIFIER_CHARS:
        return f"it is {len(value)} characters long"
    if any(c.isspace() for c in value):
        return "it holds whitespace"
    odd = sorted({c for c in value if not (c.isascii() and (c.isalnum() or c in "._:/+=-"))})
    if odd:
        return "it holds " + ", ".join(repr(c) for c in odd[:3]) + (" …" if len(odd) > 3 else "")
    return "it starts with " + repr(value[0])


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _is_valid_text(value: str) -> bool:
    """Unicode that encodes as UTF-8: JSON may carry lone surrogates (`\\ud800`) that Arrow cannot store."""
    if value.isascii():
        return True
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def parse_event_time(value: Any) -> datetime:
    """Accept an aware datetime or an ISO-8601 string (`Z` allowed); naive times are taken as UTC."""
    if isinstance(value, datetime):
        moment = value
    elif isinstance(value, str):
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    else:
        raise TypeError(f"{type(value).__name__} is not a timestamp")
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _is_finite_number(value: Any) -> bool:
    """A float64-representable finite number (a JSON integer can exceed float range: 10**400)."""
    if isinstance(value, float):
        return math.isfinite(value)
    return _is_number(value) and abs(value) <= MAX_EXACT_INTEGER


def _is_integral(value: Any) -> bool:
    if isinstance(value, float):
        return math.isfinite(value) and value.is_integer()
    return _is_number(value) and abs(value) <= MAX_EXACT_INTEGER


def _is_bool(value: Any) -> bool:
    return isinstance(value, bool)


def _is_string(value: Any) -> bool:
    return isinstance(value, str) and _is_valid_text(value)


_SCALAR_CHECKS: dict[str, tuple[Callable[[Any], bool], str]] = {
    **{name: (_is_string, "a string of valid Unicode") for name in _STRING_FIELDS},
    "confidence": (_is_finite_number, "a finite number"),
    "value": (_is_finite_number, "a finite number"),
    "session_position": (_is_integral, "an integer"),
    "severity": (_is_integral, "an integer"),
    "flagged": (_is_bool, "a boolean"),
    "success": (_is_bool, "a boolean"),
}
# Per signal type, precomputed once: (field name, required?, type check or None). Validation runs per row.
_FIELD_PLANS: dict[SignalType, tuple[tuple[str, bool, tuple[Callable[[Any], bool], str] | None], ...]] = {
    kind: tuple((f.name, not f.nullable, _SCALAR_CHECKS.get(f.name)) for f in schema)
    for kind, schema in SIGNAL_SCHEMAS.items()
}
_KNOWN_FIELDS: dict[SignalType, frozenset[str]] = {kind: frozenset(s.names) for kind, s in SIGNAL_SCHEMAS.items()}
_SIGNAL_TYPES: dict[str, SignalType] = {t.value: t for t in SignalType}


def _check_known_fields(row: Mapping[str, Any], signal_type: SignalType) -> None:
    known = _KNOWN_FIELDS[signal_type]
    for name in row:
        if name not in known:
            raise _fail("unknown_field", str(name), f"only the {signal_type.value} contract's fields")


def _check_types(row: Mapping[str, Any], signal_type: SignalType) -> None:
    for name, required, check in _FIELD_PLANS[signal_type]:
        value = row.get(name)
        if value is None:
            if required:
                raise _fail("missing_field", name, "a value (required field)")
        elif check is not None and not check[0](value):
            raise _fail("wrong_type", name, check[1], value)


def _check_identifiers(row: Mapping[str, Any]) -> None:
    for name in IDENTIFIER_FIELDS:
        value = row.get(name)
        if isinstance(value, str) and (problem := identifier_problem(value)) is not None:
            raise _fail("bad_identifier", name, f"{IDENTIFIER_EXPECTED} ({problem})", value)


def _check_envelope(row: Mapping[str, Any], now: datetime) -> None:
    if row["schema_version"] not in SUPPORTED_SCHEMA_VERSIONS:
        raise _fail("unsupported_schema_version", "schema_version",
                    f"one of {sorted(SUPPORTED_SCHEMA_VERSIONS)}", row["schema_version"])
    for name, allowed in ENUMS.items():
        if name in row and row[name] is not None and row[name] not in allowed:
            raise _fail("unknown_enum", name, f"one of {sorted(allowed)}", row[name])
    try:
        moment = parse_event_time(row["event_time"])
    except (TypeError, ValueError):
        raise _fail("bad_timestamp", "event_time", "an ISO-8601 timestamp", row["event_time"]) from None
    if not EARLIEST_EVENT_TIME <= moment <= now + MAX_CLOCK_SKEW:
        raise _fail("bad_timestamp", "event_time", f"a time between {EARLIEST_EVENT_TIME:%Y-%m-%d} and now",
                    moment.isoformat())
    confidence = row.get("confidence")
    if confidence is not None and not 0.0 <= confidence <= 1.0:
        raise _fail("out_of_range", "confidence", "a value in [0, 1]", confidence)
    position = row.get("session_position")
    if position is not None and not 0 <= position <= MAX_SESSION_POSITION:
        raise _fail("out_of_range", "session_position", f"a value in [0, {MAX_SESSION_POSITION}]", position)
    for name in _TEXT_FIELDS:
        text = row.get(name)
        if isinstance(text, str) and len(text) > MAX_TEXT_CHARS:
            raise _fail("oversize_text", name, f"at most {MAX_TEXT_CHARS} characters, got {len(text)}")


def _check_ranking(row: Mapping[str, Any]) -> None:
    responses, ranking = row["responses"], row["ranking"]
    if not isinstance(responses, list | tuple) or not all(_is_string(r) for r in responses):
        raise _fail("wrong_type", "responses", "a list of strings of valid Unicode", responses)
    if not isinstance(ranking, list | tuple) or not all(_is_integral(i) for i in ranking):
        raise _fail("wrong_type", "ranking", "a list of integers", ranking)
    if not 2 <= len(responses) <= MAX_RANKED_RESPONSES:
        raise _fail("out_of_range", "responses", f"2 to {MAX_RANKED_RESPONSES} responses", len(responses))
    if sorted(int(i) for i in ranking) != list(range(len(responses))):
        raise _fail("inconsistent_ranking", "ranking", f"a permutation of 0..{len(responses) - 1}", ranking)
    for index, text in enumerate(responses):
        if len(text) > MAX_TEXT_CHARS:
            raise _fail("oversize_text", f"responses[{index}]", f"at most {MAX_TEXT_CHARS} characters, got {len(text)}")


def _check_rating(row: Mapping[str, Any]) -> None:
    scores = row["scores"]
    if not isinstance(scores, list | tuple) or not scores:
        raise _fail("wrong_type", "scores", "a non-empty list of {criterion, score}", scores)
    low, high = SCALE_BOUNDS[RatingScale(row["scale"])]
    allowed = set(RUBRIC_CRITERIA) if row["scale"] == RatingScale.RUBRIC5.value else {"overall"}
    seen: set[str] = set()
    for entry in scores:
        if not isinstance(entry, Mapping):
            raise _fail("wrong_type", "scores", "a list of {criterion, score}", entry)
        criterion, score = entry.get("criterion"), entry.get("score")
        if not isinstance(criterion, str) or criterion not in allowed or criterion in seen:
            raise _fail("unknown_enum", "scores.criterion", f"distinct criteria from {sorted(allowed)}", criterion)
        seen.add(criterion)
        if not _is_finite_number(score):
            raise _fail("wrong_type", "scores.score", "a finite number", score)
        if not low <= score <= high:
            raise _fail("out_of_range", "scores.score", f"a {row['scale']} score in [{low:g}, {high:g}]", score)


def _check_implicit(row: Mapping[str, Any]) -> None:
    if row["value"] < 0:
        raise _fail("out_of_range", "value", "a value >= 0 (seconds for dwell, 1 for retry/copy)", row["value"])


def _check_safety(row: Mapping[str, Any]) -> None:
    severity = row.get("severity")
    if severity is not None and not 1 <= severity <= MAX_SEVERITY:
        raise _fail("out_of_range", "severity", f"an integer in [1, {MAX_SEVERITY}]", severity)


_PAYLOAD_CHECKS: dict[SignalType, Callable[[Mapping[str, Any]], None]] = {
    SignalType.RANKING: _check_ranking,
    SignalType.RATING: _check_rating,
    SignalType.IMPLICIT: _check_implicit,
    SignalType.SAFETY_FLAG: _check_safety,
}


def validate_row(row: Any, now: datetime | None = None) -> Rejection | None:
    """None when `row` satisfies its signal contract, else the first problem found. Never raises."""
    try:
        if not isinstance(row, Mapping):
            raise _fail("wrong_type", None, "a JSON object", row)
        signal_type = row.get("signal_type")
        kind = _SIGNAL_TYPES.get(signal_type) if isinstance(signal_type, str) else None
        if kind is None:
            raise _fail("unknown_enum", "signal_type", f"one of {sorted(_SIGNAL_TYPES)}", signal_type)
        _check_known_fields(row, kind)
        _check_types(row, kind)
        _check_identifiers(row)
        _check_envelope(row, now or datetime.now(UTC))
        check = _PAYLOAD_CHECKS.get(kind)
        if check is not None:
            check(row)
    except _Reject as rejected:
        return rejected.rejection
    except Exception as error:  # a validator bug must quarantine the row, not crash the ingest
        return Rejection("validator_error", None, f"{type(error).__name__}: {error}")
    return None
