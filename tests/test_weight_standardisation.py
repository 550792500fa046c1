"""Weight-standardised convolutions (the weight normalised per output channel over its inputs in
the conv's own forward, as NF-Nets do): their inputs are prunable, the statistics are taken over
the kept inputs in the masked model as in the export."""
from __future__ import annotations

import random

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from razor_widgets import ChannelMutator, count_resources

from helpers import check_model, make_nontrivial

pytestmark = pytest.mark.usefixtures("one_thread")


class ScaledWSConv(nn.Conv2d):
    """Scaled weight standardisation: ``F.batch_norm`` over each output row of the weight, a
    learnt gain, a scale fixed at construction (NF-Net's ``ScaledStdConv2d``, written here)."""

    def __init__(self, cin: int, cout: int, k: int, **kwargs) -> None:
        super().__init__(cin, cout, k, padding=k // 2, **kwargs)
        self.gain = nn.Parameter(torch.ones(cout, 1, 1, 1))
        self.scale = self.weight[0].numel() ** -0.5

    def forward(self, x):
        w = F.batch_norm(self.weight.reshape(1, self.out_channels, -1), None, None,
                         weight=(self.gain * self.scale).reshape(-1), training=True, momentum=0.0, eps=1e-6)
        return F.conv2d(x, w.reshape_as(self.weight), self.bias, self.stride, self.padding, self.dilation, self.groups)


class MeanStdConv(nn.Conv2d):
    """Plain weight standardisation with ``mean`` / ``std`` over the input and kernel dims."""

    def forward(self, x):
        w = self.weight
        w = (w - w.mean(dim=(1, 2, 3), keepdim=True)) / (w.std(dim=(1, 2, 3), keepdim=True) + 1e-5)
        return F.conv2d(x, w, self.bias, self.stride, self.padding, self.dilation, self.groups)


class Block(nn.Module):
    """A pre-activation residual block of standardised convs (one grouped)."""

    def __init__(self, c: int, mid: int) -> None:
        super().__init__()
        self.conv1 = ScaledWSConv(c, mid, 1)
        self.conv2 = ScaledWSConv(mid, mid, 3, groups=2)
        self.conv3 = MeanStdConv(mid, c, 1)

    def forward(self, x):
        y = self.conv3(F.gelu(self.conv2(F.gelu(self.conv1(F.gelu(x))))))
        return x + 0.5 * y


class WSResNet(nn.Module):
    """A small weight-standardised ResNet (no norm layer anywhere)."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = ScaledWSConv(3, 8, 3, stride=2)
        self.blocks = nn.Sequential(Block(8, 12), Block(8, 12))
        self.head = nn.Linear(8, 5)

    def forward(self, x):
        return self.head(self.blocks(self.stem(x)).mean((2, 3)))


def test_a_weight_standardised_resnet_prunes_every_unit():
    """A 1x1 standardised conv needs two kept inputs (the statistics of one value are not
    defined, in the export as in the masked model): the random choices keep at least that."""
    torch.manual_seed(0)
    checked = check_model(make_nontrivial(WSResNet()), torch.randn(2, 3, 16, 16), choice_sets=0)
    assert not [w for w in checked.warnings if "normalised" in w], checked.warnings
    roots = sorted(u.name.split("_")[0] for u in checked.mutator.mutable_units)
    assert roots == ["blocks.0.conv1", "blocks.0.conv2", "blocks.1.conv1", "blocks.1.conv2", "stem"]
    fixed = sorted(u.name for u in checked.mutator.units if not u.is_mutable)
    assert fixed == ["head_(0, 5)_5", "stem_(0, 3)_3"]  # the model's output and its input only
    mutator, model, x = checked.mutator, checked.mutator.model, torch.randn(2, 3, 16, 16)
    rng = random.Random(0)
    for _ in range(3):
        mutator.set_choices({u.name: rng.randint(1, u.num_channels // 2) * 2 / u.num_channels
                             for u in mutator.mutable_units})
        static = mutator.to_static()
        with torch.no_grad():
            torch.testing.assert_close(static(x), model(x), rtol=1e-4, atol=1e-5)
        assert mutator.resources().params == count_resources(static, x).params == sum(
            p.numel() for p in static.parameters())
        assert mutator.resources().flops == count_resources(static, x).flops


def standardised(conv: nn.Conv2d, columns: torch.Tensor) -> torch.Tensor:
    """What a standardised conv's weight is over the input columns ``columns`` (written anew)."""
    w = conv.weight.detach()[:, columns]
    if isinstance(conv, MeanStdConv):
        return (w - w.mean(dim=(1, 2, 3), keepdim=True)) / (w.std(dim=(1, 2, 3), keepdim=True) + 1e-5)
    mean, var = w.mean(dim=(1, 2, 3), keepdim=True), w.var(dim=(1, 2, 3), keepdim=True, unbiased=False)
    return (w - mean) / torch.sqrt(var + 1e-6) * conv.gain.detach() * conv.scale


@pytest.mark.parametrize("conv", [MeanStdConv(6, 4, 3, padding=1), ScaledWSConv(6, 4, 3),
                                  ScaledWSConv(6, 4, 3, groups=2)])
def test_the_statistics_are_over_the_kept_inputs(conv):
    """The oracle: the standardisation recomputed by hand over the kept input channels."""

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.pre, self.conv = nn.Conv2d(3, 6, 1), conv

        def forward(self, x):
            return self.conv(self.pre(x))

    torch.manual_seed(0)
    net, x = Net().eval(), torch.randn(2, 3, 6, 6)
    mutator = ChannelMutator(channel_unit_cfg=dict(type="L1MutableChannelUnit"))
    mutator.prepare_from_supernet(net, example_inputs=x)
    (unit,) = [u for u in mutator.mutable_units if u.name.startswith("pre")]
    random.seed(0)
    mutator.set_choices({unit.name: 4 / 6 if conv.groups == 2 else 0.5})
    kept = net.conv.mask("in_channels").nonzero().squeeze(1)
    columns = kept[: len(kept) // conv.groups]
    with torch.no_grad():
        want = F.conv2d(net.pre(x)[:, kept], standardised(conv, columns), conv.bias, padding=1, groups=conv.groups)
        assert torch.allclose(net(x), want, atol=1e-5)
        static = mutator.to_static()
        assert static.conv.in_channels == len(kept) and torch.allclose(static(x), want, atol=1e-5)


class OneByOne(nn.Module):
    """A conv into a 1x1 standardised conv (``mean`` / ``std``: one input would give NaN weights)."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 4, 3, padding=1)
        self.proj = MeanStdConv(4, 6, 1)
        self.wide = ScaledWSConv(6, 5, 3)

    def forward(self, x):
        return self.wide(F.gelu(self.proj(F.gelu(self.stem(x)))))


def test_a_1x1_standardised_conv_keeps_at_least_two_inputs():
    """The unit its 1x1 standardised conv reads keeps 2 channels at least (a variance of one value
    is degenerate); a conv with a larger kernel has no such floor."""
    torch.manual_seed(0)
    model, x = OneByOne().eval(), torch.randn(2, 3, 6, 6)
    numbers = dict(type="L1MutableChannelUnit", default_args=dict(choice_mode="number"))
    mutator = ChannelMutator(channel_unit_cfg=numbers)
    mutator.prepare_from_supernet(model, example_inputs=x)
    stem = next(u for u in mutator.mutable_units if any(c.name == "stem" for c in u.output_related))
    proj = next(u for u in mutator.mutable_units if any(c.name == "proj" for c in u.output_related))
    assert (stem.min_value, stem.min_choice, proj.min_choice) == (2, 2, 1)
    with pytest.raises(ValueError, match="at least 2"):
        mutator.set_choices({stem.name: 1})
    assert stem.current_choice == 4  # nothing changed
    mutator.set_choices({stem.name: 2, proj.name: 1})
    static = mutator.to_static()
    with torch.no_grad():
        assert torch.isfinite(static(x)).all()
    ratio = ChannelMutator(channel_unit_cfg=dict(type="L1MutableChannelUnit"))
    ratio.prepare_from_supernet(OneByOne().eval(), example_inputs=x)
    ratio.set_choices({u.name: 0.01 for u in ratio.mutable_units})
    assert sorted(u.activated_channels for u in ratio.mutable_units) == [1, 2]
