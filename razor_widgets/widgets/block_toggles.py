"""The explorer's depth choices: a keep/drop toggle per removable block, and the blocks that
must stay with the reason, each in the slider section of its stage (``place_rows``). A value the
explorer sets (undo, a budget) never comes back as a click (``QuietPanel``)."""
from __future__ import annotations

import contextlib
import html
from collections.abc import Callable
from typing import Any

import ipywidgets as widgets

from ..importance.block_importance import block_importance
from .quiet_panel import QuietPanel
from .sliders import first_layer

CHOICES = ("keep", "drop")


class BlockToggles(QuietPanel):
    """``toggles[block name]``: a ``ToggleButtons`` (keep / drop) per removable block of
    ``mutator.block_units``; a click calls ``on_change(block name, choice)``."""

    def __init__(self, mutator: Any, on_change: Callable[[Any, Any], None]) -> None:
        super().__init__(on_change)
        self.toggles: dict[str, widgets.ToggleButtons] = {}
        self.rows: dict[str, tuple[str, widgets.HBox]] = {}  # block name -> (module path, its row)
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
                rows.append(widgets.HBox([widgets.HTML("<b>block</b>"), label, toggle]))
            else:
                reason = html.escape("; ".join(block.fixed_reasons))
                rows.append(widgets.HBox([widgets.HTML("<b>block</b>"), label,
                                          widgets.HTML(f"<i style='color:#777'>must stay: {reason}</i>")]))
            rows[-1].add_class("rw-block-row")
            self.rows[block.name] = (block.path, rows[-1])
        removable = len(self.toggles)
        self.title = f"Blocks (depth): {removable} removable, {len(rows) - removable} must stay"
        self.summary = widgets.HTML(f"<span style='color:#555'>{html.escape(self.title)}: each block's keep/drop "
                                    "toggle sits in its stage's section</span>" if rows else "")

    def show(self, choices: dict[Any, Any]) -> None:
        """Move the toggles to the block choices in ``choices`` (other keys are ignored)."""
        changed = [n for n, t in self.toggles.items() if n in choices and t.value != choices[n]]
        with contextlib.ExitStack() as stack:
            for name in changed:
                stack.enter_context(self.toggles[name].hold_sync())
            for name in changed:
                self.set_value(name, self.toggles[name], choices[name])


def _section_key(path: str, keys: list[str]) -> str | None:
    """The section a module path belongs to: the longest key that is the path or a prefix of it,
    else the first key below it (a stage split deeper than its blocks); None if there is none."""
    above = [k for k in keys if path == k or path.startswith(k + ".")]
    if above:
        return max(above, key=len)
    return next((k for k in keys if k.startswith(path + ".")), None)


def place_rows(panel: Any, toggles: BlockToggles) -> None:
    """Put each block's row into the slider section of ``panel`` (``UnitSliders``) its module path
    belongs to, after the last slider of a layer inside the block (else at the section's end); a
    block whose stage has no slider gets a section of its own (its top-level module)."""
    layer_of = {id(row): first_layer(panel.units[unit]) for unit, row in panel.rows.items()}
    counts: dict[str, int] = {}
    for name, (path, row) in toggles.rows.items():
        key = _section_key(path, list(panel.sections))
        if key is None:
            key = path.split(".")[0]
            panel.sections[key] = widgets.Accordion([widgets.VBox([])], titles=(f"{key} (0)",), selected_index=0)
            children = list(panel.widget.children)
            children.insert(children.index(panel.fixed), panel.sections[key])
            panel.widget.children = tuple(children)
        box = panel.sections[key].children[0]
        rows = list(box.children)
        inside = [i for i, r in enumerate(rows) if layer_of.get(id(r), "").startswith(path + ".")]
        rows.insert(inside[-1] + 1 if inside else len(rows), row)
        box.children = tuple(rows)
        panel.extra_rows[name] = (row, f"{name} {path} block")
        counts[key] = counts.get(key, 0) + 1
    for key, n in counts.items():
        section = panel.sections[key]
        section.set_title(0, f"{section.get_title(0)} · {n} block{'s' if n != 1 else ''}")


def depth_budget(mutator: Any, budget: Any, calibration: Any) -> None:
    """With removable blocks: given ``calibration`` batches, the explorer's uniform / L1 / global
    budgets drop blocks too, the least important first (``block_importance`` on that data, once);
    without them, the budget line says that depth needs calibration data."""
    if not mutator.removable_blocks:
        return
    if calibration is None:
        budget.enable_depth(None, "<i style='color:#777'>depth: uniform / L1 / global keep the blocks as they are "
                                  "(block importance needs calibration data: PruningExplorer(..., calibration=...)); "
                                  "“by sensitivity” trades blocks once a scan exists</i>")
        return
    budget.enable_depth(lambda: block_importance(mutator, calibration),
                        "<i style='color:#777'>depth: uniform / L1 / global also drop blocks, the least important "
                        "first (1 − cosine of the stream before and after, on the calibration data)</i>")
