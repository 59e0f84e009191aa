"""Per-stage wall time, reported as `timing/<stage>` figures (the name every job and dashboard uses)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

TIMING_PREFIX = "timing/"


class StageTimer:
    """Seconds per named stage; a stage entered again adds to its total.

        with timer.stage("generate"):
            ...
        sink.log({**figures, **timer.figures()})
    """

    def __init__(self) -> None:
        self._seconds: dict[str, float] = {}

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        if not isinstance(name, str) or not name or "/" in name:
            raise ValueError(f"stage name must be a non-empty string without '/'; got {name!r}")
        started = time.perf_counter()
        try:
            yield
        finally:
            self._seconds[name] = self._seconds.get(name, 0.0) + time.perf_counter() - started

    def figures(self) -> dict[str, float]:
        return {f"{TIMING_PREFIX}{name}": round(seconds, 4) for name, seconds in self._seconds.items()}
