"""Precision and recall of `PiiMasker` for person names and postal addresses, on a planted set.

    python benchmarks/pii_recall.py --texts 4000 --seed 0

Invented names and streets (random syllables, so no list the masker could know) are planted into the
synthetic world's prompts the way users write them: self-introductions, signatures, greetings,
"my address is", "ship it to … Avenue", street addresses, and a family with no context at all (only a
NER model can find those). Negatives are the world's prose plus hard cases: capitalized product names
after the same cues ("This is Python code", "Thanks, Docker works now").

    recall     planted entities whose every word (3+ letters) is gone from the masked text
    precision  masked spans (replaced by <PERSON> / <ADDRESS>) that overlap a planted entity

Spans are recovered by aligning each text with its masked form (difflib). Prints one JSON line with the
figures overall, per family and per kind. Not part of the test suite.
"""

from __future__ import annotations

import argparse
import difflib
import json
import re
import time
from dataclasses import dataclass

import numpy as np

from rlhf_ray.governance import PiiMasker
from rlhf_ray.governance.ner import NerModel
from rlhf_ray.sim import World, WorldConfig

_ONSETS = ("b", "d", "f", "g", "k", "l", "m", "n", "p", "r", "s", "t", "v", "z", "br", "dr", "kr", "tr", "qu", "sh",
           "th", "zh", "")
_VOWELS = ("a", "e", "i", "o", "u", "ai", "ou", "ei", "y")
_CODAS = ("", "n", "r", "l", "s", "th", "x", "nd", "rk", "lt")
_SURNAME_ENDINGS = ("son", "by", "ley", "wick", "ton", "vard", "ski", "ez", "ari", "elli", "ov", "berg", "mann")
_STREET_SUFFIXES = ("Street", "Avenue", "Road", "Lane", "Drive", "Boulevard", "Way", "Court", "Place", "St", "Ave",
                    "Rd", "Blvd")
_STATES = ("IL", "CA", "NY", "TX", "WA", "OR")
_PRODUCTS = ("Python", "Windows", "Excel", "React", "Linux", "Docker", "Chrome", "Kubernetes", "Java", "Postgres")
PERSON, ADDRESS = "person", "address"


def _syllables(rng: np.random.Generator, count: int) -> str:
    return "".join(str(rng.choice(_ONSETS)) + str(rng.choice(_VOWELS)) + str(rng.choice(_CODAS))
                   for _ in range(count))


_ENGLISH_WORDS = "this that than then there these those their where were here kind dear near bear tear rare fear sure"
_ENGLISH = frozenset(_ENGLISH_WORDS.split())


def _first(rng: np.random.Generator) -> str:
    """An invented first name (never a common English word the generator happens to spell)."""
    while (name := _syllables(rng, 2)) in _ENGLISH or len(name) < 4:
        pass
    return name.capitalize()


def _last(rng: np.random.Generator) -> str:
    return (_syllables(rng, 1) + str(rng.choice(_SURNAME_ENDINGS))).capitalize()


def _street(rng: np.random.Generator) -> str:
    return f"{_syllables(rng, 2).capitalize()} {rng.choice(_STREET_SUFFIXES)}"


def _city(rng: np.random.Generator) -> str:
    return _syllables(rng, 2).capitalize() + str(rng.choice(["ville", "ford", "ton", "burg", "field", ""]))


def _number(rng: np.random.Generator) -> str:
    return str(int(rng.integers(1, 9999)))


def _full_address(rng: np.random.Generator) -> str:
    style = int(rng.integers(4))
    base = f"{_number(rng)} {_street(rng)}"
    if style == 0:
        return base
    if style == 1:
        return f"{base}, {_city(rng)}"
    if style == 2:
        return f"{base}, Apt {int(rng.integers(1, 40))}{rng.choice(['', 'B'])}, {_city(rng)}"
    return f"{base}, {_city(rng)}, {rng.choice(_STATES)} {int(rng.integers(10000, 99999))}"


@dataclass(frozen=True)
class Planted:
    family: str
    kind: str
    text: str
    values: tuple[str, ...]  # the planted entities, each a substring of text


