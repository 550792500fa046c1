"""Local response norms (``nn.LocalResponseNorm``, ``nn.CrossMapLRN2d``): pruned, they normalise over
the kept channels only, in the masked model as in the export; their channel count comes from the
traced channels (the modules hold none)."""
from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from razor_widgets import MODELS, ChannelMutator
from razor_widgets.layers import DynamicCrossMapLRN2d, DynamicLocalResponseNorm

from helpers import check_model, make_nontrivial

pytestmark = pytest.mark.usefixtures("one_thread")


class LRNNet(nn.Module):
    """AlexNet-like: conv-ReLU-LRN, then a concat of two convs through a CrossMapLRN2d (its
    channels come from two units), a conv and a linear head."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.lrn1 = nn.Conv2d(3, 8, 3, padding=1), nn.LocalResponseNorm(3, alpha=0.5, k=1.0)
        self.conv2, self.conv3 = nn.Conv2d(8, 6, 3, padding=1), nn.Conv2d(8, 4, 1)
        self.lrn2 = nn.CrossMapLRN2d(5, alpha=0.5, beta=0.75, k=1.0)
        self.conv4, self.head = nn.Conv2d(10, 5, 1), nn.Linear(5, 3)

    def forward(self, x):
        x = self.lrn1(F.relu(self.conv1(x)))
        x = self.lrn2(torch.cat([self.conv2(x), self.conv3(x)], 1))
        return self.head(self.conv4(x).mean((2, 3)))


def test_an_lrn_net_prunes_every_unit():
    """Full choices bit-identical, export == masked, counts exact (the zeroing oracle does not
    apply: a zeroed channel is still a neighbour)."""
    torch.manual_seed(0)
    checked = check_model(make_nontrivial(LRNNet()), torch.randn(2, 3, 8, 8), choice_sets=3)
    assert sorted(u.num_channels for u in checked.mutator.mutable_units) == [4, 5, 6, 8]
    assert not [w for w in checked.warnings if "lrn" in w.lower() or "response" in w.lower()], checked.warnings
    model = checked.mutator.model
    assert isinstance(model.lrn1, DynamicLocalResponseNorm) and isinstance(model.lrn2, DynamicCrossMapLRN2d)
    assert model.lrn2.mutable_attrs["channels"].num_channels == 10  # from both units' ranges


def test_a_pruned_lrn_normalises_over_the_kept_channels():
    """The masked model against a hand-written oracle: the norm of the kept channels of conv1
    (``F.local_response_norm``, neighbours among the kept only), pruned channels zero."""
    torch.manual_seed(0)
    model, x = make_nontrivial(LRNNet()).eval(), torch.randn(2, 3, 8, 8)
    original = {k: v.clone() for k, v in model.state_dict().items()}
    mutator = ChannelMutator(channel_unit_cfg=dict(type="L1MutableChannelUnit"))
    mutator.prepare_from_supernet(model, example_inputs=x)
    unit = next(u for u in mutator.mutable_units if any(c.name == "lrn1" for c in u.channels))
    mutator.set_choices({unit.name: 0.5})
    kept = unit.current_mask.nonzero().squeeze(1)
    with torch.no_grad():
        y = F.relu(F.conv2d(x, original["conv1.weight"], original["conv1.bias"], padding=1))
        want = torch.zeros_like(y)
        want[:, kept] = F.local_response_norm(y[:, kept], 3, alpha=0.5, k=1.0)
        got = model.lrn1(F.relu(model.conv1(x)))
        assert torch.equal(got, want)
        static = mutator.to_static()
        assert isinstance(static.lrn1, nn.LocalResponseNorm) and not hasattr(static.lrn1, "mutable_attrs")
        assert torch.equal(static.lrn1(F.relu(static.conv1(x))), want[:, kept])


def test_a_config_parse_gives_the_lrn_its_channel_count():
    """Prepared from a config with channels (no trace), the norm's channel count comes from the
    config's channel ranges; the masked models agree."""
    torch.manual_seed(0)
    model, x = make_nontrivial(LRNNet()).eval(), torch.randn(2, 3, 8, 8)
    twin = copy.deepcopy(model)
    mutator = ChannelMutator(channel_unit_cfg=dict(type="L1MutableChannelUnit"))
    mutator.prepare_from_supernet(model, example_inputs=x)
    mutator.set_choices({u.name: 0.5 for u in mutator.mutable_units})
    config = mutator.config_template(with_channels=True, with_unit_init_args=True)
    again = MODELS.build(config)
    again.prepare_from_supernet(twin)
    again.set_choices(mutator.current_choices)
    assert twin.lrn2.mutable_attrs["channels"].num_channels == 10
    with torch.no_grad():
        assert torch.equal(twin(x), model(x))


def test_a_dynamic_lrn_built_directly_is_told_its_channel_count():
    """A searchable model may build the dynamic op itself: it takes ``num_channels``."""
    layer = DynamicLocalResponseNorm(3, num_channels=8)
    assert layer.mutable_attrs["channels"].num_channels == 8
    x = torch.randn(1, 8, 2, 2)
    assert torch.equal(layer(x), nn.LocalResponseNorm(3)(x))
