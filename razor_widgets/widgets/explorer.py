"""PruningExplorer: sliders per channel unit, live counters, the model graph and plans, in one widget.

The explorer shows a ``PruningSession`` (the engine's object for a model being pruned) and is
built from small sections, each its own class: the unit sliders, the whole-model controls, the
plan controls, the searchable-op dropdowns and the views (graph and plots). ``add_section``
adds more below them.
"""
from __future__ import annotations

import html
import os
from collections.abc import Callable, Iterable
from typing import Any

import ipywidgets as widgets
from torch import nn

from ..analysis.unit_labels import unit_label
from ..budget import BudgetFit, choice_for_fraction
from ..counting.resources import Resources
from ..export.export_check import ExportError
from ..export.plans import PlanError, plan_json, write_plan
from ..mutators.channel_mutator import ChannelMutator
from ..pruning_session import ModuleGroup, PruningSession
from .block_toggles import BlockToggles, depth_budget, place_rows
from .counters import ResourceCounters
from .graph_view import GraphView
from .history import ChoiceHistory
from .latency_panel import LatencyPanel
from .memory_counter import MemoryCounter
from .module_choices import ModuleChoices
from .plan_controls import DownloadFile, PlanControls, recipe_files, torch_bytes
from .plan_entries import PlanComparison, PlanEntry
from .plan_history_view import PlanHistoryView
from .plots import ChannelPlot, LayerPlot
from .quality_panel import DEFAULT_RATIOS, QualityPanel, Sensitivity, quality_section
from .sliders import UnitSliders
from .whole_model import GLOBAL_KEY, WholeModelControls, kept_fraction

TABS = ("Graph", "Channels per unit", "Params & MACs")  # short: the tab bar cuts longer titles
NO_UNIT = ""  # the highlight dropdown's "(none)"
EXPLORER_CLASS = "rw-explorer"  # the explorer's outermost element on the page
ERRORS = (PlanError, ExportError, ValueError, TypeError, KeyError, IndexError, OSError)


def _message(exc: Exception) -> str:
    return str(exc.args[0] if isinstance(exc, KeyError) and exc.args else exc)


