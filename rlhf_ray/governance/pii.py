"""PII masking at capture: typed placeholders for emails, phones, cards, IPs, national ids, addresses, names.

Every free-text field of a feedback row goes through `PiiMasker.mask` before anything is written,
logged or counted. A match is replaced by a typed placeholder (`<EMAIL>`, `<PHONE>`, `<CARD>`,
`<IPV4>`, `<IPV6>`, `<NATIONAL_ID>`, `<ADDRESS>`, `<PERSON>`, `<TICKET>` for a custom pattern `ticket`)
and counted per kind. Postal addresses and person names are found by context recognizers
(`recognizers`: self-introductions, signatures, greetings, "my address is", street addresses …) and,
when one is configured, by a local NER model (`ner.NerModel`).

Speed (it runs inside Ray Data `map_batches` over millions of rows on a couple of cores):
- one compiled regex per kind, each behind a cheap trigger: no `@` -> no email pass, no `:` -> no
  IPv6 pass, no ASCII digit -> none of the digit passes. Ordinary prose has none of the three and
  costs three C-level scans (`benchmarks/pii_mask.py` measures both paths);
- every pattern starts at a token boundary (negative lookbehind), so no pass backtracks quadratically;
- validation that a regex cannot express cheaply (Luhn, IPv6 grammar) runs only on candidates;
- the name and address recognizers run only when one of their cue words is in the text (`triggered`).

Kinds are masked in a fixed order (email, ipv6, card, ipv4, phone, national_id, address, person, then
custom) and the passes repeat until nothing more is found, so `mask(mask(x)) == mask(x)` holds for the
pattern kinds. A NER model runs once per `mask` call, after the first round.
"""

from __future__ import annotations

import ipaddress
import re
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from pydantic import Field

from rlhf_ray.config import StrictModel
from rlhf_ray.governance.ner import NerModel
from rlhf_ray.governance.recognizers import ADDRESS, PERSON, apply_recognizers, mask_known_names, triggered

EMAIL = "email"
PHONE = "phone"
CARD = "card"
IPV4 = "ipv4"
IPV6 = "ipv6"
NATIONAL_ID = "national_id"

# The order the passes run in: an email or IPv6 address may hold digit runs the later passes would split;
# addresses and names come after every digit kind, so a phone inside an address keeps its own placeholder.
PII_KINDS: tuple[str, ...] = (EMAIL, IPV6, CARD, IPV4, PHONE, NATIONAL_ID, ADDRESS, PERSON)
CONTEXT_KINDS = frozenset({ADDRESS, PERSON})
_PLACEHOLDER = re.compile(r"<[A-Z][A-Z0-9_]*>")
CARD_MIN_DIGITS = 13
CARD_MAX_DIGITS = 19
PHONE_MIN_DIGITS = 7
MAX_ROUNDS = 8  # repeat-until-stable bound; built-in passes always converge (see `PiiMasker.mask`)


def placeholder(kind: str) -> str:
    """`email` -> `<EMAIL>`; custom kinds the same way (`ticket_id` -> `<TICKET_ID>`)."""
    return f"<{kind.upper()}>"


def luhn_valid(digits: str) -> bool:
    """Luhn checksum of a string of ASCII digits (the payment-card check digit).

    With d_0 the rightmost digit and d_i the i-th digit counting leftwards:

        s = sum_i  g(i, d_i),   g(i, d) = d                        if i is even
                                g(i, d) = 2d - 9 * [2d > 9]        if i is odd

        valid  <=>  s ≡ 0 (mod 10)

    Returns False for an empty string or anything that is not only ASCII digits.
    """
    if not digits or not (digits.isascii() and digits.isdigit()):
        return False
    total = 0
    for position, char in enumerate(reversed(digits)):
        digit = ord(char) - 48
        total += _LUHN_DOUBLED[digit] if position % 2 else digit
    return total % 10 == 0


_LUHN_DOUBLED = tuple(2 * d - 9 if 2 * d > 9 else 2 * d for d in range(10))

# --- patterns -----------------------------------------------------------------------------------
# Each starts with a negative lookbehind so a match begins only at a token boundary: a digit run
# glued to letters, `_` or `.` (hex digests, `usr_0123…` pseudonyms, decimal fractions, versions
# like `v1.2.3.4`) is never a start. Digits are ASCII ([0-9]) to agree with the digit trigger.

_EMAIL = re.compile(
    r"(?<![\w.%+'-])"
    r"[\w.%+'-]+@[\w-]+(?:\.[\w-]+)*\.[^\W\d_]{2,}"
)

