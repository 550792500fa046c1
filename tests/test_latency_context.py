"""Latency in context: layers timed inside whole forwards, the per-layer fit, the allocator in the cache key."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from razor_widgets import ChannelMutator, profile_latency
from razor_widgets.counting.latency_cache import machine_key
from razor_widgets.counting.latency_context import context_times, fit_context, hook_overhead_ms
from razor_widgets.counting.latency_table import LatencyLayer
from razor_widgets.counting.spec import Form


def _line_layer(name: str, per_channel_ms: float, out_elements: int = 10) -> LatencyLayer:
    layer = LatencyLayer(name, "g", "out", Form(0, ()), Form(0, ((0, 1),)), 1, out_elements, context_name=name)
    layer.xs, layer.ys = [8.0, 16.0, 32.0], [0.0]
    layer.table = [[8 * per_channel_ms], [16 * per_channel_ms], [32 * per_channel_ms]]
    return layer


def test_fit_context_recovers_a_layer_slower_in_the_model():
    slow, same = _line_layer("slow", 0.01), _line_layer("same", 0.02)
    points = [([k], {"slow": 3.0 * slow.alone_ms([k]), "same": same.alone_ms([k])}) for k in (8, 16, 24, 32)]
    assert fit_context([slow, same], points) == 2
    assert slow.context_scale == pytest.approx(3.0, rel=1e-6)
    assert same.context_scale == pytest.approx(1.0, rel=1e-6)
    assert slow.ms([16]) == pytest.approx(3.0 * slow.alone_ms([16]))


def test_fit_context_finds_a_cost_per_output_element():
    layer = _line_layer("faults", 0.01, out_elements=1000)
    points = [([k], {"faults": layer.alone_ms([k]) + 2e-4 * layer.elements([k])}) for k in (8, 12, 16, 24, 32)]
    fit_context([layer], points)
    assert layer.context_per_element == pytest.approx(2e-4, rel=0.05)
    assert layer.ms([20]) == pytest.approx(layer.alone_ms([20]) + 2e-4 * layer.elements([20]), rel=0.05)


def test_fit_context_leaves_a_layer_never_seen_in_context():
    layer = _line_layer("absent", 0.01)
    assert fit_context([layer], [([8], {}), ([16], {})]) == 0
    assert (layer.context_scale, layer.context_per_element) == (1.0, 0.0)


def test_context_times_times_named_modules_and_removes_its_hooks():
    model = nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 8)).eval()
    x = torch.randn(4, 64)
    times = context_times(model, lambda: model(x), {"0", "2"}, forwards=3, overhead_ms=hook_overhead_ms(50))
    assert set(times) == {"0", "2"}
    assert all(t >= 0 for t in times.values())
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in model.modules())


def test_allocator_settings_are_part_of_the_cache_key(monkeypatch):
    monkeypatch.delenv("MALLOC_TRIM_THRESHOLD_", raising=False)
    before = machine_key("cpu", 1, torch.float32)
    monkeypatch.setenv("MALLOC_TRIM_THRESHOLD_", "1000000")
    after = machine_key("cpu", 1, torch.float32)
    assert before != after and after["allocator"] == {"MALLOC_TRIM_THRESHOLD_": "1000000"}


def test_profile_fits_the_pruned_layers_in_context(one_thread, tmp_path):
    model = nn.Sequential(nn.Conv2d(3, 32, 3, padding=1), nn.ReLU(), nn.Conv2d(32, 16, 3, padding=1)).eval()
    mutator = ChannelMutator()
    mutator.prepare_from_supernet(model, torch.randn(1, 3, 16, 16))
    table = profile_latency(mutator, threads=1, cache_dir=tmp_path, warmup=1, repeats=3, align=8)
    convs = [layer for layer in table.layers if layer.name in ("0", "2")]
    assert convs and all(layer.context_name == layer.name for layer in convs)
    assert any(layer.context_scale != 1.0 or layer.context_per_element for layer in convs)
    kept = [u.num_channels // u.repeats for u in mutator.mutable_units]
    assert table.layer_sum(kept)[0] == pytest.approx(sum(layer.ms(kept) for layer in table.layers))
