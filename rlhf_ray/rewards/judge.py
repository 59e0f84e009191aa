"""The LLM judge's prompt and the parser of its verdict."""

from __future__ import annotations

import re

JUDGE_RUBRIC = ("Rate how well the answer helps with the request: correct, complete, concise and safe. "
                "Reply with only a score from {low:g} to {high:g}, written as 'Score: N'.")
_NUMBER = r"[-+]?\d+(?:\.\d+)?"
_LABELLED = re.compile(rf"(?:score|rating)\s*[:=]?\s*({_NUMBER})(?:\s*/\s*({_NUMBER}))?", re.IGNORECASE)
_BARE = re.compile(rf"(?<![\w.])({_NUMBER})(?:\s*/\s*({_NUMBER}))?")


def judge_prompt(rubric: str, prompt: str, response: str, low: float, high: float) -> str:
    """The user turn the judge answers: the rubric (its {low}/{high} filled in), the request and the answer."""
    return (f"{rubric.format(low=low, high=high)}\n\n[Request]\n{prompt}\n\n[Answer]\n{response}\n\n"
            "[Your score]")


def parse_score(text: str, low: float, high: float) -> float | None:
    """The judge's score, or None when it gave none inside [low, high].

    A labelled number ('Score: 7', 'rating = 7/10') wins over a bare one; the first bare number counts otherwise.
    'N/M' with M ≠ high is rescaled: s = low + (N / M) · (high − low).
    """
    match = _LABELLED.search(text) or _BARE.search(text)
    if match is None:
        return None
    value = float(match.group(1))
    if match.group(2) is not None:
        out_of = float(match.group(2))
        if out_of <= 0:
            return None
        if out_of != high:
            value = low + value / out_of * (high - low)
    return value if low <= value <= high else None
