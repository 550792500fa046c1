"""The explorer's Quality section: evaluate() is eval_fn of the masked model, scans colour the
graph and unlock "by sensitivity", live scores never block a slider and the newest wins."""
from __future__ import annotations

import threading
import time

import pytest
import torch

from razor_widgets import EvaluationError, PruningExplorer
from razor_widgets.widgets.quality_plots import ScorePoint, pareto_front

from helpers import Accuracy, digits_net, trained_digits_net

X = torch.zeros(1, 1, 8, 8)


@pytest.fixture
def explorer(one_thread):
    accuracy = Accuracy()
    ex = PruningExplorer(trained_digits_net(), X, eval_fn=accuracy, channel_unit_cfg="L1MutableChannelUnit",
                         redraw_delay=0)
    yield ex, accuracy
    ex.quality.close()


def test_evaluate_is_eval_fn_of_the_masked_model(explorer):
    ex, accuracy = explorer
    assert "Quality" in ex.extra.children[-1].titles
    full = ex.evaluate()
    names = list(ex.sliders)
    ex.sliders[names[0]].value = 0.5
    ex.sliders[names[2]].value = 0.25
    score = ex.evaluate()
    assert score == accuracy(ex.mutator.model) < full
    assert score == pytest.approx(accuracy(ex.export()), abs=2 / len(accuracy.y))
    assert ex.quality.baseline == full and f"{score:.4g}" in ex.quality.score.value
    assert [p.source for p in ex.quality.points] == ["evaluated", "evaluated"]
    assert ex.quality.points[-1].macs_percent == ex.resources().macs_percent


def test_the_scan_colours_the_graph_and_offers_by_sensitivity(explorer):
    ex, accuracy = explorer
    ex.sliders[list(ex.sliders)[1]].value = 0.75
    before = ex.mutator.current_choices
    assert "by sensitivity" not in ex.budget.mode.options
    colours = dict(ex.graph_view.colours)
    sens = ex.sensitivity([0.25, 0.5])
    assert ex.mutator.current_choices == before
    assert ex.quality.progress.value == ex.quality.progress.max == sens.evaluations == 7
    assert ex.quality.curves.value and ex.quality.colour_graph.value
    assert ex.graph_view.colours != colours and ex.graph_view.unit_values.min() == 0.0
    assert sum(p.source == "scan" for p in ex.quality.points) == 6
    fit = ex.apply_budget(50, "MACs", "by sensitivity")
    assert fit.mode == "sensitivity" and fit.met and ex.mutator.current_choices == fit.choices
    ex.quality.colour_graph.value = False
    assert ex.graph_view.unit_values is None


def test_live_scores_follow_the_sliders_and_the_newest_wins(one_thread):
    accuracy = Accuracy()
    release = threading.Event()
    calls = []

    def slow(model):
        calls.append(1)
        if len(calls) == 2:  # the first live score waits until newer moves were made
            release.wait(10)
        return accuracy(model)

    ex = PruningExplorer(trained_digits_net(), X, eval_fn=slow, channel_unit_cfg="L1MutableChannelUnit")
    try:
        ex.quality.full_score()
        ex.quality.live.value = True
        ex.quality.debouncer.delay = 0
        names = list(ex.sliders)
        ex.sliders[names[0]].value = 0.5  # its live score blocks in the worker thread
        deadline = time.monotonic() + 10
        while len(calls) < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        start = time.perf_counter()
        ex.sliders[names[0]].value = 0.25  # waits behind it: cancelled by the next
        ex.sliders[names[1]].value = 0.5
        moving = time.perf_counter() - start
        assert ex.counters.resources == ex.mutator.resources()  # counted at once, eval_fn still busy
        assert not release.is_set() and len(calls) == 2
        release.set()
        score = ex.quality.live_score.wait(10)
        assert moving < 1.0  # the sliders never waited for eval_fn
        assert score == accuracy(ex.mutator.model)
        live = [p for p in ex.quality.points if p.source == "live"]
        assert len(live) == 1 and live[0].score == score  # the stale ones were dropped or cancelled
        assert ex.quality.live_score.dropped == 1 and len(calls) == 3
        assert "live" in ex.quality.score.value
    finally:
        release.set()
        ex.quality.close()


def test_without_eval_fn_there_is_no_quality_section():
    ex = PruningExplorer(digits_net(), X)
    assert ex.quality is None and ex.extra.children == ()
    with pytest.raises(ValueError, match="no eval_fn"):
        ex.evaluate()
    with pytest.raises(TypeError, match="eval_fn must be callable"):
        PruningExplorer(digits_net(), X, eval_fn="accuracy")


def test_a_failing_eval_fn_is_reported_and_changes_nothing(one_thread):
    def broken(model):
        raise RuntimeError("no data")

    ex = PruningExplorer(digits_net(), X, eval_fn=broken)
    before = ex.mutator.current_choices
    with pytest.raises(EvaluationError, match=r"the full model \(baseline\): RuntimeError: no data"):
        ex.evaluate()
    ex.quality.scan_button.click()
    assert "RuntimeError: no data" in ex.quality.message.value and ex.mutator.current_choices == before
    ex.quality.ratios.value = "0.5, 2"
    ex.quality.scan_button.click()
    assert "ratio 2.0 is outside (0, 1]" in ex.quality.message.value
    ex.quality.close()


def test_the_pareto_front_keeps_the_undominated_points():
    points = [ScorePoint(100, 0.98, "evaluated"), ScorePoint(50, 0.90, "scan"), ScorePoint(60, 0.85, "scan"),
              ScorePoint(30, 0.70, "live"), ScorePoint(50, 0.80, "scan"), ScorePoint(90, 0.98, "scan")]
    assert [(p.macs_percent, p.score) for p in pareto_front(points)] == [(30, 0.70), (50, 0.90), (90, 0.98)]
