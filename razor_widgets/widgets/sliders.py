"""One slider per mutable unit, grouped by stage in collapsible sections, with a filter box."""
from __future__ import annotations

import contextlib
import html
from collections import defaultdict
from collections.abc import Callable
from typing import Any

import ipywidgets as widgets

from ..analysis.unit_labels import describe_unit, unit_label
from ..budget import number_step, smallest_number
from ..mutables.units import MutableChannelUnit
from .quiet_panel import QuietPanel, same_value

MAX_GROUP = 24  # a section with more units is split by the next level of the module path


def first_layer(unit: MutableChannelUnit) -> str:
    """The layer a unit is named after (its first output layer, else its first input)."""
    related = unit.output_related or unit.input_related
    return related[0].name if related else str(unit.name)


def group_units(units: list[MutableChannelUnit], max_size: int = MAX_GROUP) -> dict[str, list[MutableChannelUnit]]:
    """Units by stage: the top-level module of their first layer, split one level deeper
    (and so on) while a group holds more than ``max_size`` units. Order follows the model."""
    def split(items: list[MutableChannelUnit], depth: int) -> dict[str, list[MutableChannelUnit]]:
        groups: dict[str, list[MutableChannelUnit]] = defaultdict(list)
        for unit in items:
            parts = first_layer(unit).split(".")
            groups[".".join(parts[:min(depth, len(parts))])].append(unit)
        out: dict[str, list[MutableChannelUnit]] = {}
        for key, members in groups.items():
            deeper = any(len(first_layer(u).split(".")) > depth for u in members)
            if len(members) > max_size and deeper and len(groups) >= 1:
                sub = split(members, depth + 1)
                out.update(sub if len(sub) > 1 else {key: members})
            else:
                out[key] = members
        return out
    return split(list(units), 1)


def block_size(unit: MutableChannelUnit) -> int:
    """Layer channels per unit channel when every layer holds them in blocks (an attention
    head of ``head_dim`` channels), else 1."""
    return min((c.expand_ratio for c in unit.channels if c.param_dim is None), default=1)


def layer_count(unit: MutableChannelUnit) -> int:
    """How many layers the unit's slider moves."""
    return len({c.name for c in unit.channels})


def tooltip(unit: MutableChannelUnit) -> str:
    """The unit's name, sizes and layers, then what it is (``describe_unit``)."""
    layers = layer_count(unit)
    repeats = f" in {unit.repeats} repeated blocks" if unit.repeats > 1 else ""
    size = block_size(unit)
    what = f"blocks (heads) of {size} channels" if size > 1 else "channels"
    return f"{unit.name}: {unit.num_channels} {what}{repeats}, {layers} layers. {describe_unit(unit)}"


def slider_label(unit: MutableChannelUnit) -> str:
    """What the unit is, then how many layers it moves (``MLP of layer 3 · 2 layers``,
    ``channels of layer1.0.conv1 · 3 layers``)."""
    layers = layer_count(unit)
    return f"{unit_label(unit)} · {layers} layer{'s' if layers != 1 else ''}"


def make_slider(unit: MutableChannelUnit) -> widgets.ValueWidget:
    """A slider in the unit's choice mode: candidates, a ratio, or a number of channels,
    labelled by ``slider_label``."""
    common = dict(description=slider_label(unit), tooltip=tooltip(unit),
                  continuous_update=True, style={"description_width": "320px"},
                  layout=widgets.Layout(width="590px", max_width="100%"))  # narrower in a narrow column
    candidates = getattr(unit, "candidate_choices", None)
    if candidates:
        options = sorted(set(candidates))
        return widgets.SelectionSlider(options=options, value=unit.current_choice if unit.current_choice in options
                                       else options[-1], **common)
    if getattr(unit, "choice_mode", "ratio") == "number":
        step, low = number_step(unit), smallest_number(unit)
        if unit.num_channels % step:  # the full width is valid but off the step grid
            options = list(range(low, unit.num_channels, step)) + [unit.num_channels]
            return widgets.SelectionSlider(options=options, value=unit.current_choice if unit.current_choice in options
                                           else unit.num_channels, **common)
        return widgets.IntSlider(min=low, max=unit.num_channels, step=step, value=unit.current_choice, **common)
    step = unit.repeats / unit.num_channels
    return widgets.FloatSlider(min=float(unit.min_choice), max=1.0, step=step, value=float(unit.current_choice),
                               readout_format=".2f", **common)


