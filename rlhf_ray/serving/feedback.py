"""Feedback on a served answer → one signal-contract row (the rows `rlhf-ray ingest` reads), and what the
feedback says about the variant for online evaluation (accepted or not, safety flag or not).

The row is built from what the server itself recorded about the answer (`ServedResponse`), so a client
cannot attribute feedback to a prompt, answer or policy it never saw; the client only adds its judgment.

    thumbs      → rating (scale thumbs, overall ∈ {0, 1})        accepted ⇔ value = 1
    likert      → rating (scale likert5, overall ∈ 1..5)         accepted ⇔ value ≥ 4
    pairwise    → pairwise (a = response_id, b = other)          the chosen answer's variant wins, the other loses
    correction  → correction (edited_response = text)            not accepted
    flag        → safety_flag (flagged, category, severity)      a safety flag, no accept judgment
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

from rlhf_ray.contracts import SCHEMA_VERSION, SignalType, Source
from rlhf_ray.contracts.validation import validate_row
from rlhf_ray.dataplane.redaction import identifier_pii
from rlhf_ray.governance import PiiMasker
from rlhf_ray.serving.schemas import (
    CorrectionFeedback,
    FlagFeedback,
    LikertFeedback,
    PairwiseFeedback,
    ThumbsFeedback,
)

LIKERT_ACCEPT_AT = 4
# the `segment` of a row whose giver presented no API key: kept for the data, never counted by the canary's test
UNAUTHENTICATED_SEGMENT = "unauthenticated"
FREE_TEXT = ("prompt", "response", "response_a", "response_b", "edited_response", "rationale")
Feedback = ThumbsFeedback | LikertFeedback | PairwiseFeedback | CorrectionFeedback | FlagFeedback


class FeedbackError(ValueError):
    """Feedback that cannot become a contract row; the message names the field and what was expected."""


@dataclass(frozen=True)
class ServedResponse:
    """What the router recorded when it answered: enough to build any feedback row later.

    `actor_id` is already a pseudonym: the raw user id is never stored.
    """

    response_id: str
    variant: str
    policy_id: str
    prompt_id: str
    prompt: str
    response: str
    actor_id: str
    region: str
    session_id: str | None = None
    authenticated: bool = False

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ServedResponse:
        return cls(**data)


@dataclass(frozen=True)
class Outcome:
    """What one feedback event adds to a variant's online figures."""

    variant: str
    accepted: bool | None
    safety_flag: bool = False
    response_id: str = ""


def outcomes(feedback: Feedback, served: ServedResponse, other: ServedResponse | None = None) -> list[Outcome]:
    """The accept/flag judgments a feedback event implies, per variant (see the module doc)."""
    rid = served.response_id
    if isinstance(feedback, ThumbsFeedback):
        return [Outcome(served.variant, feedback.value == 1, response_id=rid)]
    if isinstance(feedback, LikertFeedback):
        return [Outcome(served.variant, feedback.value >= LIKERT_ACCEPT_AT, response_id=rid)]
    if isinstance(feedback, CorrectionFeedback):
        return [Outcome(served.variant, False, response_id=rid)]
    if isinstance(feedback, FlagFeedback):
        return [Outcome(served.variant, None, safety_flag=True, response_id=rid)]
    if other is None or feedback.choice == "tie" or other.variant == served.variant:
        return []  # a tie, or two answers of one variant, says nothing about incumbent vs canary
    winner, loser = (served, other) if feedback.choice == "a" else (other, served)
    return [Outcome(winner.variant, True, response_id=winner.response_id),
            Outcome(loser.variant, False, response_id=loser.response_id)]


def _payload(feedback: Feedback, served: ServedResponse, other: ServedResponse | None) -> dict[str, Any]:
    if isinstance(feedback, ThumbsFeedback | LikertFeedback):
        scale = "thumbs" if isinstance(feedback, ThumbsFeedback) else "likert5"
        return {"signal_type": SignalType.RATING.value, "response": served.response, "scale": scale,
                "scores": [{"criterion": "overall", "score": float(feedback.value)}]}
    if isinstance(feedback, CorrectionFeedback):
        return {"signal_type": SignalType.CORRECTION.value, "response": served.response,
                "edited_response": feedback.text}
    if isinstance(feedback, FlagFeedback):
        return {"signal_type": SignalType.SAFETY_FLAG.value, "response": served.response, "flagged": True,
                "category": feedback.category, "severity": feedback.severity}
    if other is None:
        raise FeedbackError("field 'other_response_id': unknown response, expected the id of an answer "
                            "this server gave")
    if other.prompt_id != served.prompt_id:
        raise FeedbackError(f"field 'other_response_id': answers prompt {other.prompt_id!r}, expected an answer "
                            f"to the same prompt as response_id ({served.prompt_id!r})")
    return {"signal_type": SignalType.PAIRWISE.value, "response_a": served.response,
            "response_b": other.response, "choice": feedback.choice}


def feedback_row(feedback: Feedback, served: ServedResponse, *, signal_id: str, now: datetime, actor_id: str,
                 masker: PiiMasker, other: ServedResponse | None = None,
                 authenticated: bool = True) -> tuple[dict[str, Any], dict[str, int]]:
    """The contract row for `feedback` (PII masked in every free-text field) and the PII counts masked.

    `actor_id` is the pseudonym of whoever gave the feedback; feedback given without an API key is marked
    `segment: unauthenticated`. Raises `FeedbackError` when the row breaks its
    contract or an identifier (e.g. a client's prompt_id) holds PII, naming the field and expectation, exactly
    as ingest would quarantine it.
    """
    row: dict[str, Any] = {
        "signal_id": signal_id,
        "schema_version": SCHEMA_VERSION,
        "event_time": now.isoformat(),
        "source": Source.USER.value,
        "actor_id": actor_id,
        "item_id": served.response_id,
        "session_id": served.session_id,
        "prompt_id": served.prompt_id,
        "prompt": served.prompt,
        "policy_version": served.policy_id,
        "region": served.region,
        "segment": None if authenticated else UNAUTHENTICATED_SEGMENT,
        "rationale": feedback.rationale,
        **_payload(feedback, served, other),
    }
    row = {key: value for key, value in row.items() if value is not None}
    counts: dict[str, int] = {}
    for name in FREE_TEXT:
        if isinstance(row.get(name), str):
            row[name], found = masker.mask(row[name])
            for kind, count in found.items():
                counts[kind] = counts.get(kind, 0) + count
    rejection = validate_row(row, now) or identifier_pii(row, masker)
    if rejection is not None:
        raise FeedbackError(rejection.detail)
    return row, counts
