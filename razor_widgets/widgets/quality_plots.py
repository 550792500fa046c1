"""The Quality section's figures: score against MACs (or latency) with the Pareto front, and scan curves."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from .figures import figure_png, new_figure

SOURCES = {"evaluated": ("#3b6ea8", "o", 28), "live": ("#7aa6d8", "o", 18), "scan": ("#b8b8b8", ".", 16),
           "candidate": ("#9c6ade", "x", 22), "budget": ("#2e7d32", "*", 70)}


@dataclass(frozen=True)
class ScorePoint:
    """One evaluated choice set: its MACs (percent of the original), score and origin."""

    macs_percent: float
    score: float
    source: str  # "evaluated", "live", "scan", "candidate" (of a measured budget) or "budget"
    label: str = ""
    latency_ms: float | None = None  # predicted latency (a latency table existed when it was scored)


def pareto_front(points: list[ScorePoint], x: str = "macs_percent") -> list[ScorePoint]:
    """The points no other point beats on both counts (fewer or equal MACs, or ``x``, and a
    higher score), by ``x`` ascending."""
    front: list[ScorePoint] = []
    for point in sorted(points, key=lambda p: (getattr(p, x), -p.score)):
        if not front or point.score > front[-1].score:
            front.append(point)
    return front


def score_vs_macs_png(points: list[ScorePoint], baseline: float | None, x: str = "macs_percent") -> bytes:
    """Every evaluated choice set as a dot, the Pareto front as a line, the baseline dashed;
    ``x="latency_ms"``: against predicted latency (points without one are left out)."""
    points = [p for p in points if getattr(p, x) is not None]
    fig, canvas = new_figure(5.2, 3.2)
    ax = fig.add_subplot()
    for source, (colour, marker, size) in SOURCES.items():
        chosen = [p for p in points if p.source == source]
        if chosen:
            ax.scatter([getattr(p, x) for p in chosen], [p.score for p in chosen], c=colour, marker=marker,
                       s=size, label=f"{source} ({len(chosen)})", zorder=2)
    front = pareto_front(points, x)
    if len(front) > 1:
        ax.step([getattr(p, x) for p in front], [p.score for p in front], where="post", color="#d2691e",
                linewidth=1.2, label="Pareto front", zorder=3)
    if baseline is not None:
        ax.axhline(baseline, color="black", linestyle="--", linewidth=0.8, label="baseline")
    ax.set_xlabel("MACs, % of the original" if x == "macs_percent" else "predicted latency, ms")
    ax.set_ylabel("score")
    if points or baseline is not None:
        ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    return figure_png(fig, canvas)


def curves_png(sensitivity: Any) -> bytes:
    """The scan's per-unit curves, as PNG."""
    height = 3.2
    fig, canvas = new_figure(6.4, height)
    sensitivity.plot("curves", ax=fig.add_subplot())
    return figure_png(fig, canvas)


def robustness(sensitivity: Any, names: list[Any]) -> np.ndarray:
    """Per unit in ``names`` order, 1 for the most robust and 0 for the most sensitive unit
    (its mean drop over the scanned ratios; units not scanned count as robust)."""
    drops = sensitivity.mean_drop()
    values = np.array([max(0.0, drops.get(n, 0.0)) for n in names], dtype=np.float64)
    top = values.max() if len(values) else 0.0
    return 1.0 - values / top if top > 0 else np.ones_like(values)
