"""Layer kinds: transposed convolutions (a UNet-style encoder-decoder and small 1-D/3-D,
grouped, depthwise, output_padding and functional cases), functional norms called with a
module's own parameters, the registry, and a layer type without a kind."""
from __future__ import annotations

import copy
import random
import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from razor_widgets import ChannelMutator, UnprunableChannelsWarning, count_resources
from razor_widgets.layers import CONV_TRANSPOSE, DynamicConvTranspose2d, function_kind, kind_of, leaf_kind

from helpers import make_nontrivial, zeroed_model

pytestmark = pytest.mark.usefixtures("one_thread")


# -- models -------------------------------------------------------------------------------------
def block(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, padding=1), nn.BatchNorm2d(c_out), nn.ReLU())


class UNet(nn.Module):
    """Two down steps, two ConvTranspose2d up steps, skip concats at both levels."""

    def __init__(self) -> None:
        super().__init__()
        self.enc1, self.enc2 = block(3, 8), block(8, 12)
        self.bottom = block(12, 16)
        self.up2 = nn.ConvTranspose2d(16, 12, 2, stride=2)
        self.dec2 = block(24, 12)
        self.up1 = nn.ConvTranspose2d(12, 8, 3, stride=2, padding=1, output_padding=1)
        self.dec1 = block(16, 8)
        self.head = nn.Conv2d(8, 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        e1 = self.enc1(x)
        e2 = self.enc2(F.max_pool2d(e1, 2))
        b = self.bottom(F.max_pool2d(e2, 2))
        d2 = self.dec2(torch.cat([self.up2(b), e2], 1))
        d1 = self.dec1(torch.cat([e1, self.up1(d2)], 1))
        return self.head(d1)


class Chain(nn.Module):
    """conv -> transposed conv (any dims, groups, output_padding) -> conv."""

    def __init__(self, dims: int, groups: int = 1, depthwise: bool = False, output_padding: int = 0) -> None:
        super().__init__()
        conv = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}[dims]
        up = {1: nn.ConvTranspose1d, 2: nn.ConvTranspose2d, 3: nn.ConvTranspose3d}[dims]
        mid = 8 if depthwise else 6
        self.first = conv(3, 8, 3, padding=1)
        groups = 8 if depthwise else groups
        self.up = up(8, 8 if depthwise else mid, 3, stride=2, padding=1, output_padding=output_padding,
                     groups=groups)
        self.last = conv(8 if depthwise else mid, 4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.last(torch.relu(self.up(torch.relu(self.first(x)))))


class FunctionalTranspose(nn.Module):
    """A ConvTranspose2d's weight used through ``F.conv_transpose2d`` (a parent's own forward)."""

    def __init__(self) -> None:
        super().__init__()
        self.first = nn.Conv2d(3, 8, 3, padding=1)
        self.up = nn.ConvTranspose2d(8, 6, 2, stride=2, groups=2)
        self.last = nn.Conv2d(6, 4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.first(x))
        h = F.conv_transpose2d(h, self.up.weight, self.up.bias, stride=2, groups=2)
        return self.last(torch.relu(h))


class BatchNormAct(nn.BatchNorm2d):
    """A fused norm + activation (as in timm): a BatchNorm2d subclass calling F.batch_norm."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias,
                         self.training, self.momentum, self.eps)
        return F.silu(x)


class GroupNormAct(nn.GroupNorm):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.gelu(F.group_norm(x, self.num_groups, self.weight, self.bias, self.eps))


class InstanceNormAct(nn.InstanceNorm2d):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(F.instance_norm(x, None, None, self.weight, self.bias, True, 0.1, self.eps))


class FusedNorms(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.bn1 = BatchNormAct(8)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1)
        self.gn2 = GroupNormAct(2, 8)
        self.conv3 = nn.Conv2d(8, 6, 1)
        self.in3 = InstanceNormAct(6, affine=True)
        self.conv4 = nn.Conv2d(6, 4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv3(self.gn2(self.conv2(self.bn1(self.conv1(x)))))
        return self.conv4(self.in3(h))


CASES = {
    "unet": (UNet, (2, 3, 16, 16)),
    "transpose_1d": (lambda: Chain(1), (2, 3, 10)),
    "transpose_3d": (lambda: Chain(3, output_padding=1), (1, 3, 4, 5, 6)),
    "transpose_grouped": (lambda: Chain(2, groups=2, output_padding=1), (2, 3, 7, 7)),
    "transpose_depthwise": (lambda: Chain(2, depthwise=True), (2, 3, 6, 6)),
    "transpose_functional": (FunctionalTranspose, (2, 3, 6, 6)),
    "fused_norms": (FusedNorms, (2, 3, 8, 8)),
}
# no zeroing oracle: a group norm normalises over pruned channels; the oracle zeroes at a
# module's forward, which a functional call of its weight bypasses
NO_ORACLE = {"fused_norms", "transpose_functional"}


def build(name: str) -> tuple[nn.Module, torch.Tensor]:
    torch.manual_seed(0)
    model = make_nontrivial(CASES[name][0](), seed=0).eval()
    return model, torch.randn(*CASES[name][1], generator=torch.Generator().manual_seed(1))


def prepare(model: nn.Module, x: torch.Tensor, unit: str) -> tuple[ChannelMutator, nn.Module]:
    original = copy.deepcopy(model)
    mutator = ChannelMutator(channel_unit_cfg=dict(type=unit))
    with warnings.catch_warnings():
        warnings.simplefilter("error", UnprunableChannelsWarning)
        mutator.prepare_from_supernet(model, example_inputs=x)
    return mutator, original


def choice_sets(mutator: ChannelMutator):
    for seed in range(3):
        random.seed(seed)
        mutator.set_choices(mutator.sample_choices())
        yield f"seed {seed}"
    mutator.set_choices(mutator.min_choices)
    yield "min"


# -- transposed convolutions and fused norms ------------------------------------------------------
@pytest.mark.parametrize("name", list(CASES))
def test_full_choices_are_bit_identical(name):
    model, x = build(name)
    mutator, original = prepare(model, x, "SequentialMutableChannelUnit")
    assert mutator.mutable_units
    with torch.no_grad():
        for train in (True, False, True):
            model.train(train)
            original.train(train)
            assert torch.equal(model(x), original(x))
    for (key, a), (_, b) in zip(model.state_dict().items(), original.state_dict().items()):
        assert torch.equal(a, b), key


@pytest.mark.parametrize("name", list(CASES))
def test_export_equals_masked_equals_zeroed_and_counts_are_exact(name):
    model, x = build(name)
    mutator, original = prepare(model, x, "L1MutableChannelUnit")
    full = count_resources(original, x)
    assert (mutator.resources().params, mutator.resources().macs) == (full.params, full.macs)
    for label in choice_sets(mutator):
        static = mutator.to_static().eval()
        assert not any(hasattr(m, "mutable_attrs") for m in static.modules())
        with torch.no_grad():
            masked, exported = model(x), static(x)
            torch.testing.assert_close(exported, masked, msg=lambda m, lb=label: f"{lb}: {m}")
            if name not in NO_ORACLE:
                zeroed = zeroed_model(original, mutator).eval()(x)
                torch.testing.assert_close(masked, zeroed, msg=lambda m, lb=label: f"{lb}: {m}")
        reference = count_resources(static, x)
        counted = mutator.resources()
        assert (counted.params, counted.macs) == (reference.params, reference.macs), label
        assert counted.params < full.params, label


def test_unet_units_cross_the_skip_concats():
    model, x = build("unet")
    mutator, _ = prepare(model, x, "SequentialMutableChannelUnit")
    units = {u.name: u for u in mutator.mutable_units}
    up2 = next(u for u in units.values() if any(c.name == "up2" and c.is_output_channel for c in u.channels))
    # up2's output is the first half of dec2's input; e2 (enc2) the second half
    assert {(c.name, c.start, c.end) for c in up2.input_related} >= {("dec2.0", 0, 12)}
    enc2 = next(u for u in units.values() if any(c.name == "enc2.0" and c.is_output_channel for c in u.channels))
    assert ("dec2.0", 12, 24) in {(c.name, c.start, c.end) for c in enc2.input_related}
    assert isinstance(model.up2, DynamicConvTranspose2d)
    mutator.set_choices({up2.name: 0.5, enc2.name: 0.5})
    static = mutator.to_static()
    assert (static.up2.out_channels, static.dec2[0].in_channels) == (6, 12)


def test_grouped_transposed_export_keeps_the_group_layout():
    model, x = build("transpose_grouped")
    mutator, _ = prepare(model, x, "SequentialMutableChannelUnit")
    (unit,) = [u for u in mutator.mutable_units if any(c.name == "up" and c.is_output_channel for c in u.channels)]
    assert unit.repeats == 2
    mutator.set_choices({unit.name: 2 / 3})
    up = mutator.to_static().up
    assert (up.groups, up.out_channels, up.weight.shape[1]) == (2, 4, 2)


def test_functional_norms_of_a_fused_module_are_pruned():
    model, x = build("fused_norms")
    mutator, _ = prepare(model, x, "SequentialMutableChannelUnit")
    names = {c.name for u in mutator.mutable_units for c in u.channels}
    assert {"bn1", "gn2", "in3"} <= names
    assert type(model.bn1).__name__ == "DynamicBatchNormAct"
    mutator.set_min_choices()
    static = mutator.to_static()
    assert type(static.bn1) is BatchNormAct and static.bn1.running_mean.shape == (1,)
    assert type(static.in3) is InstanceNormAct and static.in3.weight.shape == (1,)


# -- the registry and layers without a kind -------------------------------------------------------
def test_registry_finds_kinds_by_type_and_function():
    class Plain(nn.ConvTranspose2d):
        pass

    assert kind_of(nn.ConvTranspose3d(2, 2, 1)) is CONV_TRANSPOSE
    assert leaf_kind(Plain(2, 2, 1)) is CONV_TRANSPOSE  # a subclass keeping the base forward
    assert leaf_kind(BatchNormAct(4)) is None  # its own forward: traced through
    assert kind_of(BatchNormAct(4)) is not None
    assert function_kind("conv_transpose1d") is CONV_TRANSPOSE
    assert function_kind("batch_norm") is kind_of(BatchNormAct(4))


def test_importance_weights_put_the_channel_first():
    up = nn.ConvTranspose2d(8, 6, 3)
    assert CONV_TRANSPOSE.output_channel_weights(up)["weight"].shape[0] == 6
    assert CONV_TRANSPOSE.input_channel_weights(up)["weight"].shape[0] == 8
    conv = nn.Conv2d(8, 6, 3, groups=2)
    assert kind_of(conv).output_channel_weights(conv)["weight"].shape[0] == 6
    assert kind_of(conv).input_channel_weights(conv) == {}  # grouped: no tensor has every input
    bn = nn.BatchNorm2d(5)
    assert set(kind_of(bn).output_channel_weights(bn)) == {"weight", "bias"}


class WithCosine(nn.Module):
    """``nn.CosineSimilarity`` has no layer kind (nor a rule): the channels it touches stay fixed,
    with a warning."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Linear(4, 6), nn.Linear(4, 6)
        self.mix = nn.CosineSimilarity(dim=-1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mix(self.a(x), self.b(x))


def test_a_layer_without_a_kind_freezes_its_channels_with_a_warning():
    mutator = ChannelMutator()
    with pytest.warns(UnprunableChannelsWarning, match=r"'cosine_similarity'.*layers: a, b"):
        mutator.prepare_from_supernet(WithCosine(), torch.randn(2, 4))
    fixed = [u for u in mutator.units if any(c.name in ("a", "b") and c.is_output_channel for c in u.channels)]
    assert len(fixed) == 2
    assert all(not u.is_mutable and any("no channel rule" in r for r in u.fixed_reasons) for u in fixed)


class SyncNormAct(nn.modules.batchnorm._BatchNorm):
    """A batch norm family type without a dynamic op: its functional call is not claimed."""

    def _check_input_dim(self, x: torch.Tensor) -> None:
        pass

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias, False, 0.1, self.eps)


def test_a_norm_family_type_without_a_dynamic_op_stays_fixed():
    model = nn.Sequential(nn.Conv2d(3, 8, 3), SyncNormAct(8), nn.Conv2d(8, 4, 1))
    mutator = ChannelMutator()
    with pytest.warns(UnprunableChannelsWarning, match="'batch_norm'"):
        mutator.prepare_from_supernet(model, torch.randn(1, 3, 6, 6))
    assert not any(c.name == "0" and c.is_output_channel for u in mutator.mutable_units for c in u.channels)
    assert mutator.to_static() is not None


def test_an_encoder_layer_with_a_pruned_layer_norm_leaves_torchs_fused_path():
    """Under eval and no_grad, ``nn.TransformerEncoderLayer`` runs a fused kernel that normalises
    over every channel: while a layer norm inside keeps only some, the masked model must not take
    it (the export may); at full choices the model runs exactly as before, fused path included."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(16, 32), nn.TransformerEncoderLayer(32, 4, 64, dropout=0.0, batch_first=True),
                          nn.Linear(32, 8)).eval()
    x = torch.randn(2, 5, 16)
    with torch.no_grad():
        before = model(x)
        mutator = ChannelMutator()
        mutator.prepare_from_supernet(model, x)
        assert torch.equal(model(x), before)
        stream = next(u for u in mutator.mutable_units if any(c.name == "1.norm1" for c in u.channels))
        mutator.set_choices({stream.name: 0.5})
        static = mutator.to_static().eval()  # the export check compares it with the masked model
        assert torch.allclose(static(x), model(x), rtol=1e-4, atol=1e-5)
        assert torch.backends.mha.get_fastpath_enabled()
        mutator.set_max_choices()
        assert torch.equal(model(x), before)
