"""Depth in the latency prediction (issue 28, item 5): a dropped block's layers and ops, its
residual add included, leave the latency table's sum; the export without the block measures
close to the prediction."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from razor_widgets import ChannelMutator, measure_latency, profile_latency
from razor_widgets.counting.latency_blocks import block_rows

FAST = {"warmup": 1, "repeats": 3, "align": 8}


class Block(nn.Module):
    """``relu(x + f(x))`` with a conv-BN-ReLU-conv-BN branch: a removable block."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.f = nn.Sequential(nn.Conv2d(c, c, 3, padding=1), nn.BatchNorm2d(c), nn.ReLU(),
                               nn.Conv2d(c, c, 3, padding=1), nn.BatchNorm2d(c))

    def forward(self, x):
        return torch.relu(x + self.f(x))


class Stack(nn.Module):
    """A stem, ``n`` identity-shortcut blocks in a ModuleList, a pooled linear head."""

    def __init__(self, c: int = 16, n: int = 2) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, c, 3, padding=1)
        self.blocks = nn.ModuleList([Block(c) for _ in range(n)])
        self.head = nn.Linear(c, 10)

    def forward(self, x):
        x = torch.relu(self.stem(x))
        for block in self.blocks:
            x = block(x)
        return self.head(x.mean((2, 3)))


def _prepared(c: int, n: int, size: int) -> ChannelMutator:
    torch.manual_seed(0)
    mutator = ChannelMutator()
    mutator.prepare_from_supernet(Stack(c, n).eval(), torch.randn(1, 3, size, size))
    return mutator


def _sum_without(table, rows, kept):
    """The prediction from the table's entries not in ``rows`` at ``kept``, the calibration's
    factor read at the whole sum (the widths: the layers left keep their sizes)."""
    ms = sum(layer.ms(kept) for layer in table.layers)
    factor = table.scale + table.quad * ms / table.full_layers
    others = [layer for i, layer in enumerate(table.layers) if i not in rows]
    return (factor * sum(layer.ms(kept) for layer in others) + table.rest_ms
            + table.rest_ms_per_element * sum(layer.elements(kept) for layer in others))


def test_a_dropped_block_takes_its_layers_and_residual_add_out_of_the_prediction(one_thread, tmp_path):
    mutator = _prepared(16, 2, 16)
    table = profile_latency(mutator, threads=1, cache_dir=tmp_path, **FAST)
    block = mutator.removable_blocks[1]
    rows = block_rows(table, block.path)
    names = {table.layers[i].name for i in rows}
    assert {"blocks.1.f.0", "blocks.1.f.3"} <= names  # its convs
    assert any(name.startswith("blocks.1:add#") for name in names)  # its residual add
    assert all(name.startswith("blocks.1") for name in names)
    full = mutator.latency().ms
    kept = [u.num_channels // u.repeats for u in mutator.mutable_units] + [1]
    mutator.set_choices({block.name: "drop"})
    dropped = mutator.latency()
    assert dropped.ms == pytest.approx(_sum_without(table, set(rows), kept))
    assert dropped.ms < full and dropped.original_ms == pytest.approx(full)
    assert mutator.latency(choices={block.name: "keep"}).ms == pytest.approx(full)  # a what-if ...
    assert mutator.current_choices[block.name] == "drop"  # ... that leaves the choice
    mutator.set_choices({block.name: "keep"})
    assert mutator.latency().ms == pytest.approx(full)


def test_depth_and_width_together_follow_the_units(one_thread, tmp_path):
    mutator = _prepared(16, 2, 16)
    profile_latency(mutator, threads=1, cache_dir=tmp_path, **FAST)
    block = mutator.removable_blocks[0].name
    half = {u.name: 0.5 for u in mutator.mutable_units}
    both = mutator.latency(choices={**half, block: "drop"}).ms
    assert both < mutator.latency(choices=half).ms
    assert both < mutator.latency(choices={block: "drop"}).ms


@pytest.mark.slow
def test_the_export_without_a_block_measures_close_to_the_prediction(one_thread, tmp_path):
    """Four blocks of 32 channels at 32x32, two dropped (and every width halved): the export's
    measured ms (one thread, CPU clock, best of 3) is within the stated noise of the timings and
    the table, plus 35 %, of the prediction (dropping nothing from the sum would be 2x off)."""
    mutator = _prepared(32, 4, 32)
    table = profile_latency(mutator, threads=1, cache_dir=tmp_path, clock="cpu", warmup=3, repeats=9, align=8)
    blocks = [b.name for b in mutator.removable_blocks]
    for widths in (1.0, 0.5):
        mutator.set_choices({**{u.name: widths for u in mutator.mutable_units}, blocks[0]: "drop", blocks[2]: "drop"})
        predicted = mutator.latency().ms
        export = mutator.to_static(check=False)
        assert sum(isinstance(m, Block) for m in export.modules()) == 2
        timing = min((measure_latency(export, mutator.example_inputs, threads=1, clock="cpu", repeats=25)
                      for _ in range(3)), key=lambda t: t.median_ms)
        allowed = timing.noise + table.noise + 0.35
        error = abs(predicted - timing.median_ms) / timing.median_ms
        assert error <= allowed, (widths, predicted, timing.median_ms, allowed, table.calibration)


def test_the_explorers_latency_counter_follows_a_block_toggle(one_thread, tmp_path):
    from razor_widgets import PruningExplorer

    mutator = _prepared(16, 2, 16)
    profile_latency(mutator, threads=1, cache_dir=tmp_path, **FAST)
    ex = PruningExplorer(mutator, redraw_delay=0)
    full = mutator.latency().ms
    assert f"{full:.2f} ms" in ex.latency.text
    ex.blocks.toggles["block:blocks.0"].value = "drop"
    dropped = mutator.latency().ms
    assert dropped < full and f"{dropped:.2f} ms of {full:.2f} ms" in ex.latency.text
    ex.undo()
    assert f"{full:.2f} ms of {full:.2f} ms" in ex.latency.text