class UnitSliders(QuietPanel):
    """The slider panel: ``sliders`` (by unit name), sections, a filter and the fixed units.

    A slider's move calls ``on_change(name, value)``, except while ``quiet()`` is on.
    """

    def __init__(self, mutator: Any, on_change: Callable[[Any, Any], None]) -> None:
        super().__init__(on_change)
        units = mutator.mutable_units
        self.units = {u.name: u for u in units}
        self.sliders: dict[Any, widgets.ValueWidget] = {}
        self.kept: dict[Any, widgets.Label] = {}
        self.rows: dict[Any, widgets.HBox] = {}
        self.sections: dict[str, widgets.Accordion] = {}
        self.extra_rows: dict[Any, tuple[widgets.HBox, str]] = {}  # other rows in the sections (blocks): text
        for group, members in group_units(units).items():
            rows = []
            for unit in members:
                slider = make_slider(unit)
                self.watch(unit.name, slider)
                self.sliders[unit.name] = slider
                self.kept[unit.name] = widgets.Label(self._kept_text(unit))
                self.rows[unit.name] = widgets.HBox([slider, self.kept[unit.name]],
                                                    layout=widgets.Layout(flex_flow="row wrap"))
                rows.append(self.rows[unit.name])
            section = widgets.Accordion([widgets.VBox(rows)], titles=(f"{group} ({len(members)})",))
            self.sections[group] = section
        for i, section in enumerate(self.sections.values()):  # few sections: all open; else the first
            section.selected_index = 0 if i == 0 or len(self.sections) <= 4 else None
        self.filter = widgets.Text(placeholder="filter units by name or what they are", continuous_update=True,
                                   layout=widgets.Layout(width="480px", max_width="100%"))
        self.filter.observe(lambda change: self.apply_filter(change["new"]), "value")
        self.fixed = self._fixed_list(mutator)
        self.widget = widgets.VBox([self.filter, *self.sections.values(), self.fixed],
                                   layout=widgets.Layout(max_height="640px", overflow="auto", flex="0 1 auto",
                                                         max_width="100%"))

    @staticmethod
    def _kept_text(unit: MutableChannelUnit) -> str:
        size = block_size(unit)
        return f"{unit.activated_channels}/{unit.num_channels}" + (f" ×{size}" if size > 1 else "")

    @staticmethod
    def _fixed_list(mutator: Any) -> widgets.Accordion:
        fixed = [u for u in mutator.units if not u.is_mutable]
        items = []
        for unit in fixed:
            reasons = "; ".join(unit.fixed_reasons) or "a single channel per block: nothing to prune"
            items.append(f"<li><code>{html.escape(str(unit.name))}</code> ({unit.num_channels} channels): "
                         f"{html.escape(reasons)}</li>")
        body = widgets.HTML("<ul style='margin:0;padding-left:18px'>" + "".join(items) + "</ul>" if items
                            else "<i>every channel of the model is prunable</i>")
        return widgets.Accordion([body], titles=(f"Not prunable ({len(fixed)})",))

    def update_kept(self, name: Any) -> None:
        """Refresh the kept-channels text beside unit ``name``'s slider."""
        self.kept[name].value = self._kept_text(self.units[name])

    def show(self, choices: dict[Any, Any]) -> None:
        """Move the sliders to ``choices`` and refresh their kept counts, in one sync per widget;
        the browser's echo of these values is not a move (see ``QuietPanel``)."""
        values = {n: _on_grid(self.sliders[n], v) for n, v in choices.items()}
        changed = [n for n, v in values.items() if not same_value(self.sliders[n], self.sliders[n].value, v)]
        with contextlib.ExitStack() as stack:
            for name in changed:
                stack.enter_context(self.sliders[name].hold_sync())
                stack.enter_context(self.kept[name].hold_sync())
            for name in changed:
                self.set_value(name, self.sliders[name], values[name])
                self.update_kept(name)

    def open_unit(self, name: Any) -> None:
        """Open the section that holds the slider of unit ``name`` (and show its row)."""
        for section in self.sections.values():
            if self.rows[name] in section.children[0].children:
                section.layout.display = None
                section.selected_index = 0
        self.rows[name].layout.display = None

    def apply_filter(self, text: str) -> int:
        """Show only units whose name or label contains ``text`` (case-insensitive: "MLP",
        "layer 3", "layer2.0"); the number shown."""
        needle = text.strip().lower()
        shown = 0
        for name, row in self.rows.items():
            visible = not needle or needle in str(name).lower() or needle in self.sliders[name].description.lower()
            row.layout.display = None if visible else "none"
            shown += visible
        for row, words in self.extra_rows.values():
            row.layout.display = None if not needle or needle in words.lower() else "none"
        for section in self.sections.values():
            rows = section.children[0].children
            visible = [r for r in rows if r.layout.display != "none"]
            section.layout.display = None if visible else "none"
            if needle and visible:
                section.selected_index = 0
        return shown


def _on_grid(slider: widgets.ValueWidget, value: Any) -> Any:
    """``value`` as the slider can hold it (a selection slider only takes its options)."""
    if isinstance(slider, widgets.SelectionSlider) and value not in slider.options:
        return min(slider.options, key=lambda o: abs(o - value))
    return value