# IPv6: a hex-and-colons candidate (holding at least two colons, optionally ending in a dotted
# IPv4 tail) validated by `ipaddress`; compressed `::` forms must hold a decimal digit so that
# words such as `add::be` or a bare `::` are not addresses.
_IPV6 = re.compile(
    r"(?<![\w:.])"
    r"(?=[0-9A-Fa-f]{0,4}:[0-9A-Fa-f]{0,4}:)"
    r"[0-9A-Fa-f:]{2,39}(?:[0-9]{1,3}(?:\.[0-9]{1,3}){3})?"
    r"(?![\w:]|\.[0-9])"
)

# Card: a maximal run of 13+ digits, a single space or dash allowed between any two; validated (and
# windowed) by Luhn. The run must end at a real boundary: not glued to a word, a decimal fraction or a
# `-word` tail (the all-digit head of a UUID such as `12345678-1234-1234-1234-1234abcd5678`).
_CARD = re.compile(r"(?<![\w.])[0-9](?:[ -]?[0-9]){12,}(?![\w]|\.[0-9]|-\w)")
_DIGIT_GROUP = re.compile(r"[0-9]+")

_OCTET = r"(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
_IPV4 = re.compile(rf"(?<![\w.]){_OCTET}(?:\.{_OCTET}){{3}}(?![\w]|\.[0-9])")

_PHONE = re.compile(
    r"(?<![\w.+-])(?:"
    # international: +CC, an optional area code (may be in parens), then 2-5 groups of 2-5 digits
    r"\+[0-9]{1,3}(?:[ .-]?\(?[0-9]{1,4}\)?)?(?:[ .-][0-9]{2,5}){2,5}"
    # E.164 without separators
    r"|\+[0-9]{8,15}"
    # North American: optional trunk 1, (415) 555-0134 / 415-555-0134 / 415.555.0134 / 415 555 0134
    r"|(?:1[ .-]?)?(?:\([0-9]{3}\)[ .-]?|[0-9]{3}[ .-])[0-9]{3}[ .-][0-9]{4}"
    r")(?![0-9])"
)

# US SSN-style national id: 123-45-6789 or 123 45 6789 (one separator used consistently).
_NATIONAL_ID = re.compile(r"(?<![\w.+-])[0-9]{3}([ -])[0-9]{2}\1[0-9]{4}(?![0-9]|-[0-9])")

_ANY_DIGIT = re.compile(r"[0-9]")
_CUSTOM_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]*")


def _card_replacement(run: str, found: Counter[str]) -> str:
    """Mask Luhn-valid card numbers inside a digit run: the whole run, else Luhn-valid windows of whole
    digit groups (so `2 4111 1111 1111 1111 7` still loses the card). Windows of the usual card
    lengths win (16, then 15, 14, 13, 19, 18, 17 digits), leftmost first; the rest is searched again."""
    digits = run.replace(" ", "").replace("-", "")
    if CARD_MIN_DIGITS <= len(digits) <= CARD_MAX_DIGITS and luhn_valid(digits):
        found[CARD] += 1
        return placeholder(CARD)
    groups = [(m.start(), m.end()) for m in _DIGIT_GROUP.finditer(run)]
    if len(groups) == 1:
        return run
    return _mask_card_windows(run, groups, found)


_CARD_LENGTH_PREFERENCE = {length: rank for rank, length in enumerate((16, 15, 14, 13, 19, 18, 17))}


def _mask_card_windows(run: str, groups: list[tuple[int, int]], found: Counter[str]) -> str:
    best: tuple[int, int, int] | None = None  # (rank, first group, last group)
    for i in range(len(groups)):
        width = 0
        for j in range(i, len(groups)):
            width += groups[j][1] - groups[j][0]
            if width > CARD_MAX_DIGITS:
                break
            rank = _CARD_LENGTH_PREFERENCE.get(width)
            if rank is None or (best is not None and rank >= best[0]):
                continue
            window = run[groups[i][0] : groups[j][1]].replace(" ", "").replace("-", "")
            if luhn_valid(window):
                best = (rank, i, j)
    if best is None:
        return run
    _, i, j = best
    found[CARD] += 1
    left, right = run[: groups[i][0]], run[groups[j][1] :]
    left_groups, right_groups = groups[:i], [(a - groups[j][1], b - groups[j][1]) for a, b in groups[j + 1 :]]
    left = _mask_card_windows(left, left_groups, found) if left_groups else left
    right = _mask_card_windows(right, right_groups, found) if right_groups else right
    return left + placeholder(CARD) + right


def _ipv6_valid(candidate: str) -> bool:
    try:
        ipaddress.IPv6Address(candidate)
    except ValueError:
        return False
    return "::" not in candidate or any(c.isdigit() for c in candidate)


def _phone_valid(candidate: str) -> bool:
    """At least 7 digits: `+1 23 45` is not a phone number; a long one is masked whole (safer)."""
    return sum(c.isdigit() for c in candidate) >= PHONE_MIN_DIGITS


