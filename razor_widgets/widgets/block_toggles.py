"""The explorer's depth choices: a keep/drop toggle per removable block, and the blocks that
must stay with the reason. A value the explorer sets (undo, a budget) never comes back as a
click (``QuietPanel``)."""
from __future__ import annotations

import contextlib
import html
from collections.abc import Callable
from typing import Any

import ipywidgets as widgets

from .quiet_panel import QuietPanel

CHOICES = ("keep", "drop")


class BlockToggles(QuietPanel):
    """``toggles[block name]``: a ``ToggleButtons`` (keep / drop) per removable block of
    ``mutator.block_units``; a click calls ``on_change(block name, choice)``."""

    def __init__(self, mutator: Any, on_change: Callable[[Any, Any], None]) -> None:
        super().__init__(on_change)
        self.toggles: dict[str, widgets.ToggleButtons] = {}
        rows = []
        for block in mutator.block_units:
            label = widgets.HTML(f"<span title='{html.escape(block.form, quote=True)}'>"
                                 f"{html.escape(block.path)}</span>", layout=widgets.Layout(width="220px"))
            if block.is_mutable:
                toggle = widgets.ToggleButtons(options=list(CHOICES), value=block.current_choice,
                                               tooltips=["keep the block", "drop the block: y = x"],
                                               style={"button_width": "56px"})
                toggle.add_class("rw-block-toggle")
                self.toggles[block.name] = toggle
                self.watch(block.name, toggle)
                rows.append(widgets.HBox([label, toggle]))
            else:
                reason = html.escape("; ".join(block.fixed_reasons))
                rows.append(widgets.HBox([label, widgets.HTML(f"<i style='color:#777'>must stay: {reason}</i>")]))
        removable = len(self.toggles)
        self.title = f"Blocks (depth): {removable} removable, {len(rows) - removable} must stay"
        self.widget = widgets.VBox(rows, layout=widgets.Layout(max_height="480px", overflow="auto"))

    def show(self, choices: dict[Any, Any]) -> None:
        """Move the toggles to the block choices in ``choices`` (other keys are ignored)."""
        changed = [n for n, t in self.toggles.items() if n in choices and t.value != choices[n]]
        with contextlib.ExitStack() as stack:
            for name in changed:
                stack.enter_context(self.toggles[name].hold_sync())
            for name in changed:
                self.set_value(name, self.toggles[name], choices[name])
