"""PReLU (one slope or one per channel, module or ``F.prelu``): a PReLU CNN and a 3-D UNet with
PReLU and transposed convolutions prune, export and count exactly."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from razor_widgets import ChannelMutator

from helpers import check_model, make_nontrivial

pytestmark = pytest.mark.usefixtures("one_thread")


class PReLUCNN(nn.Module):
    """conv-bn-PReLU(per channel) twice, a shared-slope PReLU, a functional PReLU with a
    parameter of the model's own, pooled into a linear head."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.bn1, self.act1 = nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.PReLU(8)
        self.conv2, self.bn2, self.act2 = nn.Conv2d(8, 12, 3, padding=1), nn.BatchNorm2d(12), nn.PReLU()
        self.conv3 = nn.Conv2d(12, 6, 1)
        self.slope = nn.Parameter(torch.rand(6) * 0.5)
        self.head = nn.Linear(6, 5)

    def forward(self, x):
        x = self.act2(self.bn2(self.conv2(self.act1(self.bn1(self.conv1(x))))))
        x = F.prelu(self.conv3(x), self.slope)
        return self.head(x.mean((2, 3)))


class Block3d(nn.Module):
    """conv3d-bn-PReLU twice."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv3d(cin, cout, 3, padding=1), nn.BatchNorm3d(cout), nn.PReLU(cout),
                                  nn.Conv3d(cout, cout, 3, padding=1), nn.BatchNorm3d(cout), nn.PReLU(cout))

    def forward(self, x):
        return self.body(x)


class UNet3d(nn.Module):
    """A two-level 3-D UNet: PReLU activations, a transposed-conv upsampling, a skip concat."""

    def __init__(self) -> None:
        super().__init__()
        self.down1, self.down2 = Block3d(1, 4), Block3d(4, 8)
        self.up = nn.ConvTranspose3d(8, 4, 2, stride=2)
        self.act = nn.PReLU(4)
        self.dec = Block3d(8, 4)
        self.out = nn.Conv3d(4, 2, 1)

    def forward(self, x):
        skip = self.down1(x)
        deep = self.down2(F.max_pool3d(skip, 2))
        return self.out(self.dec(torch.cat([skip, self.act(self.up(deep))], 1)))


def test_a_prelu_cnn_prunes_every_unit():
    torch.manual_seed(0)
    checked = check_model(make_nontrivial(PReLUCNN()), torch.randn(2, 3, 8, 8), choice_sets=3)
    widths = sorted(u.num_channels for u in checked.mutator.mutable_units)
    assert widths == [6, 8, 12]
    assert not [w for w in checked.warnings if "prelu" in w.lower()], checked.warnings
    unit = next(u for u in checked.mutator.mutable_units if u.num_channels == 8)
    assert {c.name for c in unit.output_related} >= {"conv1", "bn1", "act1"}


def test_a_pruned_prelu_exports_its_kept_slopes():
    torch.manual_seed(0)
    model, x = make_nontrivial(PReLUCNN()).eval(), torch.randn(2, 3, 8, 8)
    mutator = ChannelMutator(channel_unit_cfg=dict(type="L1MutableChannelUnit"))
    mutator.prepare_from_supernet(model, example_inputs=x)
    mutator.set_choices({u.name: 0.5 for u in mutator.mutable_units})
    static = mutator.to_static()
    assert type(static.act1) is nn.PReLU and static.act1.num_parameters == 4 == static.act1.weight.numel()
    assert static.act2.weight.numel() == 1 and static.slope.numel() == 3
    assert torch.equal(static.act1.weight, model.act1.weight[mutator.model.act1.mask("out_channels")])


def test_a_3d_unet_with_prelu_and_transposed_convs():
    torch.manual_seed(0)
    checked = check_model(make_nontrivial(UNet3d()), torch.randn(1, 1, 4, 4, 4))
    roots = sorted(u.name.split("_")[0] for u in checked.mutator.mutable_units)
    # every conv of the blocks and the transposed conv (its half of the concat, with its PReLU)
    assert roots == ["dec.body.0", "dec.body.3", "down1.body.0", "down1.body.3", "down2.body.0", "down2.body.3", "up"]
    up = next(u for u in checked.mutator.mutable_units if u.name.startswith("up"))
    assert {c.name for c in up.output_related} >= {"up", "act"}
