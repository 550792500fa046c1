"""Snap to fast counts and a unit's predicted latency curve (read from the latency table)."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from razor_widgets import (
    ChannelMutator,
    Sensitivity,
    fast_counts,
    fit_budget,
    profile_latency,
    snap_to_fast_counts,
    step_divisor,
    unit_latency_curve,
)


@pytest.fixture
def profiled(one_thread, tmp_path) -> ChannelMutator:
    model = nn.Sequential(nn.Conv2d(3, 48, 3, padding=1), nn.ReLU(), nn.Conv2d(48, 40, 3, padding=1), nn.ReLU(),
                          nn.Conv2d(40, 8, 1)).eval()
    mutator = ChannelMutator()
    mutator.prepare_from_supernet(model, torch.randn(1, 3, 12, 12))
    profile_latency(mutator, threads=1, cache_dir=tmp_path, warmup=1, repeats=3, align=8)
    return mutator


def test_fast_counts_end_the_steps_of_a_curve():
    curve = [0.0] + [1.0] * 8 + [2.0] * 8 + [3.0] * 4  # counts 1..20: steps end at 8, 16 and the full 20
    assert fast_counts(curve) == [8, 16, 20]
    assert step_divisor(curve) == 8
    assert step_divisor([0.0, 1.0, 2.0, 3.0]) == 1


def test_unit_curve_is_what_if_latency_at_each_count(profiled):
    unit = profiled.mutable_units[0]
    full = unit.num_channels // unit.repeats
    curve = unit_latency_curve(profiled, unit)
    assert len(curve) == full + 1
    for k in (8, 13, full):
        expected = profiled.latency(choices={unit.name: k / full}).ms
        assert curve[k] == pytest.approx(expected, rel=1e-9)
    assert profiled.latency().ms == pytest.approx(curve[full], rel=1e-9)


def test_snap_moves_counts_to_step_ends_and_leaves_the_choices(profiled):
    units = profiled.mutable_units
    odd = {u.name: 13 / (u.num_channels // u.repeats) for u in units}
    before = {u.name: u.current_choice for u in units}
    snapped = snap_to_fast_counts(profiled, odd)
    assert {u.name: u.current_choice for u in units} == before
    assert snapped.moved, "13 of 48 / 40 channels is inside a step of 8"
    for name, (_, after) in snapped.moved.items():
        assert after % snapped.divisors[name] == 0 or after == profiled.unit(name).num_channels
    assert snapped.ms_after <= snapped.ms_before * (1 + 1e-9)
    down = snap_to_fast_counts(profiled, odd, up_when_free=False)
    assert down.moved and down.ms_after <= down.ms_before * (1 + 1e-9)  # down, or up past a cliff: never slower
    assert down.ms_after <= snapped.ms_after * (1 + 1e-9)


@pytest.fixture
def wide(one_thread, tmp_path) -> ChannelMutator:
    """Two 3x3 convs of 64 channels at 32x32: each unit's channels cost clearly more than the noise."""
    model = nn.Sequential(nn.Conv2d(3, 64, 3, padding=1), nn.ReLU(), nn.Conv2d(64, 64, 3, padding=1), nn.ReLU(),
                          nn.Conv2d(64, 8, 1)).eval()
    mutator = ChannelMutator()
    mutator.prepare_from_supernet(model, torch.randn(1, 3, 32, 32))
    profile_latency(mutator, threads=1, cache_dir=tmp_path, warmup=2, repeats=5, align=16)
    return mutator


def test_latency_budget_by_sensitivity_spares_the_sensitive_unit(wide):
    profiled = wide
    names = [u.name for u in profiled.mutable_units]
    ratios = (0.25, 0.5, 0.75)

    def scan(sensitive: str) -> Sensitivity:  # the other unit costs nothing to prune
        return Sensitivity(0.9, {n: {r: 0.1 + 0.8 * r if n == sensitive else 0.9 for r in ratios} for n in names})
    before = profiled.current_choices
    full = profiled.latency().ms
    fits = {}
    for sensitive in names:
        fit = fit_budget(profiled, 0.7, metric="latency", mode="sensitivity", sensitivity=scan(sensitive))
        assert fit.mode == "sensitivity" and profiled.current_choices == before
        assert fit.met and fit.latency.ms <= 0.7 * full
        assert profiled.latency(choices=fit.choices).ms == pytest.approx(fit.latency.ms)
        fits[sensitive] = _fractions(profiled, fit.choices)
    for sensitive in names:  # each unit keeps more where it is the sensitive one
        other = next(n for n in names if n != sensitive)
        assert fits[sensitive][sensitive] >= fits[other][sensitive], fits
    assert fits[names[0]] != fits[names[1]]
    by_ms = fit_budget(profiled, 1.0, metric="latency", mode="sensitivity", sensitivity=scan(names[1]),
                       max_ms=0.85 * full)
    assert by_ms.met and by_ms.max_ms == pytest.approx(0.85 * full)


def _fractions(mutator, choices):
    saved = mutator.current_choices
    mutator.set_choices(choices)
    out = {u.name: int(u.current_mask.sum()) / u.num_channels for u in mutator.mutable_units}
    mutator.set_choices(saved)
    return out
