"""sensitivity_scan: faithful per-unit scores, the same on every executor, choices restored after
errors and interrupts, errors that name the unit and ratio, and the Sensitivity record."""
from __future__ import annotations

import concurrent.futures as cf
import math
import os

import pytest
import torch
from matplotlib.figure import Figure

from razor_widgets import EvaluationError, Sensitivity, sensitivity_scan
from razor_widgets.budget import choice_for_fraction

from helpers import NegativeLoss, prepared, trained_digits_net

RATIOS = (0.25, 0.5, 0.75)


@pytest.fixture(scope="module")
def scanned(one_thread):
    """A trained digits net, its mutator (L1 units) and a serial scan with a smooth score."""
    net = trained_digits_net()
    mutator = prepared(net)
    score = NegativeLoss()
    return mutator, score, sensitivity_scan(mutator, score, RATIOS, progress=False)


def masks(mutator) -> dict:
    return {u.name: u.current_mask.clone() for u in mutator.mutable_units}


def same_masks(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_each_score_is_eval_fn_with_that_unit_alone_pruned(scanned):
    mutator, score, sens = scanned
    assert sens.evaluations == len(mutator.mutable_units) * len(RATIOS) + 1
    assert sens.baseline == score(mutator.model)  # at full choices
    for unit in mutator.mutable_units:
        for ratio in RATIOS:
            choices = {**mutator.max_choices, unit.name: choice_for_fraction(unit, ratio)}
            mutator.set_choices(choices)
            assert sens.table[unit.name][ratio] == score(mutator.model)
            assert sens.kept[unit.name][ratio] == unit.activated_channels
            assert math.isclose(sens.table[unit.name][ratio], score(mutator.to_static()), rel_tol=1e-5, abs_tol=1e-6)
    mutator.set_max_choices()
    drops = sens.mean_drop()
    assert max(drops.values()) > 10 * min(drops.values()) > 0  # units really differ


def test_the_choices_in_place_before_the_scan_come_back(scanned):
    mutator, score, _ = scanned
    first = mutator.mutable_units[0].name
    mutator.set_choices({first: 0.5})
    before = masks(mutator)
    sens = sensitivity_scan(mutator, score, [0.5], progress=False)
    assert same_masks(masks(mutator), before)
    assert sens.baseline == scanned[2].baseline  # every other unit full: the user's choice is not in it
    mutator.set_max_choices()


def test_threads_give_each_task_its_own_model_and_equal_the_serial_scan(scanned):
    mutator, score, sens = scanned
    seen = []

    def eval_fn(model):
        seen.append(id(model))
        return score(model)

    with cf.ThreadPoolExecutor(2) as pool:
        threaded = sensitivity_scan(mutator, eval_fn, RATIOS, executor=pool, progress=False)
    assert threaded == sens
    assert id(mutator.model) not in seen and len(set(seen)) <= 2  # one copy per worker thread, reused


def test_processes_equal_the_serial_scan(scanned):
    mutator, score, sens = scanned
    with cf.ProcessPoolExecutor(2) as pool:
        assert sensitivity_scan(mutator, score, RATIOS, executor=pool, progress=False) == sens


@pytest.mark.slow
def test_a_dask_cluster_of_two_worker_processes_equals_the_serial_scan(scanned):
    distributed = pytest.importorskip("dask.distributed")
    mutator, score, sens = scanned
    before = masks(mutator)
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=None) as cluster, distributed.Client(cluster) as client:
        executor = client.get_executor()
        assert sensitivity_scan(mutator, lambda m: score(m), RATIOS, executor=executor, progress=False) == sens
        threads = client.run(torch.get_num_threads)
    assert set(threads.values()) == {1}  # set by the scan in each worker
    assert same_masks(masks(mutator), before)


