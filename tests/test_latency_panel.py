"""The explorer's Latency counter and "Profile latency" (the widget, without a browser)."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from razor_widgets import PruningExplorer

FAST = {"warmup": 1, "repeats": 3, "align": 8}


@pytest.fixture
def small(one_thread, tmp_path) -> PruningExplorer:
    net = nn.Sequential(nn.Conv2d(3, 32, 3), nn.BatchNorm2d(32), nn.ReLU(), nn.Conv2d(32, 64, 3), nn.ReLU(),
                        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, 10))
    explorer = PruningExplorer(net.eval(), torch.randn(1, 3, 24, 24), redraw_delay=0)
    explorer.latency.profile_kwargs.update(FAST, cache_dir=str(tmp_path))
    explorer.latency.threads.value = 1
    return explorer


def test_counter_says_not_measured_then_follows_the_sliders(small):
    assert "not measured" in small.latency.text
    before = small.mutator.current_choices
    seen = []
    small.latency._show_progress = seen.append  # every progress report (the page gets ten a second)
    small.latency.start(wait=True)
    assert small.latency.error is None and small.mutator.current_choices == before
    assert seen and seen[-1].done == seen[-1].total and "timings in" in small.latency.progress_text.value
    full = small.mutator.latency()
    assert f"{full.ms:.2f} ms of {full.original_ms:.2f} ms (100.0 %)" in small.latency.text
    assert "batch 1, 1 thread, cpu" in small.latency.text
    name = small.mutator.mutable_units[-1].name
    small.sliders[name].value = small.sliders[name].min  # a person drags one slider to its end
    now = small.mutator.latency()
    assert now.ms < full.ms and f"{now.ms:.2f} ms" in small.latency.text
    small.reset()
    assert f"{full.ms:.2f} ms of" in small.latency.text


def test_budget_control_offers_latency_once_profiled(small):
    assert "Latency" not in small.budget.metric.options
    small.latency.start(wait=True)
    assert "Latency" in small.budget.metric.options
    smallest = small.mutator.latency(choices=small.mutator.min_choices)
    keep = 100 * (smallest.ms / smallest.original_ms + 1) / 2
    fit = small.apply_budget(keep, "Latency")
    assert fit.met and small.mutator.latency().percent <= keep
    assert small.budget.result.value.startswith("Latency ") and "met" in small.budget.result.value
    small.undo()
    assert small.mutator.latency().percent == pytest.approx(100.0)


def test_stop_keeps_the_old_state_and_a_second_profile_resumes(small):
    small.latency._show_progress = lambda p: setattr(small.latency, "_stop", p.done >= 3)
    small.latency.start(wait=True)
    assert "resumes" in small.latency.progress_text.value and "not measured" in small.latency.text
    assert small.latency.button.description == "Profile latency"
    del small.latency._show_progress
    small.latency.start(wait=True)
    assert small.mutator.latency_table.cached >= 3 and "not measured" not in small.latency.text


def test_budget_at_most_n_ms_and_snap_to_fast_counts(small):
    budget = small.budget
    assert budget.max_ms.layout.display == "none" and budget.snap.layout.display == "none"
    small.latency.start(wait=True)
    assert budget.max_ms.layout.display == "" and budget.snap.layout.display == ""
    full = small.mutator.latency().ms
    budget.metric.value = "Latency"
    budget.max_ms.value = round(0.8 * full, 4)
    fit = budget.run()
    assert fit.met and fit.max_ms == pytest.approx(budget.max_ms.value)
    assert small.mutator.latency().ms <= budget.max_ms.value
    assert f"(asked {fit.max_ms:.2f} ms, uniform): met" in budget.result.value
    budget.snap.value = True
    snapped = budget.run()
    assert snapped.met and budget.snapped is not None and "fast counts" in budget.result.value
    assert small.mutator.latency().ms == pytest.approx(snapped.latency.ms)
    for name, (_, after) in budget.snapped.moved.items():
        full_count = small.mutator.unit(name).num_channels
        assert after % budget.snapped.divisors[name] == 0 or after == full_count


def test_step_curve_shows_for_the_selected_unit(small):
    name = small.mutator.mutable_units[0].name
    steps = small.latency.steps
    steps.debouncer.delay = 0
    small.select_unit(name)
    assert "Profile latency first" in steps.caption.value
    small.latency.start(wait=True)
    small.select_unit(None)
    small.select_unit(name)
    assert steps.image.layout.display == "" and steps.image.value[:4] == b"\x89PNG"
    assert f"multiples of {steps.divisor}" in steps.caption.value and len(steps.curve) == 33
    small.sliders[name].value = small.sliders[name].min  # the plot follows the slider (debounced: at once here)
    unit = small.mutator.unit(name)
    kept = int(unit.current_mask.sum()) // unit.repeats
    assert kept < 32 and f"now {kept}: {steps.curve[kept]:.2f} ms" in steps.caption.value
    steps.measure(wait=True)  # "Measure steps": the unit's layers timed at its top counts, in a thread
    measured = steps.measured[name]
    assert measured.counts == list(range(1, 33)) and len(measured.ms) == 32
    assert f"measured: divisor {measured.divisor} removes its cliffs" in steps.caption.value
    assert steps.measure_button.description == "Measure steps" and not steps.measure_button.disabled
    small.select_unit(None)
    assert steps.image.layout.display == "none" and steps.measure_button.layout.display == "none"