class PruningExplorer:
    """Explore channel pruning of ``model`` in a notebook: the last line of a cell shows it.

    ``model`` is prepared in place (its layers become dynamic ops that mask channels);
    ``export()`` returns the pruned model made of plain torch layers. Pass a prepared
    ``ChannelMutator`` (or a ``PruningSession``) instead of a model to explore it.
    ``example_inputs`` defaults to a 1x3x224x224 tensor. Expensive redraws (graph, plots) wait
    ``redraw_delay`` seconds after the last change; counters follow every slider event.

    A model with searchable ops (``OneShotMutableOP``) also gets ``module_mutator`` and one
    dropdown per search group (``dropdowns``); counters and ``export()`` follow the chosen
    candidates (see ``PruningSession``).
    """

    def __init__(self, model: nn.Module | ChannelMutator | PruningSession, example_inputs: Any = None,
                 eval_fn: Callable[[nn.Module], float] | None = None, calibration: Any = None, *,
                 channel_unit_cfg: dict | str | None = None, redraw_delay: float = 0.15) -> None:
        if isinstance(model, PruningSession):
            self.session = model
        elif isinstance(model, (nn.Module, ChannelMutator)):
            self.session = PruningSession(model, example_inputs, channel_unit_cfg=channel_unit_cfg)
        else:
            raise TypeError(f"PruningExplorer takes an nn.Module or a prepared ChannelMutator (or a PruningSession), "
                            f"got {type(model).__name__}")
        session = self.session
        self.mutator = session.mutator
        self.module_mutator = session.module_mutator
        self.path_counter = session.path_counter
        self.warnings = session.warnings
        self.exported: nn.Module | None = None
        self.history = ChoiceHistory(session.choices)
        self.status = widgets.HTML()
        self.counters = ResourceCounters(self.resources())
        self.memory = MemoryCounter(self.resources(), self.mutator)  # weights + KV cache at a length and batch
        self.counters.listeners.append(self.memory.update)
        self.latency = LatencyPanel(self.mutator)  # the Latency counter and "Profile latency"
        self.panel = UnitSliders(self.mutator, self._on_slider)
        self.sliders = self.panel.sliders
        self.whole = WholeModelControls(session, {"reset": self.reset, "random": self.sample, "undo": self.undo,
                                                  "redo": self.redo}, self.set_all, self._apply_fit, self._clicked)
        self.global_slider, self.buttons, self.budget = self.whole.global_slider, self.whole.buttons, self.whole.budget
        self.latency.on_table = self.budget.enable_latency  # "keep X % of latency" once a table exists
        if getattr(self.mutator, "latency_table", None) is not None:
            self.budget.enable_latency()
        self.plans = PlanControls({"save": lambda: self.save_choices(self.plans.path.value),
                                   "load": lambda: self.load_choices(self.plans.path.value),
                                   "export": self.offer_downloads}, self._on_upload, self._clicked)
        self.plan_path, self.plan_buttons = self.plans.path, self.plans.buttons
        self._build_views(redraw_delay)
        self.modules: ModuleChoices | None = None
        self.dropdowns: dict[int, widgets.Dropdown] = {}
        self.extra = widgets.VBox()  # further sections (module mutables, ...) go here: add_section()
        self.widget = self._layout()
        if self.module_mutator is not None:
            self.modules = ModuleChoices(self.module_mutator, self.path_counter, self._on_dropdown)
            self.dropdowns = self.modules.dropdowns
            section = self.add_section(f"Searchable ops ({len(self.dropdowns)} search groups)", self.modules.widget)
            section.selected_index = 0
            self._show_chosen_path()
        self.blocks = BlockToggles(self.mutator, self._on_block)  # depth choices, in their stages' sections
        place_rows(self.panel, self.blocks)
        self.panel.widget.children = (self.blocks.summary, *self.panel.widget.children)
        self.quality = quality_section(self, eval_fn, calibration)  # the Quality section (quality_panel.py)
        depth_budget(self.mutator, self.budget, calibration)  # uniform / L1 / global drop blocks given data
        self.plan_history = PlanHistoryView(self)  # the plans tried: explorer.history.plans (plan_history_view.py)
        history = widgets.Accordion([self.plan_history.widget], titles=("Plan history",), selected_index=0)
        self.widget.children = (*self.widget.children, history)  # below the other sections
        if self.quality is not None:
            self.quality.on_evaluated = lambda score: self.plan_history.remember("evaluated", score)
        self._update_buttons()

    # -- layout ---------------------------------------------------------------------------
    def _build_views(self, redraw_delay: float) -> None:
        self.graph_view = GraphView(self.mutator, delay=redraw_delay, on_click=self.select_layer)
        self.channel_plot = ChannelPlot(self.mutator)
        self.layer_plot = LayerPlot(self.mutator)
        self._views = (self.graph_view, self.channel_plot, self.layer_plot)
        self._stale = [False, True, True]
        self.tabs = widgets.Tab([v.widget for v in self._views], titles=TABS)
        self.tabs.observe(lambda _: self._redraw_visible(), "selected_index")
        self._redraw = self.graph_view.redraw  # one debouncer for whichever view is visible
        self._redraw.callback = self._settle
        self._fraction_stale = False
        options = [(f"{unit_label(self.mutator.unit(n))} · {n}", n) for n in self.sliders]  # what, then which
        self.unit_selector = widgets.Dropdown(options=[("(none)", NO_UNIT)] + options, value=NO_UNIT,
                                              description="highlight", layout=widgets.Layout(width="420px",
                                                                                                max_width="100%"))
        self.unit_selector.observe(lambda change: self.select_unit(change["new"]), "value")

    def _layout(self) -> widgets.VBox:
        units = len(self.sliders)
        fixed = len(self.mutator.units) - units
        title = widgets.HTML(f"<b>{type(self.mutator.model).__name__}</b>: {units} prunable units, "
                             f"{fixed} not prunable")
        right = widgets.VBox([self.unit_selector, self.tabs], layout=widgets.Layout(flex="1 1 420px", min_width="0",
                                                                                    overflow="auto"))
        body = widgets.HBox([self.panel.widget, right], layout=widgets.Layout(flex_flow="row wrap"))  # fits a column
        root = widgets.VBox([title, self.counters.widget, self.latency.widget, self.memory.widget, self.whole.widget,
                             self.plans.widget, self.status, body, self.extra], layout=widgets.Layout(max_width="100%"))
        root.add_class(EXPLORER_CLASS)
        return root

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
            except ERRORS as exc:
                self._say(_message(exc), error=True)
        return on_click

    def _say(self, text: str, error: bool = False) -> None:
        colour = "#b00020" if error else "#333"
        value = f"<span style='color:{colour}'>{html.escape(text)}</span>" if text else ""
        if self.status.value != value:
            self.status.value = value

    # -- counts and the combined state ----------------------------------------------------
    def resources(self) -> Resources:
        """Params and MACs of ``export()`` at the current choices (the counters' figures)."""
        return self.session.resources()

    def _all_choices(self) -> dict[Any, Any]:
        """The units' choices and, keyed by ``ModuleGroup(g)``, the search groups': one history step."""
        return self.session.choices

    # -- the dropdown path (searchable ops) -------------------------------------------------
    def _on_dropdown(self, group: int, choice: Any) -> None:
        try:
            self.session.set_choices({ModuleGroup(group): choice})
        except (ValueError, TypeError, KeyError) as exc:
            self._say(_message(exc), error=True)
            self.modules.set_value(group, self.dropdowns[group], self.module_mutator.current_choices[group])
            return
        self._show_chosen_path()
        self.counters.update(self.resources())
        self.history.record(self._all_choices())
        self._say("")
        self._changed()

    def set_module_choices(self, choices: dict[int, Any], record: bool = True) -> None:
        """Choose candidates for several search groups at once (``{group: candidate name}``,
        atomic: on an invalid entry nothing changes) and show it."""
        self.session.set_choices({ModuleGroup(g): c for g, c in choices.items()})
        self._show_changes(record)

    def _show_chosen_path(self) -> None:
        """Disable the sliders of units whose layers all lie in candidates that are not chosen."""
        dropped = self.session.dropped_layers()
        if not hasattr(self, "_unit_layers"):
            self._unit_layers = {n: {c.name for c in self.mutator.unit(n).channels} for n in self.sliders}
        for name, slider in self.sliders.items():
            off = bool(dropped) and self._unit_layers[name] <= dropped
            if slider.disabled != off:
                slider.disabled = off

    # -- the slider path (every event: keep it cheap) --------------------------------------
    def _on_slider(self, name: Any, value: Any) -> None:
        unit = self.mutator.unit(name)
        before, kept = unit.current_choice, unit.activated_channels
        try:
            self.mutator.set_choices({name: value})
        except (ValueError, TypeError) as exc:
            self._say(str(exc), error=True)
            self.panel.set_value(name, self.sliders[name], before)
            return
        if unit.activated_channels == kept:  # the same channels (a rounding of the same position)
            self.mutator.set_choices({name: before})  # keep the choice the history holds
            return
        self.panel.update_kept(name)
        self.counters.update(self.resources())
        self.latency.update()
        self.history.record_one(name, unit.current_choice, key=name)
        self._fraction_stale = True  # the all-units slider follows after the pause (_settle)
        self._changed()

    def _on_block(self, name: str, choice: str) -> None:
        """A keep/drop click: counters now, the graph greys the block after the pause; one history step."""
        try:
            self.mutator.set_choices({name: choice})
        except (ValueError, TypeError, KeyError) as exc:
            self._say(_message(exc), error=True)
            self.blocks.show(self.mutator.current_choices)
            return
        self.counters.update(self.resources())
        self.latency.update()
        self.history.record_one(name, choice, key=name)
        self._say("")
        self._changed()

    def _changed(self) -> None:
        if self.quality is not None:
            self.quality.choices_changed()
        self._stale = [True] * len(self._views)
        self._update_buttons()
        self.whole.clear_budget_message()
        self.plans.clear()
        self._redraw.schedule()

    def _settle(self) -> None:
        """After a pause in the events: the all-units slider and the visible view catch up."""
        if self._fraction_stale:
            self._fraction_stale = False
            self.whole.show_fraction(kept_fraction(self.mutator.mutable_units))
        self._redraw_visible()

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
        self.whole.update_buttons(self.history.can_undo, self.history.can_redo)

    # -- whole-model changes (each one step of the history) --------------------------------
    def set_choices(self, choices: dict[Any, Any], record: bool = True, key: Any = None) -> None:
        """Set several units (or ``ModuleGroup`` keys) at once (atomic: on an invalid entry
        nothing changes) and show it, as one step."""
        self.session.set_choices(choices)
        self._show_changes(record, key)

    def _show_changes(self, record: bool = True, key: Any = None) -> None:
        choices = self.mutator.current_choices
        self.panel.show({n: c for n, c in choices.items() if n in self.sliders})
        self.blocks.show(choices)
        if self.modules is not None:
            self.modules.show(self.module_mutator.current_choices)
            self._show_chosen_path()
        self.counters.update(self.resources())
        self.latency.update()
        if record:
            self.history.record(self._all_choices(), key)
        if key != GLOBAL_KEY:  # the all-units slider shows what is kept (it shows its own drag as is)
            self.whole.show_fraction(kept_fraction(self.mutator.mutable_units))
            self._fraction_stale = False
        self._say("")
        self._changed()

    def set_all(self, fraction: float) -> None:
        """Keep ``fraction`` of the channels of every unit (the whole-model slider; a drag is one step)."""
        choices = {u.name: choice_for_fraction(u, fraction) for u in self.mutator.mutable_units}
        self.whole.show_fraction(fraction)
        self.set_choices(choices, key=GLOBAL_KEY)

    def reset(self) -> None:
        """Every unit back to all of its channels."""
        self.set_choices(self.session.max_choices)

    def sample(self, seed: int | None = None) -> dict[Any, Any]:
        """Random choices for every unit (``seed`` makes them repeatable), and a random candidate
        for every search group, as one step; returns the units' choices."""
        choices = self.session.sample_choices(seed)
        self.set_choices(choices)
        return {k: v for k, v in choices.items() if not isinstance(k, ModuleGroup)}

    def apply_budget(self, keep_percent: float, metric: str = "MACs", mode: str = "uniform") -> BudgetFit:
        """Fit "keep ``keep_percent`` % of ``metric``" (``MACs`` or ``Params``) with ``mode``
        (``uniform``, ``by L1 importance``, ``global``; ``by sensitivity`` after a scan, ``measured``
        with an ``eval_fn``) and apply it, as the budget control does."""
        self.budget.percent.value = keep_percent
        self.budget.metric.value = metric
        self.budget.mode.value = mode
        return self.budget.run()

    def _apply_fit(self, fit: BudgetFit) -> None:
        self.set_choices(fit.choices)
        self.plan_history.remember("fitted")

    def undo(self) -> None:
        """One step back (slider drags, dropdowns and whole-model changes alike)."""
        self.session.set_choices(self.history.undo())
        self._show_changes(record=False)

    def redo(self) -> None:
        """One step forward again, after an undo."""
        self.session.set_choices(self.history.redo())
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
        name = NO_UNIT if name is None else name
        if name != NO_UNIT and name not in self.sliders:
            raise KeyError(f"no mutable unit named {name!r}")
        if self.unit_selector.value != name:
            self.unit_selector.value = name  # comes back here through the observer
            return self.graph_view.highlighted_nodes
        self.latency.steps.show(None if name == NO_UNIT else name)  # its latency step curve (debounced)
        return self.graph_view.highlight(None if name == NO_UNIT else name)

    def select_layer(self, node: str) -> Any:
        """What a click on a graph node does: select the (first prunable) unit of that layer,
        highlight it and open its slider's section. Returns the unit's name (None if none)."""
        units = [u for u in self.graph_view.units_of(node) if u in self.sliders]
        if not units:
            self._say(f"{node}: no prunable unit moves this layer")
            return None
        self.panel.open_unit(units[0])
        self.select_unit(units[0])
        more = f" (also in {len(units) - 1} more)" if len(units) > 1 else ""
        self._say(f"{node}: unit {units[0]}, {unit_label(self.mutator.unit(units[0]))}{more}")
        return units[0]

    # -- export, downloads and plans --------------------------------------------------------
    def export(self, check: bool = True) -> nn.Module:
        """The pruned model of plain torch layers (``mutator.to_static()``); with searchable
        ops, only the chosen candidates (``module_mutator.to_static(mutator.to_static())``).
        ``check``: the export is checked against the masked model (``ExportError`` if it differs)."""
        exported = self.session.export(check)
        self.plan_history.remember("exported")
        return exported

    def restore_plan(self, number: int) -> PlanEntry:
        """Apply plan ``number`` of ``history.plans`` again, as one Undo step (the Restore button)."""
        return self.plan_history.restore(number)

    def compare_plans(self, a: int, b: int) -> PlanComparison:
        """Compare plans ``a`` and ``b`` of ``history.plans``: the graph coloured by their
        difference in kept channels, the differing units, counts and scores side by side."""
        return self.plan_history.compare(a, b)

    def offer_downloads(self) -> list[DownloadFile]:
        """Export (``exported``) and show download links for the plan (JSON), the exported model
        (``torch.save`` of the module), its state dict and the plan as Torch-Pruning and MMRazor
        recipes (``recipe_files``); a later change removes the links."""
        name = type(self.mutator.model).__name__.lower()
        self.exported = self.export()
        params = sum(p.numel() for p in self.exported.parameters())
        plan = plan_json(self.plan_history.plan_with_history())  # with the plans tried (history.plans)
        files = [DownloadFile("plan.json", "application/json", plan.encode()),
                 DownloadFile(f"{name}_pruned.pt", "application/octet-stream", torch_bytes(self.exported)),
                 DownloadFile(f"{name}_pruned_state_dict.pt", "application/octet-stream",
                              torch_bytes(self.exported.state_dict())),
                 *recipe_files(self.mutator)]  # the plan for Torch-Pruning and MMRazor
        self.plans.offer(files, f"({params:,} params; load the model with torch.load(path, weights_only=False))")
        self._say(f"exported: explorer.exported holds the pruned model ({params:,} params); "
                  f"download it with the links above")
        return files

    def save_choices(self, path: str | os.PathLike) -> None:
        """Write the current choices as JSON ``{unit_name: choice}``, with searchable ops also
        ``{mutable module name: candidate name}``."""
        write_plan(self.plan_history.plan_with_history(), path)  # with the plans tried (history.plans)
        self._say(f"saved the plan to {os.fspath(path)}")

    def load_choices(self, path: str | os.PathLike) -> None:
        """Apply a JSON plan; one that does not fit raises ``PlanError`` and changes nothing."""
        try:
            tried = self.plan_history.read_history(path)
            self.session.load_plan(path)
        except PlanError as exc:
            self._say(str(exc), error=True)
            raise
        self._show_changes()
        self.plan_history.add_loaded(tried)
        self._say(f"loaded the plan {os.fspath(path)}")

    def _on_upload(self, name: str, content: bytes) -> None:
        """An uploaded plan: applied as one step, or its PlanError shown (nothing changes)."""
        try:
            tried = self.plan_history.read_history(text=content, source=name)
            self.session.load_plan_text(content, name)
        except PlanError as exc:
            self._say(str(exc), error=True)
            return
        self._show_changes()
        self.plan_history.add_loaded(tried)
        self._say(f"loaded the uploaded plan {name}")
