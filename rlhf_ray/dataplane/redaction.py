"""No PII in any field: what a row that is stored without being accepted (quarantine) keeps of each field.

Quarantine is storage like any other, so every field of a refused row is protected before it is written,
whatever the row holds and however it broke its contract:

    actor_id, session_id           keyed pseudonyms, whatever their type (as for accepted rows)
    identifier fields              kept when they are well-formed ids with no PII in them, else `dig_<16 hex>`
                                   (a keyed digest: whoever holds the key can check a candidate value)
    free text and labels           masked (`MASKED_FIELDS`, in lists too)
    closed vocabularies            (enums, signal type, schema version, rubric criteria) kept when the value is
                                   one of them, else `dig_<16 hex>`
    every other field              (region, times, numbers, scores, unknown fields): numbers, booleans and null
                                   kept; a string kept when it is a short code with no PII in it
                                   (`mars`, `2026-13-45T25:61:00Z`), else `dig_<16 hex>`; containers walked
    field names                    contract names and plain snake_case names kept, any other `dig_<16 hex>`
    text that did not parse        each JSON string literal as above by its key, the text between masked; a
                                   value cut off at the end loses its last, partial word (and digit groups before it)
    rejection details              the offending value shown as its field stores it

`Redactor` holds the masker and the keyed pseudonymizer; ingest and every importer build quarantine
records through `rlhf_ray.dataplane.records.quarantine_record`, which uses it.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Callable, Mapping
from typing import Any

from rlhf_ray.contracts import (
    IDENTIFIER_FIELDS,
    MASKED_FIELDS,
    PSEUDONYMIZED_FIELDS,
    RUBRIC_CRITERIA,
    SIGNAL_SCHEMAS,
    SignalType,
)
from rlhf_ray.contracts.validation import (
    ENUMS,
    NO_VALUE,
    SUPPORTED_SCHEMA_VERSIONS,
    Rejection,
    describe,
    identifier_problem,
    preview,
)
from rlhf_ray.governance import PiiMasker, Pseudonymizer

KNOWN_FIELDS = frozenset(name for schema in SIGNAL_SCHEMAS.values() for name in schema.names)
# Closed vocabularies: a value outside one is not a code to keep but whatever the producer put there.
VOCABULARIES: dict[str, frozenset[str]] = {
    **ENUMS,
    "signal_type": frozenset(t.value for t in SignalType),
    "schema_version": SUPPORTED_SCHEMA_VERSIONS,
    "criterion": frozenset((*RUBRIC_CRITERIA, "overall")),
}
_CODE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:+-]{0,39}")
_PLAIN_NAME = re.compile(r"[a-z][a-z0-9_]{0,39}(?:\[[0-9]{1,4}\])?(?:\.[a-z][a-z0-9_]{0,39})?")
# A JSON string literal, possibly cut off at the end of the text (a truncated line).
_STRING_LITERAL = re.compile(r'"((?:[^"\\]|\\.)*)("|\\?$)')
_LAST_WORD = re.compile(r"\S*$")
_COLON_NEXT = re.compile(r"\s*:")
_COLON_BEFORE = re.compile(r":\s*$")


def identifier_pii(row: Mapping[str, Any], masker: PiiMasker) -> Rejection | None:
    """`pii_in_identifier:<field>` when a well-formed identifier still holds PII (`415-555-0134`, `10.0.0.7`).

    The detail names the kinds found, never the value. Run after contract validation (which checks the format).
    """
    for name in IDENTIFIER_FIELDS:
        value = row.get(name)
        if isinstance(value, str):
            _, found = masker.mask(value)
            if found:
                expected = f"an identifier that holds no personal data (found: {', '.join(sorted(found))})"
                # The value travels for a redacted detail (`Redactor.detail`), but the plain detail never shows it.
                return Rejection("pii_in_identifier", name, describe(name, expected), expected, value)
    return None


class Redactor:
    """Protects every field of a row that is stored without being accepted. Picklable (Ray workers hold one)."""

    def __init__(self, masker: PiiMasker, pseudonymizer: Pseudonymizer) -> None:
        self.masker = masker
        self.pseudonymizer = pseudonymizer

    # --- names and single values -----------------------------------------------------------------

    def field_name(self, name: Any) -> str:
        """A field name as it may be stored: contract or plain snake_case names as they are, else a digest."""
        text = name if isinstance(name, str) else canonical_text(name)
        return text if text in KNOWN_FIELDS or _PLAIN_NAME.fullmatch(text) else self.pseudonymizer.digest(text)

    def identifier(self, value: Any) -> Any:
        """A well-formed identifier without PII as it is; anything else (null stays null) as a keyed digest."""
        if value is None:
            return None
        if isinstance(value, str) and identifier_problem(value) is None and not self.masker.mask(value)[1]:
            return value
        return self.pseudonymizer.digest(value if isinstance(value, str) else canonical_text(value))

    def pseudonym(self, name: str, value: Any) -> str:
        """The pseudonym of `actor_id` or `session_id` `value`, whatever its type."""
        convert = self.pseudonymizer.pseudonym if name == "actor_id" else self.pseudonymizer.pseudonymize_session
        return _pseudonymize_any(value, convert)

    def field(self, name: str, value: Any, counts: Counter[str]) -> Any:
        """`value` of field `name` as it may be stored (see the module doc)."""
        if name in PSEUDONYMIZED_FIELDS and value is not None:
            return self.pseudonym(name, value)
        if name in IDENTIFIER_FIELDS:
            return self.identifier(value)
        if name in MASKED_FIELDS:
            return self.value(value, counts)
        if name in VOCABULARIES and value is not None:
            return self.choice(name, value)
        return self.data(value)

    def choice(self, name: str, value: Any) -> Any:
        """A value of a closed vocabulary (enum, schema version, rubric criterion): kept when it is one of them,
        else a keyed digest (an unknown value may be anything a producer typed)."""
        if isinstance(value, str) and value in VOCABULARIES[name]:
            return value
        return self.pseudonymizer.digest(value if isinstance(value, str) else canonical_text(value))

    def value(self, value: Any, counts: Counter[str]) -> Any:
        """Free text: strings masked, containers walked (their keys as field names), other scalars kept."""
        if isinstance(value, str):
            masked, found = self.masker.mask(value)
            counts.update(found)
            return masked
        if isinstance(value, list | tuple):
            return [self.value(item, counts) for item in value]
        if isinstance(value, Mapping):
            return {self.field_name(key): self.value(item, counts) for key, item in value.items()}
        return value

    def data(self, value: Any) -> Any:
        """A value that is not free text: a short code without PII as it is, any other string as a digest."""
        if isinstance(value, str):
            if not value or (_CODE.fullmatch(value) and not self.masker.mask(value)[1]):
                return value
            return self.pseudonymizer.digest(value)
        if isinstance(value, list | tuple):
            return [self.data(item) for item in value]
        if isinstance(value, Mapping):
            return {self.field_name(key): self.choice(key, item) if key in VOCABULARIES else self.data(item)
                    for key, item in value.items()}
        return value

    # --- whole rows ----------------------------------------------------------------------------------

    def row(self, value: Any) -> tuple[Any, Counter[str]]:
        """A parsed row (a mapping, or whatever a line held) with every field protected, and the PII counts."""
        counts: Counter[str] = Counter()
        if isinstance(value, Mapping):
            return {self.field_name(name): self.field(str(name), item, counts) for name, item in value.items()}, counts
        return self.value(value, counts), counts  # not a row: whatever the line held, masked as text

    def text(self, text: str) -> tuple[str, Counter[str]]:
        """Text that did not parse (a cut or broken JSON line): each string literal protected by its key, the
        text between literals masked."""
        counts: Counter[str] = Counter()
        out: list[str] = []
        key: str | None = None
        position = 0
        for match in _STRING_LITERAL.finditer(text):
            out.append(self._masked(text[position : match.start()], counts))
            literal = _decode_literal(match.group(1))
            closing = '"' if match.group(2) == '"' else ""
            if _COLON_NEXT.match(text, match.end()):  # a key
                key = literal
                out.append(json.dumps(self.field_name(literal), ensure_ascii=False))
            else:
                after_key = key if _COLON_BEFORE.search(text, 0, match.start()) else None
                if not closing and after_key not in PSEUDONYMIZED_FIELDS + IDENTIFIER_FIELDS:
                    literal = _without_cut_word(literal)
                protected = self.field(after_key, literal, counts) if after_key else self.value(literal, counts)
                out.append(json.dumps(protected, ensure_ascii=False)[:-1] + closing)
            position = match.end()
        out.append(self._masked(text[position:], counts))
        return "".join(out), counts

    def _masked(self, text: str, counts: Counter[str]) -> str:
        masked, found = self.masker.mask(text)
        counts.update(found)
        return masked

    # --- rejections ------------------------------------------------------------------------------------

    def reason(self, rejection: Rejection) -> str:
        """`code:field` with the field name as it may be stored (an unknown field's name can be anything)."""
        return rejection.code if rejection.field is None else f"{rejection.code}:{self.field_name(rejection.field)}"

    def detail(self, rejection: Rejection) -> str:
        """The rejection's detail, with the offending value (and field name) as its field stores them."""
        if not rejection.expected:  # a free-form detail (parse errors, validator errors): masked as text
            return self.masker.mask(rejection.detail)[0]
        name = None if rejection.field is None else self.field_name(rejection.field)
        shown = None if rejection.value is NO_VALUE else self._shown(rejection.field, rejection.value)
        return self.masker.mask(describe(name, rejection.expected, shown))[0]

    def _shown(self, name: str | None, value: Any) -> str:
        """The offending value as its field stores it (`scores.criterion` as a criterion, `responses[2]` as text)."""
        kind = type(value).__name__
        path = re.split(r"[.\[]", name) if name else []
        if path and path[-1] in VOCABULARIES:
            return f"{preview(self.choice(path[-1], value))} ({kind}, stored as its field is)"
        if path and path[0] in KNOWN_FIELDS:
            return f"{preview(self.field(path[0], value, Counter()))} ({kind}, stored as its field is)"
        return f"{preview(self.data(value))} ({kind})"


def canonical_text(value: Any) -> str:
    """A stable text form of any value (for digests)."""
    return json.dumps(value, sort_keys=True, ensure_ascii=False, default=repr)


def _without_cut_word(text: str) -> str:
    """A value cut off mid-word loses that word and the digit groups before it: a cut email, card or phone
    number is no longer recognizable as one, so none of it is kept."""
    if not text:
        return text
    head = _LAST_WORD.sub("", text).rstrip("0123456789 ()+-./:")
    return f"{head} …" if head else "…"


def _decode_literal(body: str) -> str:
    """The string a JSON literal's body stands for; the body as it is when its escapes are broken (a cut line)."""
    try:
        return json.loads(f'"{body}"')
    except json.JSONDecodeError:
        return body


def _pseudonymize_any(value: Any, convert: Callable[[str], str]) -> str:
    """A pseudonym for an id of any type: a non-string id is pseudonymized whole, as its canonical text."""
    return convert(value if isinstance(value, str) else canonical_text(value))