@dataclass(frozen=True)
class PiiMasker:
    """Replace PII in free text with typed placeholders and count what was masked.

    `kinds`: the built-in kinds to mask (default: all of `PII_KINDS`).
    `custom_patterns`: extra `{name: regex}` from config, masked as `<NAME>` and counted as `name`;
    applied after the built-in kinds, in the given order. Bad names or patterns fail here, naming them.
    `fast_path`: skip a pass when its trigger (character or cue word) is absent (exact, never changes the result).
    `ner`: a local NER model for person names that no context gives away (None: the recognizers only).
    """

    kinds: frozenset[str] = frozenset(PII_KINDS)
    custom_patterns: Mapping[str, str] = field(default_factory=dict)
    fast_path: bool = True
    ner: NerModel | None = None

    def __post_init__(self) -> None:
        kinds = frozenset(self.kinds)
        unknown = sorted(kinds - set(PII_KINDS))
        if unknown:
            raise ValueError(f"pii kinds: unknown {unknown}, expected a subset of {list(PII_KINDS)}")
        object.__setattr__(self, "kinds", kinds)
        custom = dict(self.custom_patterns)
        object.__setattr__(self, "custom_patterns", custom)
        object.__setattr__(self, "_custom", tuple(_compile_custom(name, regex) for name, regex in custom.items()))

    # --- text -----------------------------------------------------------------------------------

    def mask(self, text: str) -> tuple[str, Counter[str]]:
        """(masked text, {kind: count}). Idempotent: masking the result again changes nothing.

        Passes repeat until a round finds nothing (a replacement can join its neighbours into a new
        match). Each built-in match removes more trigger characters (`@`, `:`, digits) or cue words than
        its placeholder adds, so this stops after a round or two; `MAX_ROUNDS` bounds custom patterns.
        """
        if not isinstance(text, str):
            raise TypeError(f"PiiMasker.mask expects str, got {type(text).__name__}")
        context = self.fast_path and not self.kinds.isdisjoint(CONTEXT_KINDS)
        active = triggered(text) if context else None
        if (
            self.fast_path
            and self.ner is None
            and not self._custom  # type: ignore[attr-defined]
            and "@" not in text
            and ":" not in text
            and _ANY_DIGIT.search(text) is None
            and not active
        ):
            return text, Counter()  # no pass could match: the common case for prose
        counts: Counter[str] = Counter()
        for round_number in range(MAX_ROUNDS):
            if round_number and context:
                active = triggered(text)
            text, found = self._mask_once(text, active)
            if round_number == 0 and self.ner is not None:
                text = self._mask_entities(text, found)
            if not found:
                break
            counts.update(found)
        return text, counts

    def _mask_once(self, text: str, active: frozenset[str] | None) -> tuple[str, Counter[str]]:
        """One round of every pass. `active`: the recognizers `triggered` by the text at the start of the round
        (None: run them all). The digit and email passes before them only put placeholders in, whose words are
        never cues, so the cues of the text the recognizers see are among those."""
        found: Counter[str] = Counter()
        kinds = self.kinds
        fast = self.fast_path
        if EMAIL in kinds and (not fast or "@" in text):
            text, n = _EMAIL.subn("<EMAIL>", text)
            if n:
                found[EMAIL] += n
        if IPV6 in kinds and (not fast or ":" in text):
            text = _IPV6.sub(_validated(IPV6, _ipv6_valid, found), text)
        if not fast or _ANY_DIGIT.search(text) is not None:
            if CARD in kinds:
                text = _CARD.sub(lambda m: _card_replacement(m.group(), found), text)
            if IPV4 in kinds:
                text, n = _IPV4.subn("<IPV4>", text)
                if n:
                    found[IPV4] += n
            if PHONE in kinds:
                text = _PHONE.sub(_validated(PHONE, _phone_valid, found), text)
            if NATIONAL_ID in kinds:
                text, n = _NATIONAL_ID.subn("<NATIONAL_ID>", text)
                if n:
                    found[NATIONAL_ID] += n
        if not kinds.isdisjoint(CONTEXT_KINDS) and (active is None or active):
            names: list[str] = []
            text = apply_recognizers(text, kinds, found, names, active)
            text = mask_known_names(text, names, found)
        for name, pattern, token in self._custom:  # type: ignore[attr-defined]
            text = pattern.sub(_custom_replacement(name, token, found), text)
        return text, found

    def _mask_entities(self, text: str, found: Counter[str]) -> str:
        """Mask the NER model's entities of the kinds in `kinds` (never inside a placeholder)."""
        if self.ner is None:
            return text
        taken = [m.span() for m in _PLACEHOLDER.finditer(text)]
        names: list[str] = []
        for start, end, kind in sorted(self.ner.spans(text), reverse=True):
            if kind not in self.kinds or any(start < b and a < end for a, b in taken):
                continue
            if kind == PERSON:
                names.append(text[start:end])
            text = text[:start] + placeholder(kind) + text[end:]
            taken.append((start, start + len(placeholder(kind))))
            found[kind] += 1
        return mask_known_names(text, names, found) if PERSON in self.kinds else text

    # --- structured values ------------------------------------------------------------------------

    def mask_value(self, value: Any) -> tuple[Any, Counter[str]]:
        """Mask a str; lists/tuples (recursively) and dict values likewise; anything else unchanged.

        Containers come back as new objects of the same kind (list, tuple, dict); the input is not
        modified. A numpy array of strings/objects (Ray Data's numpy batch format) is masked the same way.
        """
        if isinstance(value, str):
            return self.mask(value)
        counts: Counter[str] = Counter()
        if isinstance(value, (list, tuple)):
            items = []
            for item in value:
                masked, found = self.mask_value(item)
                items.append(masked)
                counts.update(found)
            return (tuple(items) if isinstance(value, tuple) else items), counts
        if isinstance(value, dict):
            out = {}
            for key, item in value.items():
                out[key], found = self.mask_value(item)
                counts.update(found)
            return out, counts
        if _is_text_array(value):
            out_array = value.astype(object)  # a fixed-width str array would truncate placeholders
            for index, item in enumerate(value.flat):
                out_array.flat[index], found = self.mask_value(item)
                counts.update(found)
            return out_array, counts
        return value, counts

    def mask_fields(self, row: dict[str, Any], fields: Iterable[str]) -> Counter[str]:
        """Mask `row[field]` in place for each of `fields` present and not None; returns the counts."""
        counts: Counter[str] = Counter()
        for name in fields:
            if row.get(name) is not None:
                row[name], found = self.mask_value(row[name])
                counts.update(found)
        return counts


