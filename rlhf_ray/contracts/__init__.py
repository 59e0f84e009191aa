"""Typed contracts for every feedback signal (see `schemas`)."""

from rlhf_ray.contracts.schemas import (
    ENVELOPE,
    FREE_TEXT_FIELDS,
    MAX_RANKED_RESPONSES,
    MAX_TEXT_CHARS,
    RUBRIC_CRITERIA,
    SCALE_BOUNDS,
    SCHEMA_VERSION,
    SIGNAL_SCHEMAS,
    ImplicitEvent,
    PairwiseChoice,
    RatingScale,
    SafetyCategory,
    SignalType,
    Source,
    schema_for,
)

__all__ = [
    "ENVELOPE",
    "FREE_TEXT_FIELDS",
    "MAX_RANKED_RESPONSES",
    "MAX_TEXT_CHARS",
    "RUBRIC_CRITERIA",
    "SCALE_BOUNDS",
    "SCHEMA_VERSION",
    "SIGNAL_SCHEMAS",
    "ImplicitEvent",
    "PairwiseChoice",
    "RatingScale",
    "SafetyCategory",
    "SignalType",
    "Source",
    "schema_for",
]
