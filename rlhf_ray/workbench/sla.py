"""Labeling SLAs: every task is due a fixed number of hours after it was created (by source); the report
counts open tasks by age, breaches (open past due, or completed late) and time to completion."""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

AGE_BUCKETS: tuple[tuple[float, str], ...] = ((1.0, "<1h"), (4.0, "1-4h"), (24.0, "4-24h"), (72.0, "1-3d"),
                                              (math.inf, ">3d"))


@dataclass(frozen=True)
class TaskTimes:
    created_at: float
    due_at: float
    completed_at: float | None  # None while open


def age_bucket(hours: float) -> str:
    return next(name for limit, name in AGE_BUCKETS if hours < limit)


def _percentile(values: list[float], q: float) -> float | None:
    return round(float(np.percentile(values, q)), 1) if values else None


def sla_report(tasks: Iterable[TaskTimes], now: float) -> dict[str, object]:
    """Open tasks by age, open past due, completed late vs on time, p50/p90 seconds to complete."""
    by_age = {name: 0 for _, name in AGE_BUCKETS}
    open_overdue = due_24h = late = on_time = 0
    durations: list[float] = []
    for task in tasks:
        if task.completed_at is None:
            by_age[age_bucket((now - task.created_at) / 3600.0)] += 1
            open_overdue += now > task.due_at
            due_24h += now <= task.due_at <= now + 86_400.0
        else:
            durations.append(task.completed_at - task.created_at)
            late += task.completed_at > task.due_at
            on_time += task.completed_at <= task.due_at
    return {"open_by_age": by_age, "open_overdue": open_overdue, "open_due_within_24h": due_24h,
            "completed_late": late, "completed_on_time": on_time,
            "breaches": open_overdue + late,
            "seconds_to_complete": {"p50": _percentile(durations, 50), "p90": _percentile(durations, 90)}}
