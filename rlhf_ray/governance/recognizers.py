"""Person names and postal addresses in free text: context recognizers (a cue, then the span to mask).

Names cannot be listed, so each recognizer looks for the context people write them in and masks only
the span after it:

    person   self-introductions   "my name is Ada Quenby", "I'm Ada", "Name: Ada Quenby", "my name is ada"
             signatures           "Thanks,\\nAda" "Best regards, Ada Quenby" "-- Ada" a name alone on the last line
             greetings            "Hi Ada," "Dear Mr. Quenby:" "Attn: Ada Quenby"
             honorifics           "Dr. Quenby" "Ms Ada Quenby"
             relations            "my colleague Ada Quenby" "my friend named Ada"
    address  statements           "my address is <anything up to the end of the clause>" "I live at …"
             street addresses     "42 Quenby Avenue, Apt 4B, Springfield, IL 62704" "Quenbystraße 12" "Rue Quenby 5"
             streets after a place word   "ship it to Quenby Avenue" "the shop on Old Mill Road"
             post office boxes    "P.O. Box 1234"

A name is one to four capitalized words (initials and particles such as `van`, `de` allowed, also
Latin-1 letters); after a strong cue ("my name is") lower-case names are taken too. Words that start
sentences or address groups ("Team", "Everyone", "Sorry", "Thanks" …: `NOT_A_NAME`) are trimmed off a
candidate, and a candidate made only of them is left alone. A name masked once in a text is masked
everywhere else in that text too (`person_tokens` + `mask_known_names`).

Each recognizer declares its cues (phrases, case-sensitive words, substrings), one of which is always in
the text when the recognizer can match. `triggered` finds them in one pass over the text's words, and
`PiiMasker` runs only the recognizers whose cues are there: prose without any cue costs that pass.

Plain `re` patterns, compiled once; every pattern starts at a cue or a word boundary and repeats only
bounded groups, so nothing backtracks quadratically.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

PERSON = "person"
ADDRESS = "address"

# --- building blocks ----------------------------------------------------------------------------
_UP = "A-ZÀ-ÖØ-Þ"
_LOW = "a-zß-öø-ÿ"
# Quenby, McQuenby, O'Quenby, Quenby-Ross
_WORD = rf"[{_UP}](?:['’][{_UP}])?[{_LOW}]+(?:[{_UP}][{_LOW}]+)?(?:-[{_UP}][{_LOW}]+)?"
_INITIAL = rf"[{_UP}]\."
_PARTICLE = r"(?:van|von|de|del|della|der|den|di|da|du|dos|das|la|le|bin|ibn|al|el|ter|ten)"
_NAME = rf"(?:{_WORD}|{_INITIAL})(?:[ ](?:{_PARTICLE}[ ])?(?:{_WORD}|{_INITIAL})){{0,3}}"
_LOWER_NAME = rf"[{_LOW}]{{2,}}(?:[ ][{_LOW}]{{2,}})?"
_HONORIFIC = r"(?:Mrs|Mr|Ms|Mx|Dr|Prof|Miss)"

_SUFFIX_LONG = ("Street|Avenue|Road|Boulevard|Lane|Drive|Court|Place|Square|Terrace|Parkway|Highway|Way|Circle|"
                "Close|Crescent|Row|Alley|Walk|Gardens|Grove|Mews|Plaza|Trail|Quay|Embankment")
_SUFFIX_SHORT = "St|Ave|Av|Rd|Blvd|Ln|Dr|Ct|Pl|Sq|Ter|Terr|Pkwy|Hwy|Cir|Cres|Trl"
_NUMBER = r"[0-9]{1,6}[A-Za-z]?(?:[-/][0-9]{1,4}[A-Za-z]?)?"
_ORDINAL = r"[0-9]{1,3}(?:st|nd|rd|th)"
_STREET = rf"(?:(?:{_WORD}|{_ORDINAL})[ ]){{1,3}}(?:(?:{_SUFFIX_LONG})\b|(?:{_SUFFIX_SHORT})\b\.?)"
_STREET_LONG = rf"(?:{_WORD}[ ]){{1,3}}(?:{_SUFFIX_LONG})\b"
_EU_STREET = (rf"(?:(?:Rue|Via|Viale|Piazza|Calle|Carrer|Avenida|Rua|Plac|Ulica|Praça)[ ]"
              rf"(?:(?:de|del|della|de[ ]la|des|du|da|do|di|dos|das|la|le|les)[ ])?{_WORD}(?:[ ]{_WORD}){{0,2}}"
              rf"|[{_UP}][{_LOW}]+(?:straße|strasse|str\.|weg|platz|gasse|allee|laan|straat|gatan|vej))")
_UNIT = (r"(?:,?[ ](?:Apt|Apartment|Suite|Ste|Unit|Flat|Floor|Fl|Room|Rm|Bldg|Building)\.?[ ]?#?[A-Za-z0-9-]{1,6}"
         r"|[ ]?#[ ]?[0-9]{1,5}[A-Za-z]?)?")
_UK_POSTCODE = r"[A-Z]{1,2}[0-9][A-Z0-9]?[ ]?[0-9][A-Z]{2}"
_PLACE_PART = (rf"(?:{_WORD}(?:[ ]{_WORD}){{0,2}}(?:[ ][A-Z]{{2}})?(?:[ ][0-9]{{5}}(?:-[0-9]{{4}})?)?"
               rf"|[0-9]{{4,5}}[ ]{_WORD}(?:[ ]{_WORD})?|{_UK_POSTCODE}|[A-Z]{{2}}[ ][0-9]{{5}}(?:-[0-9]{{4}})?)")
_TAIL = rf"{_UNIT}(?:(?:,[ ]?|(?<=\.)[ ])(?:{_PLACE_PART})){{0,3}}"  # ", City" (or " City" after "Ave.")

# Clause ends for an address after "my address is": a conjunction, a placeholder or sentence punctuation.
_STOP_WORDS = ("and", "but", "so", "because", "please", "thanks", "thank", "if", "or", "which", "where", "when", "can",
               "could", "would", "will", "is", "was", "call", "phone", "email", "mail", "text", "contact", "reach")
# Lower-case or capitalized only: "OR" and "IN" are also state codes.
_CLAUSE_STOP = rf"(?:{'|'.join(w for word in _STOP_WORDS for w in (word, word.capitalize()))})\b"
_ABBREVIATION = rf"(?:{_SUFFIX_SHORT}|Apt|No|Ste|Fl|Rm|Mt|Ft|St)\."
_ADDRESS_TOKEN = rf"(?!{_CLAUSE_STOP})(?:{_ABBREVIATION}|[^\s<>.!?,;:()\[\]{{}}\"]+)"
_ADDRESS_BODY = rf"{_ADDRESS_TOKEN}(?:,?[ ]{_ADDRESS_TOKEN}){{0,11}}"

# Words that begin sentences or address groups rather than name a person: trimmed off a candidate name.
_NOT_A_NAME_WORDS = """
i me my we us our you your he she it they them a an the this that these those and or but so not no yes very really
just also too here there all everyone everybody anyone someone team folks guys people friend friends sir madam maam
again world thanks thank please sorry hello hi hey dear good great fine ok okay sure glad happy new back still now
then today tomorrow tonight is am are was be been of in on at to for with from by as if about support customer
service admin user bot assistant chatbot ai confused trying looking using going having working asking writing
wondering interested unable able done learning afraid aware curious best regards cheers sincerely kind warm love
morning afternoon evening day night everything anything nothing something what when where why how which who
mr mrs ms mx dr prof miss
"""
NOT_A_NAME = frozenset(_NOT_A_NAME_WORDS.split())


@dataclass(frozen=True)
class ContextRecognizer:
    """One context pattern: `pattern`'s group `pii` is the span masked as `kind`.

    Cues: wherever `pattern` matches, at least one of them is in the text: `phrases`, one or more words in a
    row, lower-cased (a single word is a one-word phrase); `cased`, words as they are written (for
    case-sensitive patterns: "Avenue", "Dr"); `parts`, lower-case substrings. `names`: the span is a person's
    name (trimmed by `NOT_A_NAME`, remembered).
    """

    name: str
    kind: str
    pattern: re.Pattern[str]
    phrases: tuple[tuple[bytes, ...], ...]
    cased: frozenset[bytes]
    parts: tuple[str, ...]
    names: bool = False


def _recognizer(name: str, kind: str, regex: str, phrases: str = "", cased: str = "",
                parts: tuple[str, ...] = ()) -> ContextRecognizer:
    """`phrases`: `|`-separated (or, without `|`, space-separated single words); `cased`: space-separated."""
    items = phrases.split("|") if "|" in phrases else phrases.split()
    return ContextRecognizer(name, kind, re.compile(regex), tuple(tuple(p.encode().split()) for p in items),
                             frozenset(w.encode() for w in cased.split()), parts, names=kind == PERSON)


_SIGN_OFF = (r"(?ai:\b(?:thanks|thank[ ]+you|many[ ]+thanks|thx|cheers|regards|best[ ]+wishes|best|sincerely"
             r"|yours[ ]+(?:truly|sincerely|faithfully)|respectfully|cordially|warmly|take[ ]+care|xoxo|ciao)\b)")
_RELATIONS = ("wife husband partner son daughter mother father mom mum dad brother sister friend colleague coworker "
              "boss manager neighbor neighbour doctor lawyer teacher landlord landlady tenant cousin uncle aunt niece "
              "nephew grandma grandpa grandmother grandfather boyfriend girlfriend fiance fiancee kid child baby "
              "roommate flatmate client patient student supervisor")
_SUFFIXES = " ".join(f"{_SUFFIX_LONG}|{_SUFFIX_SHORT}".split("|"))
_LONG_SUFFIXES = " ".join(_SUFFIX_LONG.split("|"))
_EU_PREFIXES = "Rue Via Viale Piazza Calle Carrer Avenida Rua Plac Ulica"
_EU_PARTS = ("praça", "straße", "strasse", "str.", "weg", "platz", "gasse", "allee", "laan", "straat", "gatan", "vej")

# Order matters: addresses first (an address may hold a capitalized street name), then names.
RECOGNIZERS: tuple[ContextRecognizer, ...] = (
    _recognizer(
        "address_statement", ADDRESS,
        r"(?ai:\b(?:my[ ]+(?:(?:home|postal|mailing|shipping|billing|street|delivery|new|current|full)[ ]+)?"
        r"address(?:[ ]+is|[ ]*:)|(?:postal|mailing|shipping|billing|home|street|delivery)[ ]+address[ ]*:"
        r"|address[ ]*:|(?:i|we)[ ]+live[ ]+at|(?:i|we)[ ]+reside[ ]+at))[ ]+"
        rf"(?P<pii>{_ADDRESS_BODY})",
        "address|live at|reside at",
    ),
    _recognizer("street_address", ADDRESS, rf"(?<![\w.,/-])(?P<pii>{_NUMBER}[ ]{_STREET}{_TAIL})", cased=_SUFFIXES),
    _recognizer(
        "street_address_number_last", ADDRESS, rf"(?<![\w-])(?P<pii>{_EU_STREET}[ ,]{{1,2}}{_NUMBER}\b{_TAIL})",
        cased=_EU_PREFIXES, parts=_EU_PARTS,
    ),
    _recognizer(
        "street_after_place_word", ADDRESS,
        r"(?ai:\b(?:on|at|in|to|near|off|along|down|up|from|via|into|onto|across|past|by))"
        rf"[ ]+(?P<pii>{_STREET_LONG}{_TAIL})",
        cased=_LONG_SUFFIXES,
    ),
    _recognizer("po_box", ADDRESS, r"(?P<pii>(?ai:\bp\.?[ ]?o\.?[ ]+box)[ ]+[0-9]{1,6})\b", "box"),
    _recognizer(
        "self_introduction", PERSON,
        r"(?ai:\bmy[ ]+(?:(?:full|first|last|real|legal|given|family)[ ]+)?(?:sur)?name(?:[ ]+is|'s))[ ]+"
        rf"(?P<pii>{_NAME}|{_LOWER_NAME}(?=[ ]*(?:[,.!?;:\n)]|$)|[ ](?:and|i|from|here|but|so|[-—–(])))",
        "name is|surname is|name s|surname s",
    ),
    _recognizer(
        "self_introduction_capitalized", PERSON,
        r"(?ai:\b(?:i['’]?m|i[ ]+am|this[ ]+is|call[ ]+me|i[ ]+go[ ]+by|(?:full[ ]+|first[ ]+|last[ ]+|my[ ]+)?name"
        r"[ ]?[:=]|signed[ ]*,?|from[ ]?:|author[ ]?:))[ ]+"
        rf"(?P<pii>{_NAME})(?=[ ]*(?:[,.!?;:\n)<]|$)|[ ](?:from|here|speaking|and|at|of|with|again|[-—–(]))",
        "im|i am|this is|call me|go by|signed",
        parts=("i'm", "i’m", "name:", "name :", "name=", "name =", "from:", "from :", "author:", "author :"),
    ),
    _recognizer(
        "signature", PERSON,
        rf"{_SIGN_OFF}[ ]*[,.!:;-]*[ \t]*(?:\r?\n[ \t]*){{0,3}}(?:[-—–~]+[ ]*)?(?P<pii>{_NAME})"
        r"(?=[ \t]*(?:\r?\n|$|[.!,;)]|[ ][-—–(]))",
        "thanks|thank you|thx|cheers|regards|best|sincerely|yours truly|yours sincerely|yours faithfully"
        "|respectfully|cordially|warmly|take care|xoxo|ciao",
    ),
    _recognizer(
        "signature_dash", PERSON, rf"(?:^|(?<=\s))(?:--|—|–|~)[ ]*(?P<pii>{_NAME})[ \t]*(?=\r?\n|$)",
        parts=("--", "—", "–", "~"),
    ),
    _recognizer(
        "signature_last_line", PERSON, rf"\n[ \t]*(?P<pii>{_WORD}(?:[ ]{_WORD}){{1,2}})[ \t]*(?:\r?\n[ \t]*)*$",
        parts=("\n",),
    ),
    _recognizer(
        "greeting", PERSON,
        r"(?ai:\b(?:hi|hello|hey|hiya|heya|dear|greetings|howdy|good[ ]+(?:morning|afternoon|evening|day)"
        rf"|attn|attention))[ ]*[,:.]?[ ]+(?:{_HONORIFIC}\.?[ ])?(?P<pii>{_NAME})(?=[ ]*(?:[,!:;.\n]|$))",
        "hi|hello|hey|hiya|heya|dear|greetings|howdy|attn|attention|good morning|good afternoon|good evening"
        "|good day",
    ),
    _recognizer("honorific", PERSON, rf"(?<![\w.]){_HONORIFIC}\.?[ ](?P<pii>{_NAME})",
                cased="Mrs Mr Ms Mx Dr Prof Miss"),
    _recognizer(
        "relation", PERSON,
        rf"(?ai:\bmy[ ]+(?:{'|'.join(_RELATIONS.split())}))[ ]*,?[ ]+(?:(?:named|called)[ ]+)?(?P<pii>{_NAME})",
        "|".join(f"my {relation}" for relation in _RELATIONS.split()),
    ),
)

# Cue indexes. A phrase is found by its longest word (the rarest, roughly: "wife" for "my wife"), then checked
# whole as b" w1 w2 " among the text's words; a one-word phrase needs no check (None).
_PHRASES: dict[bytes, tuple[tuple[str, bytes | None], ...]] = {}
for _r in RECOGNIZERS:
    for _phrase in _r.phrases:
        _key = max(reversed(_phrase), key=len)
        _PHRASES[_key] = (*_PHRASES.get(_key, ()),
                          (_r.name, b" " + b" ".join(_phrase) + b" " if len(_phrase) > 1 else None))
_CASED: dict[bytes, tuple[tuple[bytes, frozenset[str]], ...]] = {}  # lower-cased word -> (as written, names)
for _word in {word for r in RECOGNIZERS for word in r.cased}:
    _CASED[_word.lower()] = (*_CASED.get(_word.lower(), ()),
                             (_word, frozenset(r.name for r in RECOGNIZERS if _word in r.cased)))
_PART_NAMES: dict[str, frozenset[str]] = {
    part: frozenset(r.name for r in RECOGNIZERS if part in r.parts) for r0 in RECOGNIZERS for part in r0.parts
}
_PART_TRIGGER = re.compile("|".join(map(re.escape, sorted(_PART_NAMES, key=len, reverse=True))))
_CUE_KEYS = frozenset(_PHRASES) | frozenset(_CASED)
_ASCII_WORD = re.compile(r"[A-Za-z]+")
_LOWER_LETTERS = bytes(c + 32 if 65 <= c <= 90 else c if 97 <= c <= 122 else 32 for c in range(256))


def triggered(text: str) -> frozenset[str]:
    """Names of the recognizers whose cues are in `text`: an empty set means none of them can match.

    The text's words are its runs of ASCII letters: wherever a pattern matches, its cue words sit between
    ASCII word boundaries (so they are such runs) with only spaces between them (so a phrase is a run of
    consecutive words): the lookup is exact. Phrases are compared lower-cased, `cased` words must also be in
    the text as written, parts are searched in `text.lower()`. ASCII text takes a byte-level path (translate,
    split); other text is split into ASCII runs first (lower-casing first would turn the Kelvin sign into `k`).
    """
    if text.isascii():
        raw = text.encode()
        lower = raw.translate(_LOWER_LETTERS).split()
    else:
        runs = _ASCII_WORD.findall(text)
        raw = " ".join(runs).encode()
        lower = [word.lower().encode() for word in runs]
    names: set[str] = set()
    joined: bytes | None = None
    for key in _CUE_KEYS.intersection(lower):
        for name, phrase in _PHRASES.get(key, ()):
            if name not in names:
                if phrase is not None:
                    joined = joined or b" " + b" ".join(lower) + b" "
                if phrase is None or phrase in joined:  # type: ignore[operator]
                    names.add(name)
        for word, cased_names in _CASED.get(key, ()):
            if word in raw:
                names |= cased_names
    for part in _PART_TRIGGER.findall(text.lower()):
        names |= _PART_NAMES[part]
    return frozenset(names)


def trim_name(text: str, start: int, end: int) -> tuple[int, int]:
    """Narrow `text[start:end]` to its name: drop leading and trailing words in `NOT_A_NAME`.

    Returns the new (start, end); start == end when nothing but such words was there.
    """
    words = [(m.start() + start, m.end() + start) for m in re.finditer(r"\S+", text[start:end])]
    while words and _not_a_name(text[words[0][0] : words[0][1]]):
        words.pop(0)
    while words and _not_a_name(text[words[-1][0] : words[-1][1]]):
        words.pop()
    return (words[0][0], words[-1][1]) if words else (start, start)


def _not_a_name(word: str) -> bool:
    return word.lower().rstrip(".") in NOT_A_NAME


def person_tokens(name: str) -> list[str]:
    """The capitalized words of a masked name worth masking elsewhere in the same text (3+ letters)."""
    return [w for w in name.split() if len(w) >= 3 and w[0].isupper() and not _not_a_name(w)]


def apply_recognizers(text: str, kinds: frozenset[str], found: Counter[str], names: list[str],
                      active: frozenset[str] | None = None) -> str:
    """Mask every recognizer's span in `text` (kinds in `kinds` only); count in `found`, collect names.

    `active`: names of the recognizers to run (from `triggered(text)`); None runs all of them."""
    for recognizer in RECOGNIZERS:
        if recognizer.kind in kinds and (active is None or recognizer.name in active):
            text = recognizer.pattern.sub(_replacer(recognizer, found, names), text)
    return text


def _replacer(recognizer: ContextRecognizer, found: Counter[str], names: list[str]) -> Callable[[re.Match[str]], str]:
    token = f"<{recognizer.kind.upper()}>"

    def replace(match: re.Match[str]) -> str:
        start, end = match.span("pii")
        if recognizer.names:
            start, end = trim_name(match.string, start, end)
            if start == end:
                return match.group()
            names.append(match.string[start:end])
        found[recognizer.kind] += 1
        offset = match.start()
        whole = match.group()
        return whole[: start - offset] + token + whole[end - offset :]

    return replace


def mask_known_names(text: str, names: list[str], found: Counter[str]) -> str:
    """Mask further whole-word occurrences of the words of names already masked in this text."""
    tokens = sorted({token for name in names for token in person_tokens(name)}, key=len, reverse=True)
    if not tokens:
        return text
    pattern = re.compile(rf"(?<![\w<])(?:{'|'.join(map(re.escape, tokens))})(?![\w>])")
    text, count = pattern.subn(f"<{PERSON.upper()}>", text)
    if count:
        found[PERSON] += count
    return text
