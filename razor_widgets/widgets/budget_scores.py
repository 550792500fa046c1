"""The scores a budget fit gets in the explorer: measured after every fit, next to the score a
sensitivity scan predicts for it (so a bad prediction is seen), and marked on the score-vs-MACs
plot with every candidate a ``measured`` fit tried."""
from __future__ import annotations

from typing import Any

from ..quality import restored_choices
from .quality_plots import ScorePoint


def predicted_score(mutator: Any, sensitivity: Any) -> float:
    """The scan's prediction for the mutator's current choices: its baseline minus the sum of
    each scanned unit's predicted drop at the fraction it keeps (drops assumed to add up)."""
    names = {str(u.name): u for u in mutator.mutable_units}
    drop = 0.0
    for key in sensitivity.table:
        unit = names.get(str(key))
        if unit is not None:
            drop += sensitivity.predicted_drop(key, unit.activated_channels / unit.num_channels)
    return sensitivity.baseline - drop


def budget_verdict(panel: Any, fit: Any) -> str:
    """Score the applied ``fit`` (a ``measured`` fit brings its own), add it and its candidates to
    the plot, and say "predicted ..., measured ..." for the verdict line."""
    mutator = panel.mutator
    measured = fit.score if fit.score is not None else panel._score("the budget's choices")
    parts = []
    if panel.sensitivity_result is not None:
        parts.append(f"predicted score {predicted_score(mutator, panel.sensitivity_result):.4g}")
    parts.append(f"measured score {measured:.4g}")
    with restored_choices(mutator):
        for candidate in fit.candidates:
            macs = mutator.resources(choices=candidate.choices).macs_percent
            panel.points.append(ScorePoint(macs, candidate.score, "candidate", candidate.name,
                                           panel._latency_ms(candidate.choices)))
    if fit.candidates:
        parts.append(f"best of {len(fit.candidates)} measured candidates")
    panel.points.append(ScorePoint(fit.resources.macs_percent, measured, "budget", fit.mode,
                                   panel._latency_ms(fit.choices)))
    panel.last_score = measured
    panel.redraw_pareto()
    return ", ".join(parts)
