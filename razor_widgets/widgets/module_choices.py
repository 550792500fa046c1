"""Searchable ops in the explorer: one dropdown per search group of a ``OneShotModuleMutator``.

The counting and plans of the chosen candidates live in the engine (``PruningSession``,
``ChosenPathCounter``); this module only shows the choices.
"""
from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

import ipywidgets as widgets

from .. import ChosenPathCounter, OneShotModuleMutator, Resources
from .quiet_panel import QuietPanel

SUPERNET = "every candidate (supernet)"


def _short(n: int) -> str:
    for size, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(n) >= size:
            return f"{n / size:.3g} {suffix}"
    return str(n)


def option_label(choice: Any, res: Resources) -> str:
    """``'shuffle_5x5 (12.3 k params, 4.56 M MACs)'``."""
    name = SUPERNET if choice is None else str(choice)
    return f"{name} ({_short(res.params)} params, {_short(res.macs)} MACs)"


class ModuleChoices(QuietPanel):
    """One dropdown per search group (label: alias or module names; options: candidates with
    their params and MACs at full width). A change calls ``on_change(group, choice)``, except
    while ``quiet()`` is on."""

    def __init__(self, module_mutator: OneShotModuleMutator, counter: ChosenPathCounter,
                 on_change: Callable[[int, Any], None]) -> None:
        super().__init__(on_change)
        self.dropdowns: dict[int, widgets.Dropdown] = {}
        current = module_mutator.current_choices
        for gid, space in module_mutator.search_space.items():
            per = counter.candidate_resources(gid)
            options = [(option_label(c, per[c]), c) for c in space]
            options.append((option_label(None, sum(per.values())), None))
            names = module_mutator.group_names[gid]
            dropdown = widgets.Dropdown(
                options=options, value=current[gid], description=module_mutator.group_label(gid),
                tooltip=f"{', '.join(names)}: params and MACs of each candidate at full width",
                style={"description_width": "150px"}, layout=widgets.Layout(width="520px"))
            self.dropdowns[gid] = dropdown
            self.watch(gid, dropdown)
        self.widget = widgets.VBox(list(self.dropdowns.values()),
                                   layout=widgets.Layout(max_height="480px", overflow="auto"))

    def show(self, choices: dict[int, Any]) -> None:
        """Move the dropdowns to ``choices`` (one sync per changed dropdown)."""
        changed = [g for g, v in choices.items() if self.dropdowns[g].value != v]
        with contextlib.ExitStack() as stack:
            for gid in changed:
                stack.enter_context(self.dropdowns[gid].hold_sync())
            for gid in changed:
                self.set_value(gid, self.dropdowns[gid], choices[gid])
