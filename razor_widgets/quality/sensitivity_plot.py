"""Matplotlib views of a :class:`Sensitivity`: per-unit curves or a heatmap of the drops."""
from __future__ import annotations

from typing import Any

import numpy as np
from matplotlib.figure import Figure

from .notebook_figure import NotebookFigure

KINDS = ("curves", "heatmap")
MAX_LEGEND = 12


def plot_sensitivity(sens: Any, kind: str = "curves", ax: Any = None, units: list | None = None) -> Figure:
    """Draw ``sens`` on ``ax`` (a new figure when None) and return the figure (a new one is a
    ``NotebookFigure``: it displays as an image in a notebook or Voilà without pyplot)."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {', '.join(KINDS)}, got {kind!r}")
    units = sens.units if units is None else list(units)
    unknown = [u for u in units if u not in sens.table]
    if unknown:
        raise KeyError(f"the sensitivity table has no unit {unknown[0]!r}")
    if ax is None:
        height = 3.2 if kind == "curves" else max(2.0, 0.22 * len(units) + 1.0)
        fig = NotebookFigure(figsize=(6.4, height), dpi=80)  # shows as an image in a notebook
        ax = fig.add_subplot()
    (_curves if kind == "curves" else _heatmap)(sens, ax, units)
    fig = ax.figure
    fig.tight_layout()
    return fig


def _curves(sens: Any, ax: Any, units: list) -> None:
    order = sorted(units, key=lambda u: -sens.mean_drop()[u])
    for i, unit in enumerate(order):
        ratios = sorted(sens.table[unit])
        xs = [sens.kept_fraction(unit, r) for r in ratios] + [1.0]
        ys = [sens.table[unit][r] for r in ratios] + [sens.baseline]
        label = str(unit) if i < MAX_LEGEND else None
        ax.plot(xs, ys, marker="o", markersize=3, linewidth=1, label=label)
    ax.axhline(sens.baseline, color="black", linestyle="--", linewidth=0.8, label="baseline")
    ax.set_xlabel("kept fraction of the unit's channels (every other unit full)")
    ax.set_ylabel("score")
    ax.set_xlim(0, 1.02)
    ax.legend(fontsize=6, loc="lower right", title=None if len(units) <= MAX_LEGEND
              else f"{MAX_LEGEND} most sensitive of {len(units)}", title_fontsize=6)


def _heatmap(sens: Any, ax: Any, units: list) -> None:
    ratios = sens.ratios
    drops = np.array([[sens.drop(u, r) if r in sens.table[u] else np.nan for r in ratios] for u in units])
    image = ax.imshow(drops, aspect="auto", cmap="Reds", interpolation="nearest")
    ax.set_xticks(range(len(ratios)), [f"{r:g}" for r in ratios], fontsize=7)
    ax.set_yticks(range(len(units)), [str(u) for u in units], fontsize=6)
    ax.set_xlabel("ratio (kept fraction)")
    ax.figure.colorbar(image, ax=ax, label="drop below baseline")
