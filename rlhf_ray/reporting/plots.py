"""Report plots as PNG bytes (matplotlib's object API with the Agg canvas: no display, no global pyplot state)."""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

DPI = 96
PALETTE = ("#2f6fdb", "#d9622b", "#2a9d5c", "#8e44ad", "#c0392b", "#7f8c8d")


@dataclass
class Panel:
    """One axes: named series of (x, y) points; `markers` draws points instead of lines (sparse evaluations)."""

    title: str
    ylabel: str
    series: dict[str, tuple[Sequence[float], Sequence[float]]] = field(default_factory=dict)
    markers: frozenset[str] = frozenset()
    xlabel: str = "iteration"


def _png(figure: Any) -> bytes:
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=DPI)
    return buffer.getvalue()


def _figure(width: float, height: float) -> Any:
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height))


def panels(items: Sequence[Panel], columns: int = 2) -> bytes:
    """A grid of line panels."""
    rows = (len(items) + columns - 1) // columns
    figure = _figure(5.6 * columns, 3.4 * rows)
    for index, item in enumerate(items, start=1):
        axis = figure.add_subplot(rows, columns, index)
        for number, (label, (xs, ys)) in enumerate(item.series.items()):
            style = {"marker": "o", "linestyle": "--"} if label in item.markers else {}
            axis.plot(list(xs), list(ys), label=label, color=PALETTE[number % len(PALETTE)], **style)
        axis.set(title=item.title, xlabel=item.xlabel, ylabel=item.ylabel)
        axis.grid(alpha=0.3)
        if len(item.series) > 1:
            axis.legend(fontsize=8)
    return _png(figure)


def bars(values: Mapping[str, float], title: str, ylabel: str, threshold: float | None = None,
         alerts: Sequence[str] = ()) -> bytes:
    """Horizontal bars, one per label; `alerts` in red, a dashed line at `threshold`."""
    labels = list(values)
    figure = _figure(8.0, 0.9 + 0.38 * max(1, len(labels)))
    axis = figure.add_subplot(1, 1, 1)
    colors = [PALETTE[4] if label in alerts else PALETTE[0] for label in labels]
    axis.barh(labels, [values[label] for label in labels], color=colors)
    if threshold is not None:
        axis.axvline(threshold, color="#444", linestyle="--", linewidth=1, label=f"alert > {threshold:g}")
        axis.legend(fontsize=8)
    axis.invert_yaxis()
    axis.set(title=title, xlabel=ylabel)
    axis.grid(axis="x", alpha=0.3)
    return _png(figure)


def grouped_bars(groups: Mapping[str, Mapping[str, float]], title: str, ylabel: str) -> bytes:
    """Vertical bars: one group per outer key, one bar per inner key (e.g. κ and α per guideline version)."""
    import numpy as np

    names = list(groups)
    series = list(dict.fromkeys(key for inner in groups.values() for key in inner))
    figure = _figure(max(6.0, 0.9 * len(names) + 2), 3.6)
    axis = figure.add_subplot(1, 1, 1)
    width = 0.8 / max(1, len(series))
    for number, key in enumerate(series):
        heights = [groups[name].get(key) or 0.0 for name in names]
        axis.bar(np.arange(len(names)) + number * width, heights, width, label=key, color=PALETTE[number % 6])
    axis.set_xticks(np.arange(len(names)) + width * (len(series) - 1) / 2, names, rotation=30, ha="right")
    axis.set(title=title, ylabel=ylabel)
    axis.legend(fontsize=8)
    axis.grid(axis="y", alpha=0.3)
    return _png(figure)


def steps(xs: Sequence[float], ys: Sequence[float], title: str, xlabel: str, ylabel: str,
          events: Sequence[tuple[float, str]] = ()) -> bytes:
    """A step line (a setting held until changed), with labelled vertical marks for events."""
    figure = _figure(8.0, 3.2)
    axis = figure.add_subplot(1, 1, 1)
    axis.step(list(xs), list(ys), where="post", color=PALETTE[0], marker="o")
    for at, label in events:
        axis.axvline(at, color=PALETTE[4], linestyle=":", linewidth=1)
        axis.annotate(label, (at, max(ys) if ys else 1.0), fontsize=8, rotation=90, va="top", ha="right")
    axis.set(title=title, xlabel=xlabel, ylabel=ylabel)
    axis.grid(alpha=0.3)
    return _png(figure)


def scatter(points: Sequence[tuple[float, float]], flagged: Sequence[bool], title: str, xlabel: str,
            ylabel: str) -> bytes:
    """Points, flagged ones in red."""
    figure = _figure(6.0, 3.8)
    axis = figure.add_subplot(1, 1, 1)
    axis.scatter([p[0] for p in points], [p[1] for p in points], s=28,
                 c=[PALETTE[4] if f else PALETTE[0] for f in flagged])
    axis.set(title=title, xlabel=xlabel, ylabel=ylabel)
    axis.grid(alpha=0.3)
    return _png(figure)