class FailOn:
    """An eval_fn that returns ``bad`` (or raises it) on call number ``call`` (0 is the baseline)."""

    def __init__(self, score, call: int, bad) -> None:
        self.score, self.call, self.bad, self.calls = score, call, bad, 0

    def __call__(self, model):
        self.calls += 1
        if self.calls - 1 == self.call:
            if isinstance(self.bad, BaseException):
                raise self.bad
            return self.bad
        return self.score(model)


@pytest.mark.parametrize("bad, says", [
    (ZeroDivisionError("no data"), "ZeroDivisionError: no data"),
    ("high", "returned 'high' (str), not a number"),
    (float("nan"), "returned nan, not a finite number"),
    (None, "returned None"),
    (torch.ones(2), "tensor of shape (2,)"),
])
def test_a_failing_eval_fn_names_the_unit_and_ratio_and_changes_nothing(scanned, bad, says):
    mutator, score, _ = scanned
    mutator.set_choices({mutator.mutable_units[1].name: 0.75})
    before = masks(mutator)
    first = mutator.mutable_units[0].name
    with pytest.raises(EvaluationError) as info:
        sensitivity_scan(mutator, FailOn(score, 2, bad), RATIOS, progress=False)  # 2: the first unit at 0.5
    assert f"unit {first!r} at ratio 0.5" in str(info.value) and says in str(info.value)
    assert (info.value.unit, info.value.ratio) == (first, 0.5)
    assert same_masks(masks(mutator), before)
    with pytest.raises(EvaluationError, match=r"the full model \(baseline\)"):
        sensitivity_scan(mutator, FailOn(score, 0, bad), RATIOS, progress=False)
    assert same_masks(masks(mutator), before)
    mutator.set_max_choices()


def test_keyboard_interrupt_restores_the_choices(scanned):
    mutator, score, _ = scanned
    mutator.set_choices({mutator.mutable_units[0].name: 0.5})
    before = masks(mutator)
    with pytest.raises(KeyboardInterrupt):
        sensitivity_scan(mutator, FailOn(score, 4, KeyboardInterrupt()), RATIOS, progress=False)
    assert same_masks(masks(mutator), before)
    with cf.ThreadPoolExecutor(2) as pool, pytest.raises(EvaluationError, match=r"unit '.*' at ratio"):
        sensitivity_scan(mutator, FailOn(score, 3, RuntimeError("boom")), RATIOS, executor=pool, progress=False)
    assert same_masks(masks(mutator), before)
    mutator.set_max_choices()


@pytest.mark.parametrize("ratios, error, says", [
    ([0.5, 0.0], ValueError, "ratio 0.0 is outside (0, 1]"),
    ([1.5], ValueError, "ratio 1.5 is outside (0, 1]"),
    ([-0.25], ValueError, "ratio -0.25"),
    ([float("nan")], ValueError, "ratio nan"),
    (["half"], TypeError, "ratio 'half' is not a number"),
    ([True], TypeError, "ratio True"),
    ([], ValueError, "at least one ratio"),
    (0.5, TypeError, "ratios must be a list"),
])
def test_bad_ratios_are_refused_before_anything_runs(scanned, ratios, error, says):
    mutator, score, _ = scanned
    before = masks(mutator)
    calls = []
    with pytest.raises(error) as info:
        sensitivity_scan(mutator, lambda m: calls.append(1) or 1.0, ratios, progress=False)
    assert says in str(info.value)
    assert not calls and same_masks(masks(mutator), before)


def test_bad_units_executors_and_eval_fns_are_refused(scanned):
    mutator, score, _ = scanned
    with pytest.raises(KeyError, match="no mutable unit named 'nope'"):
        sensitivity_scan(mutator, score, units=["nope"], progress=False)
    with pytest.raises(TypeError, match="eval_fn must be callable"):
        sensitivity_scan(mutator, 0.9, progress=False)
    with pytest.raises(TypeError, match="executor must be a concurrent.futures.Executor"):
        sensitivity_scan(mutator, score, executor="threads", progress=False)


