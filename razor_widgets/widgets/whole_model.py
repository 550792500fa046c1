"""Whole-model controls: the all-units slider, reset, random, undo, redo and the budget."""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import ipywidgets as widgets

from ..budget import BudgetFit
from .budget_control import BudgetControl
from .quiet_panel import QuietPanel

GLOBAL_KEY = "all units"  # the history key (and panel key) of the whole-model slider
BUTTONS = {"reset": ("Reset to full", "refresh"), "random": ("Random", "random"),
           "undo": ("Undo", "undo"), "redo": ("Redo", "repeat")}


def kept_fraction(units: list) -> float:
    """The fraction of the prunable channels kept, over every unit (what "all units" shows)."""
    total = sum(u.num_channels for u in units)
    return sum(u.activated_channels for u in units) / total if total else 1.0


class WholeModelControls(QuietPanel):
    """``global_slider`` calls ``on_global(fraction)`` when a person moves it; ``buttons[name]``
    call ``actions[name]()`` (reset, random, undo, redo); ``budget`` hands a fit to ``apply_fit``.
    ``show_fraction`` moves the slider from code (never reported back)."""

    def __init__(self, counter: Any, actions: dict[str, Callable[[], Any]], on_global: Callable[[float], None],
                 apply_fit: Callable[[BudgetFit], None], clicked: Callable[[Callable[[], Any]], Any]) -> None:
        super().__init__(lambda _key, value: on_global(value))
        self.global_slider = widgets.FloatSlider(value=1.0, min=0.01, max=1.0, step=0.01, continuous_update=True,
                                                 description="all units", readout_format=".2f",
                                                 tooltip="keep this fraction of the channels of every unit",
                                                 style={"description_width": "70px"},
                                                 layout=widgets.Layout(width="360px"))
        self.watch(GLOBAL_KEY, self.global_slider)
        self.buttons: dict[str, widgets.Button] = {}
        for name, (label, icon) in BUTTONS.items():
            button = widgets.Button(description=label, icon=icon, layout=widgets.Layout(width="120px"))
            button.on_click(clicked(actions[name]))
            self.buttons[name] = button
        self.budget = BudgetControl(counter, apply_fit)
        self.widget = widgets.VBox([widgets.HBox([self.global_slider, *self.buttons.values()],
                                                 layout=widgets.Layout(flex_flow="row wrap")), self.budget.widget])

    def show_fraction(self, fraction: float) -> None:
        """Show ``fraction`` on the all-units slider (rounded to its grid) without acting on it."""
        value = min(1.0, max(self.global_slider.min, round(fraction, 2)))
        self.set_value(GLOBAL_KEY, self.global_slider, value)

    def update_buttons(self, can_undo: bool, can_redo: bool) -> None:
        """Enable Undo and Redo as the history allows (a widget is touched only when its state changes)."""
        if self.buttons["undo"].disabled == can_undo:
            self.buttons["undo"].disabled = not can_undo
        if self.buttons["redo"].disabled == can_redo:
            self.buttons["redo"].disabled = not can_redo

    def clear_budget_message(self) -> None:
        """A later change makes the budget's verdict stale: remove it."""
        if self.budget.result.value:
            self.budget.result.value = ""
