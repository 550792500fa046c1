"""Bilinear layers: two input sides in one weight ``[out, in1, in2]``, each a reader of its own
unit (or of the same one); the output a writer. Full choices bit-identical, export == masked ==
zeroing oracle, counts exact."""
from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from razor_widgets import ChannelMutator, count_resources
from razor_widgets.layers import DynamicBilinear

from helpers import check_model, make_nontrivial

pytestmark = pytest.mark.usefixtures("one_thread")


class TwoTowers(nn.Module):
    """Two token towers joined by a bilinear layer (each input side its own unit), then a head."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Linear(4, 6), nn.Linear(5, 8)
        self.join = nn.Bilinear(6, 8, 7)
        self.head = nn.Linear(7, 3)

    def forward(self, x, z):
        return self.head(torch.relu(self.join(torch.relu(self.a(x)), torch.sigmoid(self.b(z)))))


class SelfBilinear(nn.Module):
    """``bilinear(h, h)``: both input sides read the same unit."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Linear(4, 6)
        self.pair = nn.Bilinear(6, 6, 5, bias=False)
        self.head = nn.Linear(5, 2)

    def forward(self, x):
        h = torch.sigmoid(self.embed(x))
        return self.head(self.pair(h, h))


def _inputs() -> tuple[torch.Tensor, torch.Tensor]:
    return torch.randn(2, 3, 4), torch.randn(2, 3, 5)


def test_two_towers_prune_both_input_sides_and_the_output():
    torch.manual_seed(0)
    checked = check_model(make_nontrivial(TwoTowers()), _inputs(), choice_sets=3)
    units = {u.num_channels: u for u in checked.mutator.mutable_units}
    assert sorted(units) == [6, 7, 8]
    assert {(c.name, c.param_dim) for c in units[8].input_related} == {("join.weight", 2)}
    assert {c.name for c in units[6].input_related} == {"join"}
    assert {c.name for c in units[7].output_related} == {"join"}
    assert isinstance(checked.mutator.model.join, DynamicBilinear)


def test_a_self_bilinear_prunes_one_unit_on_both_sides():
    torch.manual_seed(0)
    checked = check_model(make_nontrivial(SelfBilinear()), torch.randn(2, 4), choice_sets=3)
    unit = next(u for u in checked.mutator.mutable_units if u.num_channels == 6)
    assert {(c.name, c.param_dim) for c in unit.input_related} == {("pair", None), ("pair.weight", 2)}


def test_the_export_is_a_plain_bilinear_of_the_kept_sides():
    """Each side cut to its kept count; the counts are the reference count of the export, MACs
    ``rows * out * in1 * in2``."""
    torch.manual_seed(0)
    model, (x, z) = make_nontrivial(TwoTowers()).eval(), _inputs()
    mutator = ChannelMutator(channel_unit_cfg=dict(type="L1MutableChannelUnit"))
    mutator.prepare_from_supernet(model, example_inputs=(x, z))
    mutator.set_choices({u.name: 0.5 for u in mutator.mutable_units})
    static = mutator.to_static()
    join = static.join
    assert type(join) is nn.Bilinear and (join.out_features, join.in1_features, join.in2_features) == (4, 3, 4)
    assert join.weight.shape == (4, 3, 4)
    exported = count_resources(static, (x, z))
    macs_join = 2 * 3 * 4 * 3 * 4
    macs = 2 * 3 * (4 * 3 + 5 * 4 + 4 * 3) + macs_join
    assert mutator.resources().macs == exported.macs == macs
    with torch.no_grad():
        assert torch.allclose(static(x, z), model(x, z), atol=1e-6)


def test_the_masked_bilinear_ignores_pruned_inputs_that_are_not_zero():
    """The second input goes through a sigmoid: its pruned features are 0.5, not 0, in the masked
    model; the layer's weight is read masked, so they contribute nothing."""
    torch.manual_seed(0)
    model, (x, z) = make_nontrivial(TwoTowers()).eval(), _inputs()
    original = copy.deepcopy(model)
    mutator = ChannelMutator()
    mutator.prepare_from_supernet(model, example_inputs=(x, z))
    unit = next(u for u in mutator.mutable_units if u.num_channels == 8)
    mutator.set_choices({unit.name: 0.5})
    kept = unit.current_mask
    with torch.no_grad():
        h1, h2 = torch.relu(original.a(x)), torch.sigmoid(original.b(z))
        want = nn.functional.bilinear(h1, h2[..., kept], original.join.weight[:, :, kept], original.join.bias)
        assert torch.allclose(model.join(h1, torch.sigmoid(model.b(z))), want, atol=1e-6)
