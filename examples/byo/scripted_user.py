"""The scripted user who judges the bring-your-own example's canary traffic (`canary.traffic.feedback`).

It stands for the customers of the example's fictional notes app, Tally, who give a thumb up to a short, direct
answer and a thumb down to a long or boilerplate one. Replace it with your own judgement: any
`package.module:function(request, response, meta)` returning True/False (thumbs), an int 1–5 (Likert), a feedback
body, or None (no feedback). See `rlhf_ray/serving/replay.py`.
"""

from __future__ import annotations

from typing import Any

MAX_WORDS = 40
BOILERPLATE = ("thank you", "hope this helps", "great question", "don't hesitate", "wonderful day", "always here")


def thumbs(request: dict[str, Any], response: str, meta: dict[str, Any]) -> bool:
    """Up for an answer of at most `MAX_WORDS` words with none of the boilerplate customers dislike."""
    text = response.lower()
    return 0 < len(text.split()) <= MAX_WORDS and not any(phrase in text for phrase in BOILERPLATE)
