"""The scripted user who judges the bring-your-own example's canary traffic (`canary.traffic.feedback`).

It stands for the customers of the example's fictional notes app, Tally: a thumb up when the answer names the
feature they asked about (the traffic row's `expect` field, which only this function sees) in a short, direct
answer; a thumb down for a long, boilerplate or off-topic one. Replace it with your own judgement: any
`package.module:function(request, response, meta)` returning True/False (thumbs), an int 1–5 (Likert), a feedback
body, or None (no feedback). See `rlhf_ray/serving/replay.py`.
"""

from __future__ import annotations

from typing import Any

MAX_WORDS = 40
BOILERPLATE = ("thank you", "hope this helps", "great question", "don't hesitate", "wonderful day", "always here")


def thumbs(request: dict[str, Any], response: str, meta: dict[str, Any]) -> bool:
    """Up for an answer of at most `MAX_WORDS` words that mentions `request["expect"]` and none of the
    boilerplate customers dislike."""
    text = response.lower()
    on_topic = request.get("expect", "").lower() in text
    return on_topic and 0 < len(text.split()) <= MAX_WORDS and not any(phrase in text for phrase in BOILERPLATE)