def _validated(kind: str, valid: Callable[[str], bool], found: Counter[str]) -> Callable[[re.Match[str]], str]:
    token = placeholder(kind)

    def replace(match: re.Match[str]) -> str:
        candidate = match.group()
        if not valid(candidate):
            return candidate
        found[kind] += 1
        return token

    return replace


def _custom_replacement(name: str, token: str, found: Counter[str]) -> Callable[[re.Match[str]], str]:
    def replace(match: re.Match[str]) -> str:
        if not match.group():  # a zero-width match masks nothing
            return ""
        found[name] += 1
        return token

    return replace


def _compile_custom(name: str, regex: str) -> tuple[str, re.Pattern[str], str]:
    if not isinstance(name, str) or not _CUSTOM_NAME.fullmatch(name):
        raise ValueError(f"pii custom_patterns: name {name!r} must be a letter followed by letters, digits or _")
    if name.lower() in PII_KINDS:
        raise ValueError(f"pii custom_patterns: name {name!r} clashes with the built-in kind {name.lower()!r}")
    if not isinstance(regex, str):
        raise ValueError(f"pii custom_patterns.{name}: expected a regex string, got {type(regex).__name__}")
    try:
        pattern = re.compile(regex)
    except re.error as error:
        raise ValueError(f"pii custom_patterns.{name}: invalid regex {regex!r}: {error}") from None
    token = placeholder(name)
    for other in (*(placeholder(kind) for kind in PII_KINDS), token):
        hit = pattern.search(other)
        if hit is not None and hit.group():
            raise ValueError(
                f"pii custom_patterns.{name}: regex {regex!r} matches the placeholder {other!r}; "
                "make it more specific (masking would never settle)"
            )
    return name, pattern, token


def _is_text_array(value: Any) -> bool:
    dtype = getattr(value, "dtype", None)
    return dtype is not None and getattr(dtype, "kind", None) in ("O", "U") and hasattr(value, "flat")


class PiiSection(StrictModel):
    """A job's `pii` settings: which masker ingest (and any importer) uses on every text field."""

    custom_patterns: dict[str, str] = Field(default_factory=dict, description="extra {name: regex} to mask")
    ner_model: str | None = Field(None, description="local NER model folder for person names: a spaCy pipeline "
                                  "(config.cfg + meta.json) or a transformers token-classification checkpoint; "
                                  "never downloaded (default: context recognizers only)")
    ner_labels: dict[str, str] = Field(default_factory=lambda: {"PER": PERSON, "PERSON": PERSON},
                                       description="NER label → PII kind")
    ner_min_score: float = Field(0.5, ge=0, le=1, description="lowest NER score that is masked")

    def masker(self) -> PiiMasker:
        """The configured masker; a `ValueError` naming the setting when a pattern or the model folder is bad."""
        ner = None
        if self.ner_model:
            ner = NerModel(self.ner_model, self.ner_labels, self.ner_min_score)
        return PiiMasker(custom_patterns=self.custom_patterns, ner=ner)
