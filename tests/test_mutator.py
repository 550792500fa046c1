"""ChannelMutator behaviour: choices, errors that change nothing, unit types, unknown ops,
dynamic ops and export."""
from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from razor_widgets import (
    ChannelMutator,
    DynamicBatchNorm2d,
    DynamicConv2d,
    DynamicLinear,
    OneShotChannelMutator,
    SlimmableChannelMutator,
    UnprunableChannelsWarning,
)

from helpers import make_nontrivial


class Net(nn.Module):
    """conv-bn-relu x2 -> pool -> linear; returns a dict with a tuple inside."""

    def __init__(self) -> None:
        super().__init__()
        self.conv0 = nn.Conv2d(3, 8, 3, padding=1)
        self.bn0 = nn.BatchNorm2d(8)
        self.conv1 = nn.Conv2d(8, 16, 3, padding=1)
        self.head = nn.Linear(16, 10)

    def forward(self, x):
        feat = self.conv1(torch.relu(self.bn0(self.conv0(x))))
        logits = self.head(feat.mean((2, 3)))
        return {"logits": logits, "extra": [(logits.softmax(-1), logits.detach())]}


@pytest.fixture
def net() -> Net:
    return make_nontrivial(Net())


@pytest.fixture
def x() -> torch.Tensor:
    return torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(0))


def prepared(model: nn.Module, x: torch.Tensor, **kwargs) -> ChannelMutator:
    mutator = ChannelMutator(**kwargs)
    mutator.prepare_from_supernet(model, example_inputs=x)
    return mutator


def test_dict_and_tuple_outputs_are_traced(net, x) -> None:
    mutator = prepared(net, x)
    assert list(mutator.current_choices) == ["conv0_(0, 8)_8", "conv1_(0, 16)_16"]
    out = net(x)
    assert set(out) == {"logits", "extra"}


def test_failed_set_choices_changes_nothing(net, x) -> None:
    mutator = prepared(net, x)
    mutator.set_choices({"conv0_(0, 8)_8": 0.5})
    before = mutator.current_choices
    for bad, error in [({"conv0_(0, 8)_8": 0.25, "nope": 0.5}, KeyError),
                       ({"conv0_(0, 8)_8": 0.25, "conv1_(0, 16)_16": 1.5}, ValueError),
                       ({"conv0_(0, 8)_8": 0.25, "conv1_(0, 16)_16": "half"}, TypeError),
                       ({"conv1_(0, 16)_16": 0.0}, ValueError),
                       ({"conv1_(0, 16)_16": True}, TypeError)]:
        with pytest.raises(error) as info:
            mutator.set_choices(bad)
        assert mutator.current_choices == before
        assert "conv1_(0, 16)_16" in str(info.value) or "nope" in str(info.value)


def test_non_prunable_unit_is_named_with_its_reason(net, x) -> None:
    mutator = prepared(net, x)
    with pytest.raises(KeyError, match="model input"):
        mutator.set_choices({"conv0_(0, 3)_3": 0.5})


def test_integer_keys_and_number_mode(net, x) -> None:
    mutator = prepared(net, x, channel_unit_cfg=dict(
        type="SequentialMutableChannelUnit", default_args=dict(choice_mode="number", divisor=4)))
    assert mutator.current_choices == {"conv0_(0, 8)_8": 8, "conv1_(0, 16)_16": 16}
    mutator.set_choices({0: 4, 1: 12})
    assert mutator.current_choices == {"conv0_(0, 8)_8": 4, "conv1_(0, 16)_16": 12}
    with pytest.raises(ValueError, match="multiple of 4"):
        mutator.set_choices({1: 10})
    with pytest.raises(ValueError):
        mutator.set_choices({1: 17})
    assert net.conv1.get_mutable_attr("out_channels").activated_channels == 12
    assert net.head.get_mutable_attr("in_features").activated_channels == 12
    # the smallest and the sampled choices are multiples of the divisor too
    assert mutator.min_choices == {"conv0_(0, 8)_8": 4, "conv1_(0, 16)_16": 4}
    mutator.set_min_choices()
    assert mutator.current_choices == {"conv0_(0, 8)_8": 4, "conv1_(0, 16)_16": 4}
    for _ in range(20):
        mutator.set_choices(mutator.sample_choices())
        assert all(v % 4 == 0 for v in mutator.current_choices.values())


def test_sequential_keeps_a_prefix_and_l1_keeps_the_largest(net, x) -> None:
    with torch.no_grad():
        net.conv1.weight[:8] *= 0.01  # the first half of conv1's filters is small
    seq_model = copy.deepcopy(net)
    seq = prepared(seq_model, x)
    seq.set_choices({"conv1_(0, 16)_16": 0.5})
    assert seq.units[2].current_mask.tolist() == [True] * 8 + [False] * 8
    l1 = prepared(net, x, channel_unit_cfg=dict(type="L1MutableChannelUnit"))
    l1.set_choices({"conv1_(0, 16)_16": 0.5})
    assert l1.units[2].current_mask.tolist() == [False] * 8 + [True] * 8


