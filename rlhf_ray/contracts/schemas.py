"""Signal contracts: one versioned Arrow schema per feedback signal type.

Every row shares an envelope (who said what, about which prompt and model version, where, when, how
sure) and adds the fields of its signal type. The world writes these schemas; ingest validates
against them. A change that is not backward compatible bumps `SCHEMA_VERSION`.
"""

from __future__ import annotations

from enum import Enum

import pyarrow as pa

SCHEMA_VERSION = "1.0"


class SignalType(str, Enum):
    PAIRWISE = "pairwise"
    RANKING = "ranking"
    RATING = "rating"
    CORRECTION = "correction"
    IMPLICIT = "implicit"
    SAFETY_FLAG = "safety_flag"
    TASK_SUCCESS = "task_success"


class Source(str, Enum):
    USER = "user"
    ANNOTATOR = "annotator"
    EVALUATOR = "evaluator"


class PairwiseChoice(str, Enum):
    A = "a"
    B = "b"
    TIE = "tie"


class RatingScale(str, Enum):
    """Thumbs is 0/1, Likert and rubric criteria are 1..5."""

    THUMBS = "thumbs"
    LIKERT5 = "likert5"
    RUBRIC5 = "rubric5"


class ImplicitEvent(str, Enum):
    RETRY = "retry"
    COPY = "copy"
    DWELL = "dwell"


class SafetyCategory(str, Enum):
    HARMFUL_INSTRUCTIONS = "harmful_instructions"
    PRIVACY = "privacy"
    HARASSMENT = "harassment"
    NONE = "none"


RUBRIC_CRITERIA: tuple[str, ...] = ("helpfulness", "correctness", "safety", "concision")
SCALE_BOUNDS: dict[RatingScale, tuple[float, float]] = {
    RatingScale.THUMBS: (0.0, 1.0),
    RatingScale.LIKERT5: (1.0, 5.0),
    RatingScale.RUBRIC5: (1.0, 5.0),
}
MAX_TEXT_CHARS = 8_000
MAX_RANKED_RESPONSES = 8

EVENT_TIME_TYPE = pa.timestamp("ms", tz="UTC")

ENVELOPE = pa.schema(
    [
        pa.field("signal_id", pa.string(), nullable=False),
        pa.field("signal_type", pa.string(), nullable=False),
        pa.field("schema_version", pa.string(), nullable=False),
        pa.field("event_time", EVENT_TIME_TYPE, nullable=False),
        pa.field("source", pa.string(), nullable=False),
        pa.field("actor_id", pa.string(), nullable=False),
        pa.field("item_id", pa.string()),
        pa.field("session_id", pa.string()),
        pa.field("session_position", pa.int32()),
        pa.field("prompt_id", pa.string(), nullable=False),
        pa.field("prompt", pa.string(), nullable=False),
        pa.field("topic", pa.string()),
        pa.field("segment", pa.string()),
        pa.field("policy_version", pa.string(), nullable=False),
        pa.field("guideline_version", pa.string()),
        pa.field("region", pa.string(), nullable=False),
        pa.field("confidence", pa.float64()),
    ]
)

SCORE_STRUCT = pa.struct([pa.field("criterion", pa.string()), pa.field("score", pa.float64())])

_PAYLOADS: dict[SignalType, list[pa.Field]] = {
    SignalType.PAIRWISE: [
        pa.field("response_a", pa.string(), nullable=False),
        pa.field("response_b", pa.string(), nullable=False),
        pa.field("choice", pa.string(), nullable=False),
        pa.field("rationale", pa.string()),
    ],
    SignalType.RANKING: [
        pa.field("responses", pa.list_(pa.string()), nullable=False),
        pa.field("ranking", pa.list_(pa.int32()), nullable=False),
        pa.field("rationale", pa.string()),
    ],
    SignalType.RATING: [
        pa.field("response", pa.string(), nullable=False),
        pa.field("scale", pa.string(), nullable=False),
        pa.field("scores", pa.list_(SCORE_STRUCT), nullable=False),
        pa.field("rationale", pa.string()),
    ],
    SignalType.CORRECTION: [
        pa.field("response", pa.string(), nullable=False),
        pa.field("edited_response", pa.string(), nullable=False),
        pa.field("rationale", pa.string()),
    ],
    SignalType.IMPLICIT: [
        pa.field("response", pa.string(), nullable=False),
        pa.field("event", pa.string(), nullable=False),
        pa.field("value", pa.float64(), nullable=False),
    ],
    SignalType.SAFETY_FLAG: [
        pa.field("response", pa.string(), nullable=False),
        pa.field("flagged", pa.bool_(), nullable=False),
        pa.field("category", pa.string(), nullable=False),
        pa.field("severity", pa.int32()),
        pa.field("rationale", pa.string()),
    ],
    SignalType.TASK_SUCCESS: [
        pa.field("response", pa.string(), nullable=False),
        pa.field("success", pa.bool_(), nullable=False),
    ],
}

SIGNAL_SCHEMAS: dict[SignalType, pa.Schema] = {
    kind: pa.schema([*ENVELOPE, *fields], metadata={"schema_version": SCHEMA_VERSION, "signal_type": kind.value})
    for kind, fields in _PAYLOADS.items()
}

FREE_TEXT_FIELDS: tuple[str, ...] = (
    "prompt",
    "response",
    "response_a",
    "response_b",
    "responses",
    "edited_response",
    "rationale",
)
# Short free labels: they can hold user text too, so they are masked like the free text.
LABEL_FIELDS: tuple[str, ...] = ("topic", "segment")
MASKED_FIELDS: tuple[str, ...] = (*FREE_TEXT_FIELDS, *LABEL_FIELDS)
# Raw user/annotator/session ids: kept joinable through keyed pseudonyms, never stored as they are.
PSEUDONYMIZED_FIELDS: tuple[str, ...] = ("actor_id", "session_id")
# Ids of rows, items, prompts and versions: must look like ids (`IDENTIFIER_PATTERN`), never free text.
IDENTIFIER_FIELDS: tuple[str, ...] = ("signal_id", "item_id", "prompt_id", "policy_version", "guideline_version")
IDENTIFIER_PATTERN = r"[A-Za-z0-9][A-Za-z0-9._:/+=-]*"
MAX_IDENTIFIER_CHARS = 128


def schema_for(signal_type: SignalType | str) -> pa.Schema:
    """The Arrow schema of a signal type; a clear error for an unknown type."""
    try:
        return SIGNAL_SCHEMAS[SignalType(signal_type)]
    except ValueError:
        valid = ", ".join(t.value for t in SignalType)
        raise ValueError(f"signal_type {signal_type!r} is not a known signal type; expected one of {valid}") from None
