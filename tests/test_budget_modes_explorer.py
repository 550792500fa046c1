"""The budget control's "global" and "measured" modes in the explorer (widget models; the
browser test is tests/test_browser_budget_modes.py): measured is offered only with an eval_fn,
the verdict line shows the measured score (and the scan's prediction once a scan exists), and
the score-vs-MACs plot marks the fit and every candidate it tried."""
from __future__ import annotations

import pytest
import torch

from razor_widgets import PruningExplorer
from razor_widgets.widgets.budget_scores import predicted_score

from helpers import Accuracy, digits_net, trained_digits_net

X = torch.zeros(1, 1, 8, 8)


@pytest.fixture
def explorer(one_thread):
    accuracy = Accuracy()
    ex = PruningExplorer(trained_digits_net(), X, eval_fn=accuracy,
                         channel_unit_cfg="GroupMagnitudeMutableChannelUnit", redraw_delay=0)
    yield ex, accuracy
    ex.quality.close()


def test_measured_is_offered_only_with_an_eval_fn():
    ex = PruningExplorer(digits_net(), X)
    assert "global" in ex.budget.mode.options and "measured" not in ex.budget.mode.options
    fit = ex.apply_budget(50, "MACs", "global")
    assert fit.mode == "global" and fit.met and ex.mutator.current_choices == fit.choices
    assert "global): met" in ex.budget.result.value and "score" not in ex.budget.result.value


def test_a_measured_fit_shows_its_score_and_marks_its_candidates(explorer):
    ex, accuracy = explorer
    assert "measured" in ex.budget.mode.options
    fit = ex.apply_budget(40, "MACs", "measured")
    assert fit.mode == "measured" and fit.met and ex.mutator.current_choices == fit.choices
    assert fit.score == accuracy(ex.mutator.model)
    assert f"measured score {fit.score:.4g}" in ex.budget.result.value
    assert f"best of {len(fit.candidates)} measured candidates" in ex.budget.result.value
    sources = [p.source for p in ex.quality.points]
    assert sources.count("candidate") == len(fit.candidates) and sources[-1] == "budget"
    assert ex.budget.progress.value == ex.budget.progress.max == len(fit.candidates)
    assert ex.budget.progress.layout.display == "none"  # shown only while it fits


def test_after_a_scan_every_fit_shows_the_prediction_next_to_the_measured_score(explorer):
    ex, accuracy = explorer
    sens = ex.sensitivity([0.25, 0.5])
    fit = ex.apply_budget(30, "MACs", "by sensitivity")
    measured = accuracy(ex.mutator.model)
    predicted = predicted_score(ex.mutator, sens)
    assert predicted == pytest.approx(sens.baseline - sum(
        sens.predicted_drop(u.name, u.activated_channels / u.num_channels) for u in ex.mutator.mutable_units))
    assert f"predicted score {predicted:.4g}, measured score {measured:.4g}" in ex.budget.result.value
    assert fit.mode == "sensitivity" and ex.quality.points[-1].score == measured
    ex.apply_budget(30, "MACs", "uniform")
    assert "predicted score" in ex.budget.result.value and "measured score" in ex.budget.result.value


def test_a_failing_eval_fn_is_reported_and_changes_nothing(one_thread):
    calls = []

    def failing(model):
        calls.append(1)
        if len(calls) > 1:
            raise RuntimeError("the data loader broke")
        return 1.0
    ex = PruningExplorer(digits_net(), X, eval_fn=failing, channel_unit_cfg="GroupMagnitudeMutableChannelUnit",
                         redraw_delay=0)
    try:
        before = dict(ex.mutator.current_choices)
        ex.budget.mode.value = "measured"
        ex.budget.button.click()
        assert "the data loader broke" in ex.budget.result.value and ex.budget.result.value.startswith("measured")
        assert ex.mutator.current_choices == before
    finally:
        ex.quality.close()
