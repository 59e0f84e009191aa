"""The Pareto front of a set of points under several objectives, some maximised and some minimised."""

from __future__ import annotations

from collections.abc import Sequence


def pareto_front(points: Sequence[Sequence[float]], maximize: Sequence[bool]) -> list[int]:
    """Indices of the non-dominated points, in input order.

    With every objective written as a gain g_k (g = x for a maximised objective, −x for a minimised one),
    p dominates q when g_k(p) ≥ g_k(q) for all k and g_k(p) > g_k(q) for some k; the front is the set of
    points no other point dominates. Exact ties are all kept. O(n² k), fine for a sweep's trials.
    """
    if any(len(point) != len(maximize) for point in points):
        raise ValueError(f"every point needs {len(maximize)} coordinates (one per objective)")
    gains = [[value if up else -value for value, up in zip(point, maximize, strict=True)] for point in points]

    def dominates(p: list[float], q: list[float]) -> bool:
        return all(a >= b for a, b in zip(p, q, strict=True)) and any(a > b for a, b in zip(p, q, strict=True))

    return [i for i, q in enumerate(gains) if not any(dominates(p, q) for j, p in enumerate(gains) if j != i)]
