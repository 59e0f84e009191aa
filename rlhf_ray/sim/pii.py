"""Planted personal data: what users really paste into chats, for the data plane to catch.

Every planted value is recorded (kind + value) so tests can prove none survives ingest.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

_FIRST = ("alex", "maria", "wei", "fatima", "john", "sofia", "liam", "aiko")
_LAST = ("smith", "garcia", "chen", "khan", "doe", "rossi", "murphy", "tanaka")
_DOMAINS = ("example.com", "mail.test", "corp.example.org", "inbox.test")


def _digits(rng: np.random.Generator, count: int) -> str:
    return "".join(str(int(d)) for d in rng.integers(0, 10, size=count))


def luhn_check_digit(payload: str) -> str:
    """The digit that makes `payload + digit` pass the Luhn checksum (double every second digit from the right)."""
    total = 0
    for position, char in enumerate(reversed(payload)):
        digit = int(char)
        if position % 2 == 0:
            digit *= 2
            digit -= 9 if digit > 9 else 0
        total += digit
    return str((10 - total % 10) % 10)


def _email(rng: np.random.Generator) -> str:
    return f"{rng.choice(_FIRST)}.{rng.choice(_LAST)}{int(rng.integers(1, 99))}@{rng.choice(_DOMAINS)}"


def _phone(rng: np.random.Generator) -> str:
    area, mid, tail = int(rng.integers(201, 989)), int(rng.integers(200, 999)), _digits(rng, 4)
    style = int(rng.integers(3))
    if style == 0:
        return f"({area}) {mid}-{tail}"
    if style == 1:
        return f"+1 {area}-{mid}-{tail}"
    return f"+44 20 {_digits(rng, 4)} {tail}"


def _card(rng: np.random.Generator) -> str:
    prefix = str(rng.choice(["4", "51", "55", "22"]))
    payload = prefix + _digits(rng, 15 - len(prefix))
    number = payload + luhn_check_digit(payload)
    separator = str(rng.choice([" ", "-", ""]))
    return separator.join(number[i : i + 4] for i in range(0, 16, 4))


def _ipv4(rng: np.random.Generator) -> str:
    return ".".join(str(int(x)) for x in [rng.integers(11, 223), *rng.integers(0, 256, size=3)])


def _ipv6(rng: np.random.Generator) -> str:
    return ":".join(f"{int(x):x}" for x in [0x2001, 0xDB8, *rng.integers(0, 0xFFFF, size=6)])


def _national_id(rng: np.random.Generator) -> str:
    return f"{int(rng.integers(100, 899)):03d}-{int(rng.integers(10, 99)):02d}-{int(rng.integers(1000, 9999)):04d}"


PII_GENERATORS: dict[str, tuple[Callable[[np.random.Generator], str], str]] = {
    "email": (_email, "my email is {value} ."),
    "phone": (_phone, "call me at {value} ."),
    "card": (_card, "my card number is {value} ."),
    "ipv4": (_ipv4, "my ip address is {value} ."),
    "ipv6": (_ipv6, "the router shows {value} ."),
    "national_id": (_national_id, "my ssn is {value} ."),
}


def plant_pii(text: str, rng: np.random.Generator) -> tuple[str, str, str]:
    """Append a sentence carrying one PII value; returns (new text, kind, value)."""
    kind = str(rng.choice(list(PII_GENERATORS)))
    generate, sentence = PII_GENERATORS[kind]
    value = generate(rng)
    return f"{text} {sentence.format(value=value)}", kind, value