def _plant(family: str, rng: np.random.Generator, host: str) -> Planted:
    first, last = _first(rng), _last(rng)
    full = f"{first} {last}"
    person = lambda template, value: Planted(family, PERSON, template.format(v=value, host=host), (value,))  # noqa: E731
    address = lambda template, value: Planted(family, ADDRESS, template.format(v=value, host=host), (value,))  # noqa: E731
    pick = int(rng.integers(8))
    if family == "self_introduction":
        templates = ["my name is {v} . {host}", "Hi, I'm {v} and {host}", "This is {v} from the billing team. {host}",
                     "I am {v}. {host}", "Name: {v}\n{host}", "My name is {v}, {host}", "{host} - call me {v}.",
                     "hello my name's {v} and {host}"]
        value = first if pick in (6,) else full
        if pick == 0 and rng.random() < 0.5:
            value = full.lower()
        return person(templates[pick], value)
    if family == "signature":
        templates = ["{host}\n\nThanks,\n{v}", "{host} Best regards, {v}", "{host}\nCheers,\n{v}", "{host}\n-- {v}",
                     "{host} Sincerely, {v}.", "{host}\n\nKind regards\n{v}", "{host} thanks! {v}", "{host}\n{v}"]
        return person(templates[pick], first if pick in (2, 3, 6) else full)
    if family == "greeting":
        templates = ["Hi {v}, {host}", "Dear Mr. {v}, {host}", "Hello {v}! {host}", "Dear {v},\n{host}",
                     "Hey {v}, {host}", "Good morning {v}, {host}", "Attn: {v}\n{host}", "Hi {v}:\n{host}"]
        return person(templates[pick], last if pick == 1 else (full if pick in (3, 6) else first))
    if family == "relation":
        templates = ["my colleague {v} says {host}", "Dr. {v} told me {host}", "my wife {v} asked: {host}",
                     "my friend named {v} wants to know: {host}", "{host} ask Ms. {v} for details",
                     "my manager {v} wrote {host}", "my neighbor {v} uses this. {host}", "Prof. {v} says {host}"]
        return person(templates[pick], last if pick in (1, 4, 7) else full)
    if family == "address_statement":
        templates = ["my address is {v}. {host}", "My shipping address: {v}\n{host}", "I live at {v}. {host}",
                     "{host} my home address is {v}", "Address: {v}\n{host}", "my address is {v} and {host}",
                     "{host} our mailing address is {v}.", "we live at {v}, {host}"]
        return address(templates[pick], _full_address(rng))
    if family == "ship_to":
        templates = ["Please ship it to {v}. {host}", "ship it to {v} {host}", "send the invoice to {v}. {host}",
                     "{host} deliver to {v}", "can you mail it to {v}? {host}", "I live on {v}. {host}",
                     "{host} the shop on {v} sold it", "{host} P.O. Box {v}"]
        if pick == 7:
            box = f"P.O. Box {_number(rng)}"
            return Planted(family, ADDRESS, f"{host} {box}", (box,))
        if pick in (1, 5, 6):
            value = f"{_syllables(rng, 2).capitalize()} {rng.choice(['Avenue', 'Street', 'Road', 'Lane'])}"
        else:
            value = _full_address(rng)
        return address(templates[pick], value)
    if family == "european_address":
        city, number = _city(rng), _number(rng)[:3]
        street = _syllables(rng, 2).capitalize()
        values = [f"{street}straße {number}, {int(rng.integers(10000, 99999))} {city}", f"Rue {street} {number}",
                  f"Via {street} {number}, {city}", f"{street}weg {number}"]
        return address("{host} my address is now {v}", values[pick % 4]) if pick < 4 else \
            address("{host} send it to {v}", values[pick % 4])
    if family == "untargeted_forms":  # real ways to write a name the recognizers were not written for
        templates = ["It's {v} here, {host}", "{v} here - {host}", "{host}\nYours,\n{v}", "{host} - {v}",
                     "{host} Regards from {v}", "{host} Tx, {v}", "{host} You can reach {v} at the front desk.",
                     "{host} I'm {v}, by the way."]
        return person(templates[pick], first if pick in (0, 1, 3, 5) else full)
    templates = ["{v} said the answer was wrong. {host}", "{host} according to {v}", "ask {v} about it. {host}",
                 "{host} ({v} disagrees)"]
    return person(templates[pick % 4], full)


FAMILIES = ("self_introduction", "signature", "greeting", "relation", "address_statement", "ship_to",
            "european_address", "untargeted_forms", "no_context")
_HARD_NEGATIVES = (
    "This is {p} code that fails.", "I am using {p} 11 and it crashes.", "Thanks, {p} works now.",
    "Hi there, the answer about {p} is wrong.", "Hello World! {host}", "Best practices for {p}?",
    "I'm new to {p}. {host}", "Dear Support Team, {host}", "Call me when {p} is fixed.", "Send it to the printer.",
    "My address book in {p} is empty.", "{host}\nThanks!", "The {p} docs say otherwise. {host}",
    "I live in a small town and {host}", "Thanks for the help with {p}!", "{host} Cheers!",
    "I am Not sure this is right.", "Hi All, {host}", "Hello Team, any update?", "Thanks Again!",
    "{host}\nBest Regards",
    "This is Urgent. {host}", "I'm Done.", "I am Canadian and {host}", "Thanks, Microsoft.", "Dear Customer Support,",
    "Hey Google, set a timer.", "Dear Sir or Madam, {host}", "Call me Maybe is stuck in my head.", "This is Sparta!",
    "{host} Good Morning!", "My Name Is an app I use.", "{p} is what I am using.", "I'm on {p} 3.12.",
)


