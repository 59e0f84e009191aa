"""Combining reward sources, and retrying a failing one."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from typing import TypeVar

T = TypeVar("T")


class SourceFailedError(RuntimeError):
    """A reward source failed on every try: the step fails, naming the source."""


def combine_scores(scores: Mapping[str, Sequence[float]], weights: Mapping[str, float]) -> list[float]:
    """The combined reward of each response b over sources k:

        r[b] = Σ_k w_k · s_k[b]

    Every source must score every response with a finite number.
    """
    if not scores:
        raise ValueError("combine_scores needs at least one source; got none")
    if missing := sorted(set(scores) - set(weights)):
        raise ValueError(f"no weight for source {missing[0]!r}")
    lengths = {name: len(values) for name, values in scores.items()}
    if len(set(lengths.values())) != 1:
        raise ValueError(f"every source must score every response; got lengths {lengths}")
    for name, values in scores.items():
        if bad := [v for v in values if not isinstance(v, int | float) or not math.isfinite(v)]:
            raise ValueError(f"source {name!r} returned a non-finite or non-numeric score {bad[0]!r}")
    size = next(iter(lengths.values()))
    return [math.fsum(weights[name] * float(scores[name][b]) for name in scores) for b in range(size)]


def with_retries(name: str, call: Callable[[], T], retries: int, backoff_s: float = 0.5) -> tuple[T, int]:
    """`call()` tried 1 + `retries` times, waiting backoff_s · 2^attempt between tries; returns the result and
    the number of failed tries. After the last failure raises `SourceFailedError` naming the source."""
    if retries < 0:
        raise ValueError(f"retries must be ≥ 0; got {retries!r}")
    failures = 0
    while True:
        try:
            return call(), failures
        except Exception as error:  # any failure of a source is retried, then reported
            failures += 1
            if failures > retries:
                raise SourceFailedError(f"reward source {name!r} failed {failures} time(s); last error: "
                                        f"{type(error).__name__}: {error}") from error
            time.sleep(backoff_s * 2 ** (failures - 1))
