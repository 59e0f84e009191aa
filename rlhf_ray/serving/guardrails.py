"""Online figures per variant and the guardrails that roll a canary back.

The router reports what happened (requests, errors, latencies, safety flags, accept judgments); a
`VariantStats` keeps totals for the status endpoint and a sliding window of the most recent requests for
the guardrails, so a canary that starts failing after an hour of good service is caught within one window
instead of being averaged away by the good hour. Checks run on every report, never only at the end.

    error rate        = errors in window / requests in window
    p95 latency       = 95th percentile (nearest rank) of the window's latencies
    safety-flag rate  = safety flags in window / requests in window
    breach            ⇔ requests in window ≥ min_requests and a figure > its bound
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class GuardrailBounds:
    max_error_rate: float = 0.05
    max_p95_latency_s: float = 5.0
    max_safety_flag_rate: float = 0.05
    min_requests: int = 20
    window: int = 200

    def __post_init__(self) -> None:
        if self.min_requests < 1 or self.window < self.min_requests:
            raise ValueError(f"guardrails need 1 ≤ min_requests ≤ window; got min_requests={self.min_requests}, "
                             f"window={self.window}")


@dataclass(frozen=True)
class Breach:
    metric: str
    value: float
    bound: float

    def describe(self) -> str:
        return f"{self.metric} {self.value:.4g} > bound {self.bound:.4g}"


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile: the smallest value with at least q% of values at or below it (0 when empty)."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100.0 * len(ordered)))
    return float(ordered[rank - 1])


@dataclass
class VariantStats:
    """Totals since deployment plus the guardrail window of (error, latency_s, safety_flag) per request."""

    window: int = 200
    requests: int = 0
    errors: int = 0
    safety_flags: int = 0
    thumbs_up: int = 0
    thumbs_down: int = 0
    accepts: int = 0
    trials: int = 0
    feedback: int = 0
    shadow_requests: int = 0
    recent: deque[tuple[bool, float, bool]] = field(default_factory=deque)

    def add_requests(self, events: Iterable[Sequence[Any]]) -> None:
        """Each event is (error, latency_s, safety_flag)."""
        for error, latency, flagged in events:
            self.requests += 1
            self.errors += bool(error)
            self.safety_flags += bool(flagged)
            self.recent.append((bool(error), float(latency), bool(flagged)))
        while len(self.recent) > self.window:
            self.recent.popleft()

    def add_judgment(self, accepted: bool | None, safety_flag: bool = False, thumbs: int | None = None) -> None:
        self.feedback += 1
        if accepted is not None:
            self.trials += 1
            self.accepts += bool(accepted)
        if thumbs is not None:
            self.thumbs_up += thumbs == 1
            self.thumbs_down += thumbs == 0
        if safety_flag:
            self.safety_flags += 1
            # a flag arriving by feedback counts against the window as a flagged (zero-latency) event
            self.recent.append((False, 0.0, True))
            while len(self.recent) > self.window:
                self.recent.popleft()

    def window_figures(self) -> dict[str, float]:
        n = len(self.recent)
        latencies = [latency for _, latency, _ in self.recent if latency > 0]
        return {
            "window_requests": float(n),
            "error_rate": sum(e for e, _, _ in self.recent) / n if n else 0.0,
            "p95_latency_s": percentile(latencies, 95),
            "safety_flag_rate": sum(f for _, _, f in self.recent) / n if n else 0.0,
        }

    def summary(self) -> dict[str, Any]:
        return {"requests": self.requests, "errors": self.errors, "safety_flags": self.safety_flags,
                "thumbs_up": self.thumbs_up, "thumbs_down": self.thumbs_down, "accepted": self.accepts,
                "judged": self.trials, "accept_rate": self.accepts / self.trials if self.trials else None,
                "feedback": self.feedback, "shadow_requests": self.shadow_requests,
                **{k: round(v, 6) for k, v in self.window_figures().items()}}


def check_guardrails(figures: Mapping[str, float], bounds: GuardrailBounds) -> list[Breach]:
    """Every bound the window's figures cross; none before `min_requests` requests are in the window."""
    if figures["window_requests"] < bounds.min_requests:
        return []
    limits = {"error_rate": bounds.max_error_rate, "p95_latency_s": bounds.max_p95_latency_s,
              "safety_flag_rate": bounds.max_safety_flag_rate}
    return [Breach(name, figures[name], bound) for name, bound in limits.items() if figures[name] > bound]


def blocklist_hits(text: str, blocklist: Sequence[str]) -> int:
    """How many blocklisted phrases (case-insensitive, whitespace-folded) an answer contains: the router's
    own safety check on every answer, independent of user flags."""
    folded = " ".join(text.lower().split())
    return sum(folded.count(phrase) for phrase in blocklist if phrase)
