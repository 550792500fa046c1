"""The budget control: "keep X % of MACs (or params)", spread uniformly, by L1 or group importance
(``global``), by sensitivity once a scan exists, or ``measured`` when the explorer has an ``eval_fn``."""
from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import ipywidgets as widgets

from ..budget import BudgetFit, fit_budget
from ..budget.latency_snap import snap_to_fast_counts

METRIC_LABELS = {"MACs": "macs", "Params": "params"}
MODE_LABELS = {"uniform": "uniform", "by L1 importance": "l1", "global": "global"}
LATENCY_LABEL = "Latency"  # offered once a latency table exists: enable_latency()
SENSITIVITY_LABEL = "by sensitivity"  # offered once a sensitivity scan exists: enable_sensitivity()
MEASURED_LABEL = "measured"  # offered when there is an eval_fn: enable_measured()


class BudgetControl:
    """A percentage, a metric and a mode; ``Apply`` finds choices (``fit_budget``) and hands
    them to ``apply(fit)``. ``fit()`` runs the search without applying it."""

    def __init__(self, mutator: Any, apply: Callable[[BudgetFit], None]) -> None:
        self.mutator = mutator
        self._apply = apply
        self.sensitivity = None
        self.eval_fn: Callable | None = None
        self.scores: Callable[[BudgetFit], str] | None = None  # the verdict's score part (the Quality section)
        self.block_scores: Callable[[], dict] | None = None  # depth in uniform / L1 / global: enable_depth()
        self._block_cache: dict | None = None
        self.depth_note = widgets.HTML()
        self.percent = widgets.BoundedFloatText(value=50.0, min=0.1, max=100.0, step=1.0, description="keep %",
                                                style={"description_width": "50px"},
                                                layout=widgets.Layout(width="130px"))
        self.metric = widgets.Dropdown(options=list(METRIC_LABELS), value="MACs", layout=widgets.Layout(width="90px"))
        self.mode = widgets.ToggleButtons(options=list(MODE_LABELS), value="uniform",
                                          style={"button_width": "140px"})
        self.button = widgets.Button(description="Fit budget", button_style="primary",
                                     tooltip="pick choices that keep at most this share of the metric")
        self.result = widgets.Label()
        self.progress = widgets.IntProgress(value=0, min=0, max=1, layout=widgets.Layout(width="160px",
                                                                                         display="none"))
        self.button.on_click(lambda _: self._clicked())
        hidden = widgets.Layout(width="150px", display="none")  # shown once a latency table exists
        self.max_ms = widgets.BoundedFloatText(value=0.0, min=0.0, max=1e9, step=0.5, description="or ≤ ms",
                                               tooltip="Latency: at most this many ms (0: use keep %)",
                                               style={"description_width": "55px"}, layout=hidden)
        self.snap = widgets.Checkbox(value=False, description="snap to fast counts", indent=False,
                                     layout=widgets.Layout(width="160px", display="none"))
        self.snapped: Any = None  # what the last snap moved (SnappedCounts)
        self.widget = widgets.VBox([widgets.HBox([self.percent, self.metric, self.mode, self.button, self.progress]),
                                    widgets.HBox([self.max_ms, self.snap]), self.result, self.depth_note])

    def fit(self) -> BudgetFit:
        """The ``fit_budget`` result for the control's percent, metric and mode (nothing is applied)."""
        metric = self._metric()
        by_ms = {"max_ms": float(self.max_ms.value)} if metric == "latency" and self.max_ms.value > 0 else {}
        if self.mode.value == SENSITIVITY_LABEL:
            fit = fit_budget(self.mutator, self.percent.value / 100.0, metric, "sensitivity",
                             sensitivity=self.sensitivity, **by_ms)
        elif self.mode.value == MEASURED_LABEL:
            fit = self._fit_measured()
        else:
            with_depth = self.block_scores is not None and metric != "latency"
            depth = {"block_scores": self._depth_scores()} if with_depth else {}
            fit = fit_budget(self.mutator, self.percent.value / 100.0, metric, MODE_LABELS[self.mode.value],
                             **by_ms, **depth)
        return self._snapped(fit)

    def enable_depth(self, block_scores: Callable[[], dict] | None, note: str) -> None:
        """Let uniform / L1 / global drop blocks too: ``block_scores()`` gives ``{block name:
        importance}`` (called once, at the first fit that needs it); ``note`` says so (or, with
        ``block_scores=None``, why they cannot)."""
        self.block_scores, self._block_cache = block_scores, None
        self.depth_note.value = note

    def _depth_scores(self) -> dict:
        if self._block_cache is None:
            self._block_cache = self.block_scores()
        return self._block_cache

    def _snapped(self, fit: Any) -> Any:
        """``fit`` with every unit's count snapped to a fast count when the box is ticked (up to the
        end of its step only where that costs no latency: a MACs budget stays met)."""
        self.snapped = None
        widths = getattr(self.mutator, "mutator", self.mutator)  # a session's channel mutator (its latency table)
        if not self.snap.value or getattr(widths, "latency_table", None) is None:
            return fit
        names = {u.name for u in widths.mutable_units}
        self.snapped = snap_to_fast_counts(widths, {k: v for k, v in fit.choices.items() if k in names},
                                           up_when_free=fit.metric == "latency")
        choices = {**fit.choices, **self.snapped.choices}
        changes = {"choices": choices, "resources": self.mutator.resources(choices=choices)}
        if hasattr(fit, "latency"):
            changes["latency"] = self.mutator.latency(choices=choices)
        return dataclasses.replace(fit, **changes)

    def _metric(self) -> str:
        return "latency" if self.metric.value == LATENCY_LABEL else METRIC_LABELS[self.metric.value]

    def enable_latency(self) -> None:
        """Offer "Latency" as a metric (once a latency table exists: ``profile_latency``)."""
        if LATENCY_LABEL not in self.metric.options:
            self.metric.options = (*self.metric.options, LATENCY_LABEL)
        self.max_ms.layout.display = self.snap.layout.display = ""

    def enable_sensitivity(self, sensitivity: Any) -> None:
        """Offer "by sensitivity" (the budget that loses the least predicted score of this scan)."""
        self.sensitivity = sensitivity
        if SENSITIVITY_LABEL not in self.mode.options:
            self.mode.options = (*self.mode.options, SENSITIVITY_LABEL)

    def enable_measured(self, eval_fn: Callable, scores: Callable[[BudgetFit], str] | None = None) -> None:
        """Offer "measured" (the candidate of best measured ``eval_fn``, ``fit_budget(mode="measured")``);
        ``scores(fit)`` gives the verdict's predicted and measured scores after every fit."""
        self.eval_fn, self.scores = eval_fn, scores
        if MEASURED_LABEL not in self.mode.options:
            self.mode.options = (*self.mode.options, MEASURED_LABEL)

    def _fit_measured(self) -> BudgetFit:
        def progress(done: int, total: int) -> None:
            self.progress.max, self.progress.value = max(1, total), done
            self.progress.description = f"{done}/{total}"
        self.progress.layout.display = ""
        try:
            return fit_budget(self.mutator, self.percent.value / 100.0, self._metric(), "measured",
                              sensitivity=self.sensitivity, eval_fn=self.eval_fn, progress=progress)
        finally:
            self.progress.layout.display = "none"

    def _clicked(self) -> None:
        """The button: a fit that fails (an ``eval_fn`` that raises, say) says why on the result line."""
        try:
            self.run()
        except (ValueError, TypeError, RuntimeError) as exc:  # EvaluationError is a RuntimeError
            self.result.value = f"{self.mode.value}: {exc}"

    def run(self) -> BudgetFit:
        """Fit the budget and apply the choices; the result line says how close it came."""
        fit = self.fit()
        self._apply(fit)
        res, attr = fit.resources, fit.metric
        got = fit.latency.percent if attr == "latency" else getattr(res, f"{attr}_percent")
        verdict = "met" if fit.met else "not reachable: these are the smallest choices"
        scores = self.scores(fit) if self.scores is not None else ""
        asked = f"{self.percent.value:g} %"
        if attr == "latency":
            got_text = f"{fit.latency.ms:.2f} ms, {got:.1f} % of the original"
            asked = f"{fit.max_ms:.2f} ms" if self.max_ms.value > 0 else asked
        else:
            got_text = f"{got:.1f} % of the original"
        snapped = f"; snapped {len(self.snapped.moved)} units to fast counts" if self.snapped is not None else ""
        self.result.value = (f"{self.metric.value} {got_text} (asked {asked}, {self.mode.value}): "
                             f"{verdict}{snapped}{'; ' + scores if scores else ''}")
        return fit
