"""Latency: the timing discipline, the profiled table and its cache, the live counter, budgets in ms."""
from __future__ import annotations

import json
import random

import pytest
import torch
from torch import nn

from razor_widgets import (
    ChannelMutator,
    LatencyProfileStopped,
    fit_budget,
    fit_latency_budget,
    measure_latency,
    profile_latency,
    suggest_divisor,
    unit_step_curve,
)
from razor_widgets.counting.latency_cache import LatencyCache
from razor_widgets.counting.latency_profile import axis_counts
from razor_widgets.counting.latency_table import LatencyTable, interpolate
from razor_widgets.counting.latency_timing import summarise, time_call

FAST = {"warmup": 1, "repeats": 3, "align": 8}


class TwinBlocks(nn.Module):
    """A stem and two blocks of the same geometry (each its own unit), pooled into a head."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 32, 3, padding=1)
        self.conv1 = nn.Conv2d(32, 32, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(32)
        self.conv2 = nn.Conv2d(32, 32, 3, padding=1)
        self.bn2 = nn.BatchNorm2d(32)
        self.head = nn.Linear(32, 10)

    def forward(self, x):
        x = torch.relu(self.stem(x))
        x = torch.relu(self.bn1(self.conv1(x)))
        x = torch.relu(self.bn2(self.conv2(x)))
        return self.head(x.mean((2, 3)))


@pytest.fixture
def mutator(one_thread) -> ChannelMutator:
    mutator = ChannelMutator()
    mutator.prepare_from_supernet(TwinBlocks().eval(), torch.randn(1, 3, 16, 16))
    return mutator


@pytest.fixture
def profiled(mutator, tmp_path) -> ChannelMutator:
    profile_latency(mutator, threads=1, cache_dir=tmp_path, **FAST)
    return mutator


# -- timing -------------------------------------------------------------------------------------
def test_summarise_rejects_outliers_and_states_noise():
    timing = summarise([1.0, 1.1, 0.9, 1.0, 1.05, 0.95, 50.0])
    assert timing.rejected == 1 and timing.samples == 6
    assert timing.median_ms == pytest.approx(1.0)
    assert 0 < timing.noise < 0.1


def test_time_call_runs_warmup_and_repeats():
    calls = []
    timing = time_call(lambda: calls.append(1), warmup=2, repeats=4, min_sample_s=0.0)
    assert len(calls) == 1 + 1 + 4  # the first run, one more warm-up, four samples of one call
    assert timing.median_ms >= 0 and timing.samples + timing.rejected == 4


def test_measure_latency_leaves_the_model_as_it_was():
    model = nn.Sequential(nn.Linear(8, 8), nn.Dropout(0.5)).train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    timing = measure_latency(model, torch.randn(1, 8), batch_size=4, threads=1, warmup=1, repeats=3)
    assert timing.median_ms > 0 and timing.p10_ms <= timing.median_ms <= timing.p90_ms
    assert model.training and all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_cpu_clock_times_one_thread_only():
    model = nn.Linear(8, 8)
    assert measure_latency(model, torch.randn(1, 8), threads=1, clock="cpu", warmup=1, repeats=3).median_ms > 0
    with pytest.raises(ValueError, match="one torch thread"):
        measure_latency(model, torch.randn(1, 8), threads=2, clock="cpu")
    with pytest.raises(ValueError, match="clock"):
        measure_latency(model, torch.randn(1, 8), clock="sundial")


def test_calibration_never_predicts_below_zero():
    table = LatencyTable([], 1, 1, "cpu", "float32", "eager")
    table.fit_rest([(100.0, 90.0, 0), (10.0, 20.0, 0)])  # a line through these would cross zero
    assert table.rest_ms == 0.0 and table.scale > 0 and table.predict([]) == 0.0


def test_calibration_drops_one_whole_model_timing_far_off():
    table = LatencyTable([], 1, 1, "cpu", "float32", "eager")
    layers = [100.0, 70.0, 40.0, 20.0, 50.0, 30.0]
    measured = [1.2 * x + 2.0 for x in layers]
    measured[4] *= 1.8  # a timing hit by a busy moment
    table.fit_rest([(m, x, 0) for m, x in zip(measured, layers)])
    assert table.calibration_dropped == [4]
    assert table.combine(60.0, 0) == pytest.approx(1.2 * 60 + 2.0, rel=1e-6)


@pytest.mark.parametrize("kwargs, error", [({"batch_size": 0}, ValueError), ({"threads": 0}, ValueError)])
def test_measure_latency_bad_input(kwargs, error):
    with pytest.raises(error):
        measure_latency(nn.Linear(2, 2), torch.randn(1, 2), **kwargs)
    with pytest.raises(TypeError, match="nn.Module"):
        measure_latency(lambda x: x, torch.randn(1, 2))


# -- the table ----------------------------------------------------------------------------------
def test_interpolation_is_exact_for_bilinear_costs():
    xs, ys = [8.0, 16.0, 32.0], [8.0, 24.0]

    def cost(x, y):
        return 0.5 + 0.1 * x + 0.2 * y + 0.01 * x * y
    table = [[cost(x, y) for y in ys] for x in xs]
    for x, y in [(8, 8), (12, 10), (20, 24), (31, 9)]:
        assert interpolate(xs, ys, table, x, y) == pytest.approx(cost(x, y))


def test_axis_counts_are_steps_of_align_and_the_full_count():
    assert axis_counts(32, 8, 6) == [8, 16, 24, 32]
    assert axis_counts(30, 8, 6) == [8, 16, 24, 30]
    counts = axis_counts(2048, 16, 6)
    assert len(counts) == 6 and counts[0] == 16 and counts[-1] == 2048 and all(c % 16 == 0 for c in counts)


def test_profile_measures_identical_layers_once_and_resumes_from_the_cache(mutator, tmp_path):
    choices = mutator.current_choices
    seen = []
    table = profile_latency(mutator, threads=1, cache_dir=tmp_path, progress=seen.append, **FAST)
    assert mutator.current_choices == choices
    names = {layer.name for layer in table.layers}
    assert {"conv1", "conv2", "bn1", "bn2", "stem", "head"} <= names
    assert [p.done for p in seen] == sorted(p.done for p in seen) and seen[-1].done == seen[-1].total
    total = seen[-1].total
    assert table.measured + table.cached == total
    assert table.cached > 0  # bn1/bn2 (and conv1/conv2 where their grids meet) share timings
    data = json.loads(next(tmp_path.rglob("*.json")).read_text())
    assert data["key"]["threads"] == 1 and data["key"]["torch"] == torch.__version__
    again = profile_latency(mutator, threads=1, cache_dir=tmp_path, **FAST)
    assert again.measured == 0 and again.cached == total


def test_profile_stops_when_asked_and_resumes(mutator, tmp_path):
    done = []
    with pytest.raises(LatencyProfileStopped, match="resume"):
        profile_latency(mutator, threads=1, cache_dir=tmp_path, progress=done.append,
                        should_stop=lambda: len(done) >= 5, **FAST)
    assert getattr(mutator, "latency_table", None) is None
    table = profile_latency(mutator, threads=1, cache_dir=tmp_path, **FAST)
    assert table.cached >= 5


def test_profile_bad_input(mutator, tmp_path):
    with pytest.raises(ValueError, match="backend"):
        profile_latency(mutator, backend="tensorrt", cache_dir=tmp_path)
    with pytest.raises(ValueError, match="align"):
        profile_latency(mutator, align=0, cache_dir=tmp_path)
    path = LatencyCache({"x": 1}, tmp_path).path
    path.write_text("[1, 2]")  # a file of another kind where the cache would be
    with pytest.raises(ValueError, match="not a razor_widgets latency cache"):
        LatencyCache({"x": 1}, tmp_path)
    with pytest.raises(RuntimeError, match="profile_latency"):
        mutator.latency()
    with pytest.raises(RuntimeError, match="profile_latency"):
        fit_budget(mutator, 0.5, metric="latency")


# -- the counter --------------------------------------------------------------------------------
def _kept(mutator):
    return [int(u.current_mask.sum()) // u.repeats for u in mutator.mutable_units]


def test_latency_counter_follows_the_choices_incrementally(profiled):
    table = profiled.latency_table
    full = profiled.latency()
    assert full.ms == pytest.approx(full.original_ms) and full.batch_size == 1 and full.threads == 1
    rng = random.Random(0)
    for _ in range(5):
        unit = rng.choice(profiled.mutable_units)
        profiled.set_choices({unit.name: rng.choice([0.25, 0.5, 1.0])})
        assert profiled.latency().ms == pytest.approx(table.predict(_kept(profiled)))


def test_latency_counter_through_slider_drags(profiled):
    """Several moves of one unit (a drag: its shared layers become one curve), then of others."""
    table = profiled.latency_table
    units = [u.name for u in profiled.mutable_units]
    for name, ratio in [(units[1], 0.5), (units[1], 0.25), (units[1], 0.75), (units[0], 0.5), (units[0], 0.25),
                        (units[1], 1.0), (units[2], 0.5), (units[2], 0.25), (units[1], 0.5)]:
        profiled.set_choices({name: ratio})
        assert profiled.latency().ms == pytest.approx(table.predict(_kept(profiled)))
    profiled.set_choices({u: 0.5 for u in units})
    assert profiled.latency().ms == pytest.approx(table.predict(_kept(profiled)))


def test_latency_what_if_leaves_choices(profiled):
    before = profiled.current_choices
    smaller = {u.name: 0.25 for u in profiled.mutable_units}
    assert profiled.latency(choices=smaller).ms < profiled.latency().ms
    assert profiled.current_choices == before


# -- cliffs ------------------------------------------------------------------------------------
def test_suggest_divisor_removes_cliffs():
    counts = list(range(25, 33))
    steps = [2.0 if c <= 28 else 3.0 for c in counts]  # a step every 4: rising, no cliff
    assert suggest_divisor(counts, steps, 0.01, 32) == 1
    cliff = [1.0 if c % 8 == 0 else 2.0 for c in counts]  # 32 is faster than 25..31
    assert suggest_divisor(counts, cliff, 0.01, 32) == 8
    assert suggest_divisor(counts, cliff, 0.6, 32) == 1  # within the noise: no cliff to remove


def test_unit_step_curve_measures_each_count(mutator, tmp_path):
    before = mutator.current_choices
    unit = mutator.mutable_units[1]
    curve = unit_step_curve(mutator, unit.name, counts=[30, 31, 32], threads=1, warmup=1, repeats=3,
                            cache_dir=tmp_path)
    assert curve.counts == [30, 31, 32] and len(curve.ms) == 3 and all(t > 0 for t in curve.ms)
    assert curve.divisor in (1, 2, 4, 8, 16, 32) and mutator.current_choices == before
    with pytest.raises(ValueError, match="counts"):
        unit_step_curve(mutator, unit.name, counts=[0, 40], cache_dir=tmp_path)


# -- budgets in milliseconds --------------------------------------------------------------------
def _reachable_keep(mutator) -> float:
    """Halfway between the smallest choices' predicted latency and the full model's (a fraction)."""
    smallest = mutator.latency(choices=mutator.min_choices)
    return (smallest.ms / smallest.original_ms + 1) / 2


@pytest.mark.parametrize("mode", ["uniform", "l1"])
def test_latency_budget_fits_the_predicted_latency(profiled, mode):
    before = profiled.current_choices
    keep = _reachable_keep(profiled)
    fit = fit_budget(profiled, keep, metric="latency", mode=mode)
    assert fit.met and fit.latency.ms <= keep * fit.latency.original_ms
    assert profiled.latency(choices=fit.choices).ms == pytest.approx(fit.latency.ms)
    assert profiled.current_choices == before


def test_latency_budget_in_ms_and_bad_input(profiled):
    full = profiled.latency().ms
    keep = _reachable_keep(profiled)
    fit = fit_latency_budget(profiled, max_ms=full * keep)
    assert fit.met and fit.max_ms == pytest.approx(full * keep) and fit.latency.ms <= full * keep
    with pytest.raises(ValueError, match="not both"):
        fit_latency_budget(profiled, keep=0.5, max_ms=1.0)
    with pytest.raises(ValueError, match="metric='latency'"):
        fit_budget(profiled, 0.5, metric="latency", mode="measured")
    with pytest.raises(ValueError, match="max_ms= is for metric='latency'"):
        fit_budget(profiled, 0.5, metric="macs", max_ms=3.0)
    by_ms = fit_budget(profiled, 1.0, metric="latency", max_ms=full * keep)
    assert by_ms.met and by_ms.max_ms == pytest.approx(full * keep)


class Wide(nn.Module):
    """Three 3x3 convolutions of 96 channels at 32x32: big enough to time, small enough for a test."""

    def __init__(self) -> None:
        super().__init__()
        self.convs = nn.ModuleList([nn.Conv2d(3 if i == 0 else 96, 96, 3, padding=1) for i in range(3)])
        self.head = nn.Linear(96, 10)

    def forward(self, x):
        for conv in self.convs:
            x = torch.relu(conv(x))
        return self.head(x.mean((2, 3)))


@pytest.mark.slow
def test_latency_budget_holds_when_measured(one_thread, tmp_path):
    """The export of a fit to 60 % of the latency measures within 60 % of the full export's, plus
    the stated noise of both timings and the 10 % error the prediction may have."""
    mutator = ChannelMutator()
    x = torch.randn(1, 3, 32, 32)
    mutator.prepare_from_supernet(Wide().eval(), x)
    table = profile_latency(mutator, threads=1, cache_dir=tmp_path)
    fit = fit_budget(mutator, 0.6, metric="latency")
    assert fit.met
    full = mutator.to_static(check=False)
    mutator.set_choices(fit.choices)
    pruned = mutator.to_static(check=False)
    rounds = [(measure_latency(full, x, threads=1), measure_latency(pruned, x, threads=1)) for _ in range(3)]
    full_t, pruned_t = (min(r, key=lambda t: t.median_ms) for r in zip(*rounds))
    measured = pruned_t.median_ms / full_t.median_ms
    allowed = 0.6 * (1 + full_t.noise + pruned_t.noise + table.noise) + 0.1
    assert measured <= allowed, (measured, allowed, table.calibration)