def test_min_max_sample_and_full_restore(net, x) -> None:
    net.eval()
    with torch.no_grad():
        want = net(x)["logits"]
    mutator = prepared(net, x)
    assert mutator.max_choices == {"conv0_(0, 8)_8": 1.0, "conv1_(0, 16)_16": 1.0}
    assert mutator.min_choices == {"conv0_(0, 8)_8": 1 / 8, "conv1_(0, 16)_16": 1 / 16}
    for _ in range(5):
        choices = mutator.sample_choices()
        assert all(0 < v <= 1 for v in choices.values())
        mutator.set_choices(choices)
    mutator.set_min_choices()
    small = mutator.to_static()
    assert (small.conv0.out_channels, small.conv1.out_channels) == (1, 1)
    mutator.set_max_choices()
    with torch.no_grad():
        assert torch.equal(net(x)["logits"], want)


def test_one_shot_and_slimmable_mutators(net, x) -> None:
    one_shot = OneShotChannelMutator(channel_unit_cfg=dict(
        type="OneShotMutableChannelUnit", default_args=dict(candidate_choices=[0.25, 0.5, 1.0])))
    one_shot.prepare_from_supernet(copy.deepcopy(net), example_inputs=x)
    assert set(one_shot.sample_choices().values()) <= {0.25, 0.5, 1.0}
    assert set(one_shot.min_choices.values()) == {0.25}

    slim = SlimmableChannelMutator(channel_unit_cfg=dict(
        type="SlimmableChannelUnit",
        units={"conv0_(0, 8)_8": {"init_args": {"candidate_choices": [4, 8]}},
               "conv1_(0, 16)_16": {"init_args": {"candidate_choices": [8, 16]}}}))
    slim.prepare_from_supernet(net, example_inputs=x)
    assert slim.subnets == [{"conv0_(0, 8)_8": 4, "conv1_(0, 16)_16": 8},
                            {"conv0_(0, 8)_8": 8, "conv1_(0, 16)_16": 16}]
    slim.set_subnet(0)
    assert slim.current_choices == slim.subnets[0]


def test_prepare_twice_and_use_before_prepare(net, x) -> None:
    mutator = ChannelMutator()
    with pytest.raises(RuntimeError, match="prepare_from_supernet"):
        mutator.set_choices({})
    mutator.prepare_from_supernet(net, example_inputs=x)
    with pytest.raises(RuntimeError, match="already prepared"):
        mutator.prepare_from_supernet(net, example_inputs=x)
    with pytest.raises(RuntimeError, match="already prepared"):
        ChannelMutator().prepare_from_supernet(net, example_inputs=x)


class Unknown(nn.Module):
    """A conv whose output goes through an op with no channel rule (a cumulative max)."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv2d(3, 8, 1)
        self.b = nn.Conv2d(8, 8, 1)
        self.c = nn.Conv2d(8, 4, 1)

    def forward(self, x):
        y = self.b(self.a(x))
        y = torch.cummax(y, dim=1).values
        return self.c(y)


def test_op_without_rule_warns_and_fixes_its_channels() -> None:
    model = Unknown()
    with pytest.warns(UnprunableChannelsWarning, match=r"cummax.*layers: b, c"):
        mutator = prepared(model, torch.randn(1, 3, 4, 4))
    assert [u.name for u in mutator.mutable_units] == ["a_(0, 8)_8"]
    fixed = next(u for u in mutator.units if u.name == "b_(0, 8)_8")
    assert not fixed.is_mutable and "cummax" in fixed.fixed_reasons[0]


def test_dynamic_ops_keep_state_and_export_plain_layers() -> None:
    conv = nn.Conv2d(4, 6, 3, groups=2)
    conv.weight.requires_grad_(False)
    conv.eval()
    dyn = DynamicConv2d.convert_from(conv)
    assert dyn.weight is conv.weight and not dyn.training and not dyn.weight.requires_grad
    static = dyn.to_static_op()
    assert type(static) is nn.Conv2d and torch.equal(static.weight, conv.weight)

    bn = make_nontrivial(nn.BatchNorm2d(4))
    dyn_bn = DynamicBatchNorm2d.convert_from(bn)
    assert torch.equal(dyn_bn.running_var, bn.running_var)
    lin = DynamicLinear(5, 3)
    assert isinstance(lin.to_static_op(), nn.Linear)
    assert not hasattr(lin.to_static_op(), "mutable_attrs")


def test_export_leaves_the_model_prepared(net, x) -> None:
    mutator = prepared(net, x)
    mutator.set_choices({"conv1_(0, 16)_16": 0.5})
    small = mutator.to_static()
    assert isinstance(net.conv1, DynamicConv2d)
    assert not any(hasattr(m, "mutable_attrs") for m in small.modules())
    assert small.conv1.out_channels == 8 and small.head.in_features == 8
    mutator.set_choices({"conv1_(0, 16)_16": 0.25})
    assert mutator.to_static().conv1.out_channels == 4
