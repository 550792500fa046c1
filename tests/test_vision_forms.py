"""Op forms that vision models use: derived weights, compared channel counts, unexpected op forms."""
from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import razor_widgets.analysis.analyzer as analysis
import razor_widgets.analysis.rules as rules
from razor_widgets import ChannelMutator, TraceError

from helpers import check_model, make_nontrivial


class WSConv(nn.Conv2d):
    """Weight standardisation: the forward normalises the stored weight per output channel."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.weight
        w = (w - w.mean(dim=(1, 2, 3), keepdim=True)) / (w.std(dim=(1, 2, 3), keepdim=True) + 1e-5)
        return F.conv2d(x, w, self.bias, self.stride, self.padding, self.dilation, self.groups)


class RepBlock(nn.Module):
    """A re-parameterisable block in its training form: branch weights summed in the forward."""

    def __init__(self, c: int, o: int) -> None:
        super().__init__()
        self.conv3, self.conv1 = nn.Conv2d(c, o, 3, padding=1), nn.Conv2d(c, o, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.conv3.weight + F.pad(self.conv1.weight, [1, 1, 1, 1])
        return F.conv2d(x, w, self.conv3.bias + self.conv1.bias, padding=1)


class DerivedWeights(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 16, 3)
        self.ws = WSConv(16, 24, 3, padding=1)
        self.dw = WSConv(24, 24, 3, padding=1, groups=24)
        self.rep = RepBlock(24, 32)
        self.pad = nn.ReflectionPad2d(1)
        self.head = nn.Conv2d(32, 5, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.ws(F.relu(self.stem(x))))
        return self.head(self.pad(F.relu(self.rep(F.relu(self.dw(y))))))


def test_derived_weights_follow_the_stored_parameters():
    torch.manual_seed(0)
    # the standardised conv's statistics follow its kept inputs: zeroing them is no oracle
    checked = check_model(make_nontrivial(DerivedWeights()), torch.randn(2, 3, 12, 12), choice_sets=3, oracle=False)
    units = {u.name: u for u in checked.mutator.units}
    assert not checked.warnings
    ws_out = units["ws_(0, 24)_24"]  # output channels of a standardised conv, read by the depthwise one
    assert ws_out.is_mutable and {c.name for c in ws_out.channels} >= {"ws", "dw", "rep.conv3", "rep.conv1"}
    rep_out = units["rep.conv3_(0, 32)_32"]  # both branches' outputs, the reflect pad and the head
    assert rep_out.is_mutable and {c.name for c in rep_out.channels} == {"rep.conv3", "rep.conv1", "head"}
    (stem,) = [u for u in checked.mutator.units if u.name == "stem_(0, 16)_16"]
    assert stem.is_mutable and {c.name for c in stem.input_related} == {"ws"}  # standardised over the kept inputs


class Checked(nn.Module):
    def __init__(self, c: int, compare_with_constant: bool = False) -> None:
        super().__init__()
        self.channels = c
        self.compare_with_constant = compare_with_constant
        self.conv = nn.Conv2d(c, c, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        assert x.shape[1] == self.channels, "wrong channels"
        if self.compare_with_constant and x.shape[1] > 8:
            x = x * 2
        return self.conv(x)


class AttributeCheck(nn.Module):
    def __init__(self, compare_with_constant: bool = False) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 16, 3)
        self.block = Checked(16, compare_with_constant)
        self.head = nn.Conv2d(16, 4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.block(self.stem(x)))


def test_an_attribute_compared_with_a_channel_count_follows_the_export():
    torch.manual_seed(0)
    checked = check_model(make_nontrivial(AttributeCheck()), torch.randn(2, 3, 10, 10), choice_sets=3)
    mutator = checked.mutator
    mutator.set_choices({name: 0.5 for name in mutator.current_choices})
    assert mutator.to_static().block.channels == 8 and checked.original.block.channels == 16


def test_a_channel_count_compared_with_a_number_stays_fixed():
    torch.manual_seed(0)
    model, x = AttributeCheck(compare_with_constant=True), torch.randn(2, 3, 10, 10)
    mutator = ChannelMutator()
    mutator.prepare_from_supernet(model, x)
    (stem,) = [u for u in mutator.units if u.name == "stem_(0, 16)_16"]
    assert not stem.is_mutable
    assert any("compared with > 8" in r and "'block'" in r for r in stem.fixed_reasons), stem.fixed_reasons


class BinaryMax(nn.Module):
    """``torch.max(a, b)``: the two-tensor form of a reduction's name, elementwise."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.b, self.c, self.d = nn.Linear(8, 16), nn.Linear(8, 16), nn.Linear(8, 12), nn.Linear(12, 4)
        self.out = nn.Linear(16, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(torch.max(self.a(x), self.b(x))) + self.d(self.c(x))


def test_a_rule_that_meets_an_unexpected_form_freezes_that_op_only(monkeypatch):
    def broken(ctx, node):
        raise IndexError("an unexpected form")

    monkeypatch.setattr(rules, "elementwise", broken)  # the rule torch.max(a, b) goes to
    mutator = ChannelMutator()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        mutator.prepare_from_supernet(BinaryMax(), torch.randn(2, 8))
    messages = [str(w.message) for w in caught if "no channel rule" in str(w.message)]
    (message,) = [m for m in messages if "'max'" in m]
    assert message.startswith("BinaryMax: no channel rule for op 'max' in 'the model' (its rule does not "
                              "handle this form: IndexError: an unexpected form)")
    assert "(layers: a, b, out)" in message
    units = {u.name: u for u in mutator.units}
    assert not units["a_(0, 16)_16"].is_mutable and units["c_(0, 12)_12"].is_mutable


def test_the_two_tensor_max_is_elementwise():
    mutator = ChannelMutator()
    mutator.prepare_from_supernet(BinaryMax(), torch.randn(2, 8))
    units = {u.name: u for u in mutator.units}
    assert units["a_(0, 16)_16"].is_mutable and "b" in {c.name for c in units["a_(0, 16)_16"].channels}


def test_a_bug_in_the_analysis_raises_trace_error(monkeypatch):
    def broken(ctx, roots):
        raise RuntimeError("simulated bug")

    monkeypatch.setattr(analysis, "build_units", broken)
    with pytest.raises(TraceError, match=r"channel analysis of BinaryMax failed after the rules ran .*"
                                         r"RuntimeError: simulated bug"):
        ChannelMutator().prepare_from_supernet(BinaryMax(), torch.randn(2, 8))


def test_a_bug_in_a_rule_names_the_op_module_and_shapes(monkeypatch):
    import razor_widgets.analysis.rules as rules

    def broken_apply(ctx, node):
        raise TypeError("simulated bug")

    monkeypatch.setattr(rules.RULES, "apply", broken_apply)
    with pytest.raises(TraceError, match=r"channel analysis of BinaryMax failed at op Linear 'a' "
                                         r"\(node 0, input shapes \(2, 8\)\): TypeError: simulated bug"):
        ChannelMutator().prepare_from_supernet(BinaryMax(), torch.randn(2, 8))


class StackedAndWindows(nn.Module):
    """Copies of the same channels stacked and averaged (CrossViT heads), and sliding windows
    made with ``Tensor.unfold`` (halo attention)."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.b, self.out = nn.Linear(8, 16), nn.Linear(8, 16), nn.Linear(16, 4)
        self.stem, self.kv, self.head = nn.Conv2d(3, 8, 3), nn.Conv2d(8, 8, 1), nn.Conv2d(8, 4, 1)

    def forward(self, x: torch.Tensor, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        merged = torch.stack([self.a(x), self.b(x)]).mean(0)
        windows = self.kv(self.stem(image)).unfold(2, 3, 3).unfold(3, 3, 3)  # N, C, 2, 2, 3, 3
        return self.out(merged), self.head(windows.mean((-1, -2)))


def test_stacked_copies_and_unfolded_windows_keep_their_channels():
    torch.manual_seed(0)
    inputs = (torch.randn(2, 8), torch.randn(1, 3, 8, 8))
    checked = check_model(make_nontrivial(StackedAndWindows()), inputs, choice_sets=3)
    units = {u.name: u for u in checked.mutator.units}
    assert not checked.warnings
    assert units["a_(0, 16)_16"].is_mutable and {c.name for c in units["a_(0, 16)_16"].channels} == {"a", "b", "out"}
    assert units["kv_(0, 8)_8"].is_mutable and units["stem_(0, 8)_8"].is_mutable


class GatedSplit(nn.Module):
    """``h, z = split(proj(x), [d, d])`` then ``h * silu(z)`` (EfficientViM): the parts are pruned
    alike, so only the sizes given to split can go wrong."""

    def __init__(self, literal: bool = False) -> None:
        super().__init__()
        self.d, self.literal = 12, literal
        self.stem, self.proj, self.out = nn.Conv2d(3, 8, 1), nn.Conv2d(8, 24, 1), nn.Conv2d(12, 4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        sizes = [12, 12] if self.literal else [self.d, self.d]
        h, z = torch.split(self.proj(self.stem(x)), sizes, dim=1)
        return self.out(h * F.silu(z))


def test_split_sizes_given_by_an_attribute_follow_the_export():
    torch.manual_seed(0)
    checked = check_model(make_nontrivial(GatedSplit()), torch.randn(2, 3, 5, 5), choice_sets=3)
    (unit,) = [u for u in checked.mutator.units if u.name.startswith("proj_")]
    assert unit.is_mutable and unit.name == "proj_(0, 24)_12"  # two parts, one set of channels
    mutator = checked.mutator
    mutator.set_choices({name: 0.5 for name in mutator.current_choices})
    assert mutator.to_static().d == 6


def test_split_sizes_written_as_numbers_keep_the_channels_fixed():
    mutator = ChannelMutator()
    mutator.prepare_from_supernet(GatedSplit(literal=True), torch.randn(2, 3, 5, 5))
    (unit,) = [u for u in mutator.units if u.name.startswith("proj_")]
    assert not unit.is_mutable
    assert unit.fixed_reasons == ["split into parts of the fixed size 12 by 'split' in 'the model'"]


class ComputedBias(nn.Module):
    """``F.linear(x, self.fc.weight, bias)`` with a bias computed from other parameters (EVA's
    ``torch.cat((q_bias, k_bias, v_bias))``): its rows are the layer's outputs."""

    def __init__(self) -> None:
        super().__init__()
        self.fc, self.out = nn.Linear(8, 16, bias=False), nn.Linear(16, 4)
        self.bias_a, self.bias_b = nn.Parameter(torch.randn(16)), nn.Parameter(torch.randn(16))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(F.relu(F.linear(x, self.fc.weight, self.bias_a + self.bias_b)))


def test_a_computed_bias_follows_the_layer_outputs():
    torch.manual_seed(0)
    checked = check_model(ComputedBias(), torch.randn(3, 8), choice_sets=3)
    (unit,) = [u for u in checked.mutator.units if u.name == "fc_(0, 16)_16"]
    assert unit.is_mutable and {c.name for c in unit.channels} == {"fc", "out", "bias_a", "bias_b"}


class TokenJoinScale(nn.Module):
    """A class-attention block's form: token 0 from one branch, the rest from another, joined
    along the tokens, then scaled per channel by a layer-scale parameter."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Linear(6, 16)
        self.first, self.rest = nn.Linear(16, 16), nn.Linear(16, 16)
        self.gamma = nn.Parameter(torch.rand(16) + 0.5)
        self.head = nn.Linear(16, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.embed(x)
        joined = torch.cat([self.first(h)[:, :1], self.rest(h)[:, 1:]], dim=1)
        return self.head(self.gamma * joined)


def test_layer_scale_after_a_token_join_follows_the_channels():
    torch.manual_seed(0)
    checked = check_model(TokenJoinScale(), torch.randn(2, 5, 6), choice_sets=3)
    assert not checked.warnings
    (unit,) = [u for u in checked.mutator.units if any(c.name == "gamma" for c in u.channels)]
    assert unit.is_mutable and {c.name for c in unit.channels} == {"first", "rest", "gamma", "head"}


class HeadScale(nn.Module):
    """A per-head-dim scale: ``gamma`` (one entry per head dim) meets every head's channels."""

    def __init__(self) -> None:
        super().__init__()
        self.qkv, self.gamma, self.proj = nn.Linear(6, 16), nn.Parameter(torch.rand(8) + 0.5), nn.Linear(16, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.qkv(x)
        return self.proj((y.reshape(*y.shape[:2], 2, -1) * self.gamma).flatten(2))


def test_head_dim_scale_joins_every_heads_channel():
    torch.manual_seed(0)
    checked = check_model(HeadScale(), torch.randn(2, 5, 6), choice_sets=3)
    (unit,) = [u for u in checked.mutator.units if any(c.name == "gamma" for c in u.channels)]
    assert unit.is_mutable and {c.name for c in unit.channels} == {"qkv", "gamma", "proj"}
