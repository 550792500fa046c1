"""A small plot of the selected unit's predicted latency over its channel counts (its step curve).

The curve is the latency table's what-if over every count of the unit, the other units as they
are (``unit_latency_curve``: a lookup per count); dots mark the fast counts (ends of steps) and the
title gives the step divisor (``step_divisor``). Redraws wait until the sliders settle (debounced).
"Measure steps" times the unit's layers at its top counts (``unit_step_curve``, in a thread on a
copy of the mutator) and adds the measured curve and the divisor that removes its cliffs.
"""
from __future__ import annotations

import copy
import html
import inspect
import threading
from typing import Any

import ipywidgets as widgets

from ..budget.latency_snap import fast_counts, step_divisor
from ..counting.latency_counter import unit_latency_curve
from ..counting.latency_steps import StepCurve, unit_step_curve
from .debounce import Debouncer
from .figures import figure_png, new_figure


def step_curve_png(name: str, curve: list[float], current: int, divisor: int,
                   measured: StepCurve | None = None) -> bytes:
    """The curve (ms per count ``1..full``), its fast counts and the current count, as PNG;
    ``measured``: the unit's layers timed per count, on a second axis (their own ms)."""
    fig, canvas = new_figure(4.2, 2.2)
    ax = fig.add_subplot()
    counts = list(range(1, len(curve)))
    ax.step(counts, curve[1:], where="post", color="#3b6ea8", linewidth=1.0)
    if measured is not None:
        twin = ax.twinx()
        twin.plot(measured.counts, measured.ms, ".", color="#9c6ade", markersize=3)
        twin.set_ylabel(f"measured ms (divisor {measured.divisor})", fontsize=7, color="#9c6ade")
        twin.tick_params(labelsize=6)
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

    def __init__(self, mutator: Any, delay: float = 0.3, measure_kwargs: dict | None = None) -> None:
        self.mutator = mutator
        self.unit: str | None = None
        self.curve: list[float] = []
        self.divisor = 0
        self.measured: dict[str, StepCurve] = {}  # unit name -> its measured steps
        self.measure_kwargs = measure_kwargs if measure_kwargs is not None else {}
        self.image = widgets.Image(format="png", layout=widgets.Layout(display="none", max_width="none"))
        self.caption = widgets.HTML()
        self.measure_button = widgets.Button(description="Measure steps", icon="stopwatch",
                                             tooltip="time this unit's layers at each of its top 64 counts",
                                             layout=widgets.Layout(display="none"))
        self.measure_button.on_click(lambda _: self.measure())
        self.widget = widgets.VBox([widgets.HBox([self.caption, self.measure_button]), self.image])
        self.debouncer = Debouncer(self.draw, delay)
        self._thread: threading.Thread | None = None

    def show(self, unit: str | None) -> None:
        """Plot ``unit`` (a unit's name; None or "" hides the plot), debounced."""
        self.unit = unit or None
        if self.unit is None:
            self.image.layout.display = self.measure_button.layout.display = "none"
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
        measured = self.measured.get(unit)
        self.image.value = step_curve_png(unit, curve, current, self.divisor, measured)
        self.image.layout.display = self.measure_button.layout.display = ""
        found = (f"; measured: divisor {measured.divisor} removes its cliffs ({len(measured.cliffs())} found)"
                 if measured is not None else "")
        self.caption.value = html.escape(f"Latency steps of {unit}: fast counts are multiples of {self.divisor} "
                                         f"(now {current}: {curve[current]:.2f} ms){found}")

    def measure(self, wait: bool = False) -> None:
        """Time the shown unit's layers at its top counts (a thread on a copy of the mutator, at the
        table's batch and threads); the plot adds them and the suggested divisor."""
        table = getattr(self.mutator, "latency_table", None)
        if self.unit is None or table is None or (self._thread is not None and self._thread.is_alive()):
            return
        accepted = inspect.signature(unit_step_curve).parameters
        kwargs = {k: v for k, v in self.measure_kwargs.items() if k in accepted}
        kwargs.update(batch_size=table.batch_size, threads=table.threads)
        self.measure_button.description, self.measure_button.disabled = "Measuring…", True
        self._thread = threading.Thread(target=self._measure, args=(copy.deepcopy(self.mutator), self.unit, kwargs),
                                        daemon=True)
        self._thread.start()
        if wait:
            self._thread.join()

    def _measure(self, mutator: Any, unit: str, kwargs: dict) -> None:
        try:
            self.measured[unit] = unit_step_curve(mutator, unit, **kwargs)
        except Exception as exc:  # noqa: BLE001 (shown in the caption, never raised into the event loop)
            self.caption.value = f"<span style='color:#b00020'>{html.escape(f'measure steps: {exc}')}</span>"
        else:
            self.draw()
        finally:
            self.measure_button.description, self.measure_button.disabled = "Measure steps", False