class LosesSomeTasks(cf.ThreadPoolExecutor):
    """An executor whose task for one unit fails on the executor's side (a lost worker)."""

    def __init__(self, unit) -> None:
        super().__init__(2)
        self.unit = unit

    def submit(self, fn, *args):
        if args[2] == self.unit and args[3] is not None:
            future = cf.Future()
            future.set_exception(ConnectionError("worker lost"))
            return future
        return super().submit(fn, *args)


def test_a_failing_executor_task_names_the_unit_and_ratio(scanned):
    mutator, score, _ = scanned
    before = masks(mutator)
    unit = mutator.mutable_units[2].name
    with LosesSomeTasks(unit) as pool, pytest.raises(EvaluationError) as info:
        sensitivity_scan(mutator, score, [0.5], executor=pool, progress=False)
    assert f"unit {unit!r} at ratio 0.5: ConnectionError: worker lost" in str(info.value)
    assert same_masks(masks(mutator), before)


def test_a_worker_process_that_dies_is_reported_with_unit_and_ratio(scanned):
    mutator, score, _ = scanned
    first = mutator.mutable_units[0].name

    baseline = scanned[2].baseline

    def dies_on_first_unit(model):
        value = score(model)
        if value != baseline:  # the pruned model: the worker process dies
            os._exit(3)
        return value

    died = r"evaluating (unit '.*' at ratio 0.5|the full model \(baseline\)): BrokenProcessPool"
    with cf.ProcessPoolExecutor(2) as pool, pytest.raises(EvaluationError, match=died):
        sensitivity_scan(mutator, dies_on_first_unit, [0.5], units=[first], executor=pool, progress=False)
    assert mutator.current_choices == mutator.max_choices


def test_progress_reports_every_evaluation(scanned):
    mutator, score, _ = scanned
    seen = []
    sensitivity_scan(mutator, score, [0.5], units=[mutator.mutable_units[0].name], progress=lambda *a: seen.append(a))
    assert seen == [(0, 2), (1, 2), (2, 2)]


def test_csv_round_trip_and_plots(scanned, tmp_path):
    _, _, sens = scanned
    path = tmp_path / "sens.csv"
    text = sens.to_csv(path)
    assert path.read_text() == text and text.splitlines()[0] == "unit,ratio,kept,num_channels,score"
    assert Sensitivity.from_csv(path) == sens == Sensitivity.from_csv(text)
    with pytest.raises(ValueError, match="line 3"):
        Sensitivity.from_csv(text.replace(",0.25,", ",quarter,", 1))
    with pytest.raises(ValueError, match="header"):
        Sensitivity.from_csv("a,b\n1,2\n")
    fig = sens.plot()
    assert isinstance(fig, Figure) and len(fig.axes[0].lines) == len(sens.units) + 1
    heat = sens.plot("heatmap")
    assert heat.axes[0].images[0].get_array().shape == (len(sens.units), len(RATIOS))
    with pytest.raises(ValueError, match="kind must be one of"):
        sens.plot("pie")


def test_the_default_progress_bar_is_tqdm(scanned, capsys):
    mutator, score, _ = scanned
    sensitivity_scan(mutator, score, [0.5], units=[mutator.mutable_units[0].name])
    err = capsys.readouterr().err
    assert "sensitivity scan" in err and "2/2" in err


def test_every_returned_figure_displays_as_an_image_without_pyplot(scanned):
    """What Jupyter (and Voilà) shows for ``sens.plot()`` as a cell's last line: a PNG, not
    ``<Figure size ... with 1 Axes>``; IPython's own formatter decides, with no pyplot imported
    by the package and no inline backend registered."""
    from IPython.core.formatters import DisplayFormatter

    _, _, sens = scanned
    for kind in ("curves", "heatmap"):
        data, _ = DisplayFormatter().format(sens.plot(kind))
        assert data["image/png"][:8] == b"\x89PNG\r\n\x1a\n", kind
