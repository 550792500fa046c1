"""PruningExplorer: sliders per channel unit, live counters, the model graph and plans, in one widget."""
from __future__ import annotations

import contextlib
import html
import os
import random
import warnings
from collections.abc import Callable, Iterable
from typing import Any

import ipywidgets as widgets
from torch import nn

from ..budget import BudgetFit, choice_for_fraction
from ..mutators.channel_mutator import ChannelMutator
from ..mutators.module_mutator import OneShotModuleMutator
from ..plans import PlanError, load_choices, save_choices
from ..resources import Resources
from .budget_control import BudgetControl
from .counters import ResourceCounters
from .graph_view import GraphView
from .history import ChoiceHistory
from .module_choices import (
    ChosenPathCounter,
    ModuleChoices,
    ModuleGroup,
    every_candidate,
    has_module_mutables,
    load_plan,
    save_plan,
)
from .plots import ChannelPlot, LayerPlot
from .quality_panel import DEFAULT_RATIOS, QualityPanel, Sensitivity, quality_section
from .sliders import UnitSliders

GLOBAL_KEY = "all units"  # the history key of the whole-model slider
TABS = ("Graph", "Channels per unit", "Params and MACs per layer")


class PruningExplorer:
    """Explore channel pruning of ``model`` in a notebook: the last line of a cell shows it.

    ``model`` is prepared in place (its layers become dynamic ops that mask channels);
    ``export()`` returns the pruned model made of plain torch layers. Pass a prepared
    ``ChannelMutator`` instead of a model to explore it. ``example_inputs`` defaults to a
    1x3x224x224 tensor. Expensive redraws (graph, plots) wait ``redraw_delay`` seconds after
    the last change; counters follow every slider event.

    A model with searchable ops (``OneShotMutableOP``) also gets ``module_mutator`` and one
    dropdown per search group (``dropdowns``); its channels are traced with every candidate
    running, and counters and ``export()`` follow the chosen candidates.
    """

    def __init__(self, model: nn.Module | ChannelMutator, example_inputs: Any = None,
                 eval_fn: Callable[[nn.Module], float] | None = None, calibration: Any = None, *,
                 channel_unit_cfg: dict | str | None = None, redraw_delay: float = 0.15) -> None:
        self.warnings: list[str] = []  # what preparing warned about (unprunable channels)
        self.module_mutator: OneShotModuleMutator | None = None  # set when the model has searchable ops
        self.path_counter: ChosenPathCounter | None = None
        if isinstance(model, ChannelMutator):
            if model.model is None:
                raise ValueError("the ChannelMutator is not prepared: call prepare_from_supernet(model) first, "
                                 "or pass the model itself")
            if has_module_mutables(model.model):
                raise ValueError("the model has searchable ops (OneShotMutableOP): pass the model itself, so "
                                 "that the explorer traces its channels with every candidate running")
            self.mutator = model
        elif isinstance(model, nn.Module):
            self.mutator = ChannelMutator(channel_unit_cfg=channel_unit_cfg)
            modules = None
            if has_module_mutables(model):
                modules = OneShotModuleMutator()
                modules.prepare_from_supernet(model)
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                with every_candidate(modules) if modules is not None else contextlib.nullcontext():
                    self.mutator.prepare_from_supernet(model, example_inputs=example_inputs)
            self.warnings = [str(w.message) for w in caught]
            if modules is not None:
                self.module_mutator = modules
                self.path_counter = ChosenPathCounter(self.mutator, modules)
        else:
            raise TypeError(f"PruningExplorer takes an nn.Module or a prepared ChannelMutator, "
                            f"got {type(model).__name__}")
        mutator = self.mutator
        self.history = ChoiceHistory(self._all_choices())
        self.status = widgets.HTML()
        self.counters = ResourceCounters(self.resources())
        self.panel = UnitSliders(mutator, self._on_slider)
        self.sliders = self.panel.sliders
        self.modules: ModuleChoices | None = None
        self.dropdowns: dict[int, widgets.Dropdown] = {}
        self._build_whole_model_controls()
        self.budget = BudgetControl(self.path_counter or mutator, self._apply_fit)
        self.graph_view = GraphView(mutator, delay=redraw_delay)
        self.channel_plot = ChannelPlot(mutator)
        self.layer_plot = LayerPlot(mutator)
        self._views = (self.graph_view, self.channel_plot, self.layer_plot)
        self._stale = [False, True, True]
        self.tabs = widgets.Tab([v.widget for v in self._views], titles=TABS)
        self.tabs.observe(lambda _: self._redraw_visible(), "selected_index")
        self._redraw = self.graph_view.redraw  # one debouncer for whichever view is visible
        self._redraw.callback = self._redraw_visible
        self.unit_selector = widgets.Dropdown(options=[("(none)", None)] + [(str(n), n) for n in self.sliders],
                                              description="highlight", layout=widgets.Layout(width="420px"))
        self.unit_selector.observe(lambda change: self.select_unit(change["new"]), "value")
        self.extra = widgets.VBox()  # further sections (module mutables) go here: add_section()
        self.widget = self._layout()
        if self.module_mutator is not None:
            self.modules = ModuleChoices(self.module_mutator, self.path_counter, self._on_dropdown)
            self.dropdowns = self.modules.dropdowns
            section = self.add_section(f"Searchable ops ({len(self.dropdowns)} search groups)", self.modules.widget)
            section.selected_index = 0
            self._show_chosen_path()
        self.quality = quality_section(self, eval_fn, calibration)  # the Quality section (quality_panel.py)
        self._update_buttons()

    # -- layout ---------------------------------------------------------------------------
    def _build_whole_model_controls(self) -> None:
        self.global_slider = widgets.FloatSlider(value=1.0, min=0.01, max=1.0, step=0.01, continuous_update=True,
                                                 description="all units", readout_format=".2f",
                                                 tooltip="keep this fraction of the channels of every unit",
                                                 style={"description_width": "70px"},
                                                 layout=widgets.Layout(width="360px"))
        self.global_slider.observe(self._on_global, "value")
        self.buttons = {
            "reset": widgets.Button(description="Reset to full", icon="refresh"),
            "random": widgets.Button(description="Random", icon="random"),
            "undo": widgets.Button(description="Undo", icon="undo"),
            "redo": widgets.Button(description="Redo", icon="repeat"),
        }
        actions = {"reset": self.reset, "random": self.sample, "undo": self.undo, "redo": self.redo}
        for name, button in self.buttons.items():
            button.layout = widgets.Layout(width="120px")
            button.on_click(self._clicked(actions[name]))
        self.plan_path = widgets.Text(value="plan.json", description="plan", style={"description_width": "40px"},
                                      layout=widgets.Layout(width="260px"))
        self.plan_buttons = {"save": widgets.Button(description="Save plan", layout=widgets.Layout(width="110px")),
                             "load": widgets.Button(description="Load plan", layout=widgets.Layout(width="110px")),
                             "export": widgets.Button(description="Export", layout=widgets.Layout(width="110px"),
                                                      tooltip="explorer.exported = explorer.export()")}
        self.plan_buttons["save"].on_click(self._clicked(lambda: self.save_choices(self.plan_path.value)))
        self.plan_buttons["load"].on_click(self._clicked(lambda: self.load_choices(self.plan_path.value)))
        self.plan_buttons["export"].on_click(self._clicked(self._export_button))

    def _layout(self) -> widgets.VBox:
        units = len(self.sliders)
        fixed = len(self.mutator.units) - units
        title = widgets.HTML(f"<b>{type(self.mutator.model).__name__}</b>: {units} prunable units, "
                             f"{fixed} not prunable")
        whole = widgets.VBox([
            widgets.HBox([self.global_slider, *self.buttons.values()]),
            self.budget.widget,
            widgets.HBox([self.plan_path, *self.plan_buttons.values()]),
        ])
        right = widgets.VBox([self.unit_selector, self.tabs], layout=widgets.Layout(flex="1 1 auto"))
        body = widgets.HBox([self.panel.widget, right])
        return widgets.VBox([title, self.counters.widget, whole, self.status, body, self.extra])

    def add_section(self, title: str, widget: widgets.Widget) -> widgets.Accordion:
        """Add a collapsible section below the sliders (for controls of other mutables)."""
        section = widgets.Accordion([widget], titles=(title,))
        self.extra.children = (*self.extra.children, section)
        return section

    def _repr_mimebundle_(self, **kwargs: Any) -> Any:
        return self.widget._repr_mimebundle_(**kwargs)

    def _clicked(self, action: Any) -> Any:
        def on_click(_: Any) -> None:
            try:
                action()
            except (PlanError, ValueError, TypeError, KeyError, IndexError, OSError) as exc:
                self._say(str(exc.args[0] if isinstance(exc, KeyError) and exc.args else exc), error=True)
        return on_click

    def _say(self, text: str, error: bool = False) -> None:
        colour = "#b00020" if error else "#333"
        self.status.value = f"<span style='color:{colour}'>{html.escape(text)}</span>" if text else ""

    # -- counts and the combined state ----------------------------------------------------
    def resources(self) -> Resources:
        """Params and MACs of ``export()`` at the current choices (the counters' figures)."""
        return self.mutator.resources() if self.path_counter is None else self.path_counter.resources()

    def _all_choices(self) -> dict[Any, Any]:
        """The units' choices and, keyed by ``ModuleGroup(g)``, the search groups': one history step."""
        choices = self.mutator.current_choices
        if self.module_mutator is not None:
            choices.update({ModuleGroup(g): c for g, c in self.module_mutator.current_choices.items()})
        return choices

    def _set_state(self, state: dict[Any, Any]) -> None:
        units = {k: v for k, v in state.items() if not isinstance(k, ModuleGroup)}
        groups = {k.group: v for k, v in state.items() if isinstance(k, ModuleGroup)}
        if groups:
            self.module_mutator.validate_choices(groups)  # before any change: all or nothing
        self.mutator.set_choices(units)
        if groups:
            self.module_mutator.set_choices(groups)

    # -- the dropdown path (searchable ops) -------------------------------------------------
    def _on_dropdown(self, group: int, choice: Any) -> None:
        try:
            self.module_mutator.set_choices({group: choice})
        except (ValueError, TypeError, KeyError) as exc:
            self._say(str(exc.args[0] if isinstance(exc, KeyError) and exc.args else exc), error=True)
            with self.modules.quiet():
                self.dropdowns[group].value = self.module_mutator.current_choices[group]
            return
        self._show_chosen_path()
        self.counters.update(self.resources())
        self.history.record(self._all_choices())
        self._say("")
        self._changed()

    def set_module_choices(self, choices: dict[int, Any], record: bool = True) -> None:
        """Choose candidates for several search groups at once (``{group: candidate name}``,
        atomic: on an invalid entry nothing changes) and show it."""
        if self.module_mutator is None:
            raise ValueError("this model has no searchable ops (OneShotMutableOP)")
        self.module_mutator.set_choices(choices)
        self._show_changes(record)

    def _show_chosen_path(self) -> None:
        """Disable the sliders of units whose layers all lie in candidates that are not chosen."""
        dropped = self.path_counter.dropped_layers()
        if not hasattr(self, "_unit_layers"):
            self._unit_layers = {n: {c.name for c in self.mutator.unit(n).channels} for n in self.sliders}
        for name, slider in self.sliders.items():
            off = bool(dropped) and self._unit_layers[name] <= dropped
            if slider.disabled != off:
                slider.disabled = off

    # -- the slider path (every event: keep it cheap) --------------------------------------
    def _on_slider(self, name: Any, value: Any) -> None:
        try:
            self.mutator.set_choices({name: value})
        except (ValueError, TypeError) as exc:
            self._say(str(exc), error=True)
            with self.panel.quiet():
                self.sliders[name].value = self.history.current[name]
            return
        self.panel.update_kept(name)
        self.counters.update(self.resources())
        self.history.record_one(name, self.mutator.unit(name).current_choice, key=name)
        self._changed()

    def _changed(self) -> None:
        if self.quality is not None:
            self.quality.choices_changed()
        self._stale = [True] * len(self._views)
        self._update_buttons()
        self._redraw.schedule()

    def _redraw_visible(self) -> None:
        index = self.tabs.selected_index or 0
        if self._stale[index]:
            self._stale[index] = False
            view = self._views[index]
            (view.recolour if view is self.graph_view else view.redraw)()

    def flush(self) -> None:
        """Redraw the visible view now if a redraw is pending."""
        self._redraw.flush()

    def _update_buttons(self) -> None:
        self.buttons["undo"].disabled = not self.history.can_undo
        self.buttons["redo"].disabled = not self.history.can_redo

    # -- whole-model changes --------------------------------------------------------------
    def set_choices(self, choices: dict[Any, Any], record: bool = True, key: Any = None) -> None:
        """Set several units at once (atomic: on an invalid entry nothing changes) and show it."""
        self.mutator.set_choices(choices)
        self._show_changes(record, key)

    def _show_changes(self, record: bool = True, key: Any = None) -> None:
        self.panel.show(self.mutator.current_choices)
        if self.modules is not None:
            self.modules.show(self.module_mutator.current_choices)
            self._show_chosen_path()
        self.counters.update(self.resources())
        if record:
            self.history.record(self._all_choices(), key)
        self._say("")
        self._changed()

    def _on_global(self, change: dict) -> None:
        if getattr(self, "_quiet_global", False):
            return
        self.set_all(change["new"])

    def set_all(self, fraction: float) -> None:
        """Keep ``fraction`` of the channels of every unit (the whole-model slider)."""
        choices = {u.name: choice_for_fraction(u, fraction) for u in self.mutator.mutable_units}
        self.set_choices(choices, key=GLOBAL_KEY)
        self._show_global(fraction)

    def _show_global(self, fraction: float) -> None:
        self._quiet_global = True
        try:
            self.global_slider.value = fraction
        finally:
            self._quiet_global = False

    def reset(self) -> None:
        """Every unit back to all of its channels."""
        self.set_choices(self.mutator.max_choices)
        self._show_global(1.0)

    def sample(self, seed: int | None = None) -> dict[Any, Any]:
        """Random choices for every unit (``seed`` makes them repeatable), and a random candidate
        for every search group, as one step; returns the units' choices."""
        state = random.getstate()
        if seed is not None:
            random.seed(seed)
        try:
            choices = self.mutator.sample_choices()
            modules = self.module_mutator.sample_choices() if self.module_mutator is not None else {}
        finally:
            if seed is not None:
                random.setstate(state)
        self.mutator.set_choices(choices)
        if modules:
            self.module_mutator.set_choices(modules)
        self._show_changes()
        return choices

    def apply_budget(self, keep_percent: float, metric: str = "MACs", mode: str = "uniform") -> BudgetFit:
        """Fit "keep ``keep_percent`` % of ``metric``" (``MACs`` or ``Params``) with ``mode``
        (``uniform`` or ``by L1 importance``) and apply it, as the budget control does."""
        self.budget.percent.value = keep_percent
        self.budget.metric.value = metric
        self.budget.mode.value = mode
        return self.budget.run()

    def _apply_fit(self, fit: BudgetFit) -> None:
        self.set_choices(fit.choices)

    def undo(self) -> None:
        """One step back (slider drags, dropdowns and whole-model changes alike)."""
        self._set_state(self.history.undo())
        self._show_changes(record=False)

    def redo(self) -> None:
        self._set_state(self.history.redo())
        self._show_changes(record=False)

    def refresh(self) -> None:
        """Show choices made on the mutator directly (outside the explorer), as one step."""
        self._show_changes()

    # -- quality (eval_fn) ----------------------------------------------------------------
    def evaluate(self) -> float:
        """``eval_fn`` of the masked model at the current choices, shown against the baseline."""
        return self._quality_panel().evaluate()

    def sensitivity(self, ratios: Iterable[float] = DEFAULT_RATIOS, **kwargs: Any) -> Sensitivity:
        """``sensitivity_scan`` with a progress bar; colours the graph by it, shows the curves
        and offers "by sensitivity" budgets (``units=``, ``executor=`` as the scan takes them)."""
        return self._quality_panel().scan(ratios, **kwargs)

    def _quality_panel(self) -> QualityPanel:
        if self.quality is None:
            raise ValueError("no eval_fn: make the explorer with PruningExplorer(model, x, eval_fn=...)")
        return self.quality

    # -- the graph ------------------------------------------------------------------------
    def select_unit(self, name: Any) -> list[str]:
        """Highlight every layer the unit ``name`` touches (None: none); returns their nodes."""
        if name is not None and name not in self.sliders:
            raise KeyError(f"no mutable unit named {name!r}")
        if self.unit_selector.value != name:
            self.unit_selector.value = name  # comes back here through the observer
            return self.graph_view.highlighted_nodes
        nodes = self.graph_view.highlight(name)
        return nodes

    # -- export and plans -----------------------------------------------------------------
    def export(self) -> nn.Module:
        """The pruned model of plain torch layers (``mutator.to_static()``); with searchable
        ops, only the chosen candidates (``module_mutator.to_static(mutator.to_static())``)."""
        if self.module_mutator is None:
            return self.mutator.to_static()
        open_groups = [self.module_mutator.group_label(g) for g, c in self.module_mutator.current_choices.items()
                       if c is None]
        if open_groups:
            raise ValueError(f"choose a candidate for every searchable op before exporting: "
                             f"{len(open_groups)} run every candidate ({', '.join(open_groups[:3])}"
                             f"{', ...' if len(open_groups) > 3 else ''})")
        return self.module_mutator.to_static(self.mutator.to_static())

    def _export_button(self) -> None:
        self.exported = self.export()
        params = sum(p.numel() for p in self.exported.parameters())
        self._say(f"exported: explorer.exported holds the pruned model ({params:,} params)")

    def save_choices(self, path: str | os.PathLike) -> None:
        """Write the current choices as JSON ``{unit_name: choice}``, with searchable ops also
        ``{mutable module name: candidate name}``."""
        if self.module_mutator is None:
            save_choices(self.mutator, path)
        else:
            save_plan(self.mutator, self.module_mutator, path)
        self._say(f"saved the plan to {os.fspath(path)}")

    def load_choices(self, path: str | os.PathLike) -> None:
        """Apply a JSON plan; one that does not fit raises ``PlanError`` and changes nothing."""
        try:
            if self.module_mutator is None:
                load_choices(self.mutator, path)
            else:
                load_plan(self.mutator, self.module_mutator, path)
        except PlanError as exc:
            self._say(str(exc), error=True)
            raise
        self._show_changes()
        self._say(f"loaded the plan {os.fspath(path)}")
