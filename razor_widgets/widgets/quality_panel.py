"""The explorer's Quality section: the score of the current choices, live scores, sensitivity
scans (curves, the graph coloured by sensitivity, "by sensitivity" budgets) and a plot of score
against MACs for every choice set evaluated, with its Pareto front."""
from __future__ import annotations

import html
import threading
from collections.abc import Callable, Iterable
from typing import Any

import ipywidgets as widgets

from ..budget import choice_for_fraction
from ..quality import DEFAULT_RATIOS, EvaluationError, Sensitivity, restored_choices, sensitivity_scan, to_score
from .budget_scores import budget_verdict
from .debounce import Debouncer
from .live_score import LiveScore
from .quality_plots import ScorePoint, curves_png, robustness, score_vs_macs_png


class QualityPanel:
    """``evaluate()`` scores the masked model; ``scan(ratios)`` runs a sensitivity scan.

    ``resources()`` gives the counters' figures (for the score-vs-MACs plot); ``graph_view``
    and ``budget`` are the explorer's, coloured and extended once a scan exists. With
    ``live`` on, every change of choices asks for a score ``live_delay`` seconds after the
    last one, computed off the main thread (``live_score``)."""

    def __init__(self, mutator: Any, eval_fn: Callable, resources: Callable[[], Any], graph_view: Any = None,
                 budget: Any = None, live_delay: float = 0.4) -> None:
        if not callable(eval_fn):
            raise TypeError(f"eval_fn must be callable (model -> float), got {type(eval_fn).__name__}")
        self.mutator, self.eval_fn, self._resources = mutator, eval_fn, resources
        self.graph_view, self.budget = graph_view, budget
        self.baseline: float | None = None
        self.sensitivity_result: Sensitivity | None = None
        self.points: list[ScorePoint] = []
        self.last_score: float | None = None
        self.on_evaluated: Callable[[float], None] | None = None  # called with each evaluate()'s score
        self._draw_lock = threading.Lock()
        self.live_score = LiveScore(mutator, eval_fn, self._on_live)
        self.debouncer = Debouncer(self.live_score.request, live_delay)
        self._build()

    # -- layout ---------------------------------------------------------------------------
    def _build(self) -> None:
        self.evaluate_button = widgets.Button(description="Evaluate", icon="check", button_style="primary",
                                              tooltip="explorer.evaluate(): eval_fn of the masked model")
        self.live = widgets.Checkbox(value=False, description="live (re-evaluate once the sliders settle)",
                                     indent=False, layout=widgets.Layout(width="300px"))
        self.score = widgets.HTML("score: not evaluated yet")
        self.ratios = widgets.Text(value=", ".join(f"{r:g}" for r in DEFAULT_RATIOS), description="ratios",
                                   style={"description_width": "45px"}, layout=widgets.Layout(width="220px"))
        self.scan_button = widgets.Button(description="Sensitivity scan", icon="bar-chart",
                                          tooltip="each unit alone at each ratio, every other unit full")
        self.progress = widgets.IntProgress(value=0, min=0, max=1, description="", layout=widgets.Layout(width="220px"))
        self.message = widgets.HTML()
        self.colour_graph = widgets.Checkbox(value=False, description="colour the graph by sensitivity",
                                             indent=False, disabled=True, layout=widgets.Layout(width="260px"))
        self.curves = widgets.Image(format="png", layout=widgets.Layout(max_width="none"))
        self.pareto = widgets.Image(format="png", layout=widgets.Layout(max_width="none"))
        self.latency_plot = widgets.Image(format="png", layout=widgets.Layout(max_width="none", display="none"))
        self.evaluate_button.on_click(lambda _: self._guarded(self.evaluate))
        self.scan_button.on_click(lambda _: self._guarded(lambda: self.scan(self._typed_ratios())))
        self.colour_graph.observe(lambda change: self._show_colours(change["new"]), "value")
        self.widget = widgets.VBox([
            widgets.HBox([self.evaluate_button, self.live, self.score]),
            widgets.HBox([self.ratios, self.scan_button, self.progress, self.colour_graph]),
            self.message,
            widgets.HBox([self.pareto, self.latency_plot, self.curves], layout=widgets.Layout(flex_flow="row wrap")),
        ])

    def _guarded(self, action: Callable[[], Any]) -> None:
        try:
            action()
        except (EvaluationError, ValueError, TypeError, KeyError) as exc:
            self._say(str(exc.args[0] if isinstance(exc, KeyError) and exc.args else exc), error=True)

    def _say(self, text: str, error: bool = False) -> None:
        colour = "#b00020" if error else "#333"
        self.message.value = f"<span style='color:{colour}'>{html.escape(text)}</span>" if text else ""

    def _typed_ratios(self) -> list[float]:
        try:
            return [float(r) for r in self.ratios.value.replace(";", ",").split(",") if r.strip()]
        except ValueError:
            raise ValueError(f"ratios: numbers in (0, 1] separated by commas, got {self.ratios.value!r}") from None

    # -- scores ---------------------------------------------------------------------------
    def full_score(self) -> float:
        """The full model's score (every unit full), computed once."""
        if self.baseline is None:
            with restored_choices(self.mutator):
                self.mutator.set_max_choices()
                self.baseline = self._score("the full model (baseline)")
        return self.baseline

    def _score(self, what: str) -> float:
        try:
            return to_score(self.eval_fn(self.mutator.model))
        except Exception as exc:
            raise EvaluationError(f"evaluating {what}: {type(exc).__name__}: {exc}") from exc

    def evaluate(self) -> float:
        """``eval_fn`` of the masked model at the current choices; shown against the baseline
        and added to the score-vs-MACs plot."""
        baseline = self.full_score()
        score = self._score("the current choices")
        self._record(score, "evaluated")
        if self.on_evaluated is not None:  # the explorer's plan history
            self.on_evaluated(score)
        self._show_score(score, baseline)
        return score

    def _record(self, score: float, source: str, macs_percent: float | None = None, label: str = "",
                choices: dict | None = None) -> None:
        if macs_percent is None:
            macs_percent = self._resources().macs_percent
        self.points.append(ScorePoint(float(macs_percent), score, source, label, self._latency_ms(choices)))
        self.last_score = score
        self.redraw_pareto()

    def _latency_ms(self, choices: dict | None = None) -> float | None:
        """Predicted ms of the choices (a lookup), None without a latency table or with a block dropped."""
        if getattr(self.mutator, "latency_table", None) is None:
            return None
        try:
            return self.mutator.latency(choices=choices).ms
        except (RuntimeError, ValueError):
            return None

    def _show_score(self, score: float, baseline: float, live: bool = False) -> None:
        delta = score - baseline
        colour = "#2e7d32" if delta >= 0 else "#b00020"
        self.score.value = (f"score <b>{score:.4g}</b> (baseline {baseline:.4g}, "
                            f"<span style='color:{colour}'>{delta:+.4g}</span>){' live' if live else ''}")

    def redraw_pareto(self) -> None:
        """Draw the score-vs-MACs plot: every scored choice set, the Pareto front and the baseline."""
        with self._draw_lock:
            points = list(self.points)
            self.pareto.value = score_vs_macs_png(points, self.baseline)
            if any(p.latency_ms is not None for p in points):  # beside it: score against predicted latency
                self.latency_plot.value = score_vs_macs_png(points, self.baseline, x="latency_ms")
                self.latency_plot.layout.display = ""

    # -- live scores ----------------------------------------------------------------------
    def choices_changed(self) -> None:
        """The explorer's choices changed: in live mode, ask for a score once they settle."""
        if self.live.value:
            self.debouncer.schedule()

    def _on_live(self, choices: dict, score: float | None, error: str | None) -> None:
        if error is not None:
            self._say(f"live score: {error}", error=True)
            return
        self._record(score, "live", self.mutator.resources(choices=choices).macs_percent, choices=choices)
        if self.baseline is not None:
            self._show_score(score, self.baseline, live=True)

    # -- sensitivity ----------------------------------------------------------------------
    def scan(self, ratios: Iterable[float] = DEFAULT_RATIOS, units: Iterable[Any] | None = None,
             executor: Any = None) -> Sensitivity:
        """Run ``sensitivity_scan`` with the progress bar, then show the curves, colour the
        graph by sensitivity and offer "by sensitivity" in the budget control."""
        self.progress.bar_style = ""
        sens = sensitivity_scan(self.mutator, self.eval_fn, ratios, units=units, executor=executor,
                                progress=self._progress)
        self.sensitivity_result, self.baseline = sens, sens.baseline
        self.progress.bar_style = "success"
        self._record_scan(sens)
        self.curves.value = curves_png(sens)
        self.colour_graph.disabled = self.graph_view is None
        if self.colour_graph.value:
            self._show_colours(True)
        else:
            self.colour_graph.value = self.graph_view is not None  # shows the colours through the observer
        if self.budget is not None:
            self.budget.enable_sensitivity(sens)
        self._say(f"scanned {len(sens.units)} units x {len(sens.ratios)} ratios ({sens.evaluations} evaluations); "
                  f"baseline {sens.baseline:.4g}")
        return sens

    def _progress(self, done: int, total: int) -> None:
        self.progress.max = max(1, total)
        self.progress.value = done
        self.progress.description = f"{done}/{total}"

    def _record_scan(self, sens: Sensitivity) -> None:
        """Each scanned choice set as a point of the score-vs-MACs plot (what-if counts)."""
        with restored_choices(self.mutator):
            self.mutator.set_max_choices()
            for unit, row in sens.table.items():
                for ratio, score in row.items():
                    choice = choice_for_fraction(self.mutator.unit(unit), ratio)
                    res = self.mutator.resources(choices={unit: choice})
                    self.points.append(ScorePoint(res.macs_percent, score, "scan", f"{unit} @ {ratio:g}",
                                                  self._latency_ms({unit: choice})))
        self.redraw_pareto()

    def _show_colours(self, on: bool) -> None:
        view = self.graph_view
        if view is None:
            return
        if on and self.sensitivity_result is not None:
            names = [u.name for u in self.mutator.mutable_units]
            view.colour_units(robustness(self.sensitivity_result, names))
        else:
            view.colour_units(None)

    def close(self) -> None:
        """Cancel a pending live score and stop the live scoring thread."""
        self.debouncer.cancel()
        self.live_score.close()


def quality_section(explorer: Any, eval_fn: Callable | None, calibration: Any = None) -> QualityPanel | None:
    """The explorer's Quality section (None without ``eval_fn``), added below its sliders.
    ``calibration`` is handed to the units whose importance needs data."""
    if calibration is not None:
        from ..importance.criteria import calibrate  # the criteria that read activations (Taylor, activation)
        calibrate(explorer.mutator, calibration)
    if eval_fn is None:
        return None
    panel = QualityPanel(explorer.mutator, eval_fn, explorer.resources, explorer.graph_view, explorer.budget)
    explorer.add_section("Quality", panel.widget).selected_index = 0
    if explorer.budget is not None:
        explorer.budget.enable_measured(eval_fn, lambda fit: budget_verdict(panel, fit))
    return panel
