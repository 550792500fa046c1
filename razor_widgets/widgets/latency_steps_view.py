"""A small plot of the selected unit's predicted latency over its channel counts (its step curve).

The curve is the latency table's what-if over every count of the unit, the other units as they
are (``unit_latency_curve``: a lookup per count); dots mark the fast counts (ends of steps) and the
title gives the step divisor (``step_divisor``). Redraws wait until the sliders settle (debounced).
"""
from __future__ import annotations

import html
from typing import Any

import ipywidgets as widgets

from ..budget.latency_snap import fast_counts, step_divisor
from ..counting.latency_counter import unit_latency_curve
from .debounce import Debouncer
from .figures import figure_png, new_figure


def step_curve_png(name: str, curve: list[float], current: int, divisor: int) -> bytes:
    """The curve (ms per count ``1..full``), its fast counts and the current count, as PNG."""
    fig, canvas = new_figure(4.2, 2.2)
    ax = fig.add_subplot()
    counts = list(range(1, len(curve)))
    ax.step(counts, curve[1:], where="post", color="#3b6ea8", linewidth=1.0)
    ends = fast_counts(curve)
    ax.scatter(ends, [curve[c] for c in ends], s=8, color="#2e7d32", zorder=3, label="fast counts")
    if 1 <= current < len(curve):
        ax.scatter([current], [curve[current]], s=36, color="#d2691e", zorder=4, label=f"now: {current}")
    ax.set_title(f"{name[:48]}: steps of {divisor}", fontsize=8)
    ax.set_xlabel("kept channels", fontsize=8)
    ax.set_ylabel("predicted ms", fontsize=8)
    ax.tick_params(labelsize=7)
    ax.legend(fontsize=6, loc="lower right")
    fig.tight_layout()
    return figure_png(fig, canvas)


class UnitStepPlot:
    """``show(unit)``: draw that unit's step curve (None hides it); ``refresh()`` after a change of
    choices redraws it once the changes settle. ``divisor`` and ``curve`` hold what was drawn."""

    def __init__(self, mutator: Any, delay: float = 0.3) -> None:
        self.mutator = mutator
        self.unit: str | None = None
        self.curve: list[float] = []
        self.divisor = 0
        self.image = widgets.Image(format="png", layout=widgets.Layout(display="none", max_width="none"))
        self.caption = widgets.HTML()
        self.widget = widgets.VBox([self.caption, self.image])
        self.debouncer = Debouncer(self.draw, delay)

    def show(self, unit: str | None) -> None:
        """Plot ``unit`` (a unit's name; None or "" hides the plot), debounced."""
        self.unit = unit or None
        if self.unit is None:
            self.image.layout.display = "none"
            self.caption.value = ""
            return
        self.debouncer.schedule()

    def refresh(self) -> None:
        """The choices changed: redraw the shown unit's curve once they settle."""
        if self.unit is not None:
            self.debouncer.schedule()

    def draw(self) -> None:
        """Draw now (what the debouncer calls)."""
        unit = self.unit
        if unit is None:
            return
        if getattr(self.mutator, "latency_table", None) is None:
            self.caption.value = "step curve: Profile latency first (the curve is read from its table)"
            self.image.layout.display = "none"
            return
        try:
            curve = unit_latency_curve(self.mutator, unit)
        except (ValueError, RuntimeError) as exc:  # a dropped block: no prediction
            self.caption.value = f"step curve: {html.escape(str(exc))}"
            self.image.layout.display = "none"
            return
        mu = self.mutator.unit(unit)
        current = int(mu.current_mask.sum()) // mu.repeats
        self.curve, self.divisor = curve, step_divisor(curve)
        self.image.value = step_curve_png(unit, curve, current, self.divisor)
        self.image.layout.display = ""
        self.caption.value = html.escape(f"Latency steps of {unit}: fast counts are multiples of {self.divisor} "
                                         f"(now {current}: {curve[current]:.2f} ms)")