def build(count: int, seed: int) -> tuple[list[Planted], list[str]]:
    """`count` planted texts (families in rotation) and as many negatives."""
    hosts = list(World(WorldConfig(num_prompts=200), seed=seed).corpus(samples_per_prompt=2))
    rng = np.random.default_rng(seed)
    planted = [_plant(FAMILIES[i % len(FAMILIES)], rng, hosts[int(rng.integers(len(hosts)))]) for i in range(count)]
    negatives = []
    for i in range(count):
        host = hosts[int(rng.integers(len(hosts)))]
        if i % 2:
            negatives.append(host)
        else:
            template = _HARD_NEGATIVES[int(rng.integers(len(_HARD_NEGATIVES)))]
            negatives.append(template.format(p=rng.choice(_PRODUCTS), host=host))
    return planted, negatives


_PLACEHOLDER = re.compile(r"<(PERSON|ADDRESS)>")


def masked_spans(original: str, masked: str) -> list[tuple[int, int, str]]:
    """(start, end, kind) of the original text replaced by a <PERSON> or <ADDRESS> placeholder."""
    spans = []
    matcher = difflib.SequenceMatcher(None, original, masked, autojunk=False)
    for tag, a0, a1, b0, b1 in matcher.get_opcodes():
        if tag == "replace" and (found := _PLACEHOLDER.search(masked[b0:b1])):
            spans.append((a0, a1, found.group(1).lower()))
    return spans


def _caught(value: str, masked: str) -> bool:
    """No word of 3+ characters of the planted value is left in the masked text."""
    return all(re.search(rf"(?<!\w){re.escape(word)}(?!\w)", masked) is None for word in re.findall(r"\w{3,}", value))


def evaluate(masker: PiiMasker, planted: list[Planted], negatives: list[str]) -> dict:
    per_family: dict[str, list[int]] = {f: [0, 0] for f in FAMILIES}
    per_kind: dict[str, list[int]] = {PERSON: [0, 0, 0, 0], ADDRESS: [0, 0, 0, 0]}  # caught, planted, tp, spans
    true_spans = false_spans = 0
    for item in planted:
        masked, _ = masker.mask(item.text)
        caught = all(_caught(value, masked) for value in item.values)
        per_family[item.family][0] += caught
        per_family[item.family][1] += 1
        per_kind[item.kind][0] += caught
        per_kind[item.kind][1] += 1
        where = [(item.text.index(v), item.text.index(v) + len(v)) for v in item.values]
        for start, end, kind in masked_spans(item.text, masked):
            hit = any(start < b and a < end for a, b in where)
            true_spans += hit
            false_spans += not hit
            per_kind[kind][2] += hit
            per_kind[kind][3] += 1
    negative_spans = 0
    for text in negatives:
        masked, _ = masker.mask(text)
        for _, _, kind in masked_spans(text, masked):
            negative_spans += 1
            per_kind[kind][3] += 1
    spans = true_spans + false_spans + negative_spans
    caught = sum(c for c, _ in per_family.values())
    context = [f for f in FAMILIES if f != "no_context"]
    return {
        "recall": round(caught / len(planted), 4),
        "recall_with_context": round(sum(per_family[f][0] for f in context) / sum(per_family[f][1] for f in context),
                                     4),
        "precision": round(true_spans / spans, 4) if spans else None,
        "false_spans_in_negatives": negative_spans,
        "negatives": len(negatives),
        "recall_by_family": {f: round(c / n, 4) for f, (c, n) in per_family.items()},
        "by_kind": {k: {"recall": round(c / n, 4), "precision": round(tp / s, 4) if s else None}
                    for k, (c, n, tp, s) in per_kind.items()},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--texts", type=int, default=4000, help="planted texts (and as many negatives)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--ner-model", default=None, help="a local NER model folder to evaluate as well")
    args = parser.parse_args()
    planted, negatives = build(args.texts, args.seed)
    started = time.perf_counter()
    figures = evaluate(PiiMasker(), planted, negatives)
    result = {"benchmark": "pii_recall", "planted": len(planted), **figures,
              "seconds": round(time.perf_counter() - started, 2)}
    if args.ner_model:
        result["with_ner"] = evaluate(PiiMasker(ner=NerModel(args.ner_model)), planted, negatives)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
