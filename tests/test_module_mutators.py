"""Module mutables and module mutators: choices, groups, errors that change nothing, counting
and export; mutable values and derived mutables; the searchable ShuffleNetV2."""
from __future__ import annotations

import copy
import json
import warnings

import pytest
import torch
from torch import nn

from razor_widgets import (
    MODELS,
    ChannelMutator,
    DiffModuleMutator,
    DiffMutableOP,
    MutableValue,
    OneShotModuleMutator,
    OneShotMutableOP,
    OneShotMutableValue,
    SearchableShuffleNetV2,
    ShuffleBlock,
    ShuffleXception,
    SquentialMutableChannel,
    count_resources,
    derive_concat_mutable,
)
from razor_widgets.models import STAGE_MUTABLE

CANDIDATES = dict(conv1x1=dict(type='Conv2d', kernel_size=1),
                  conv3x3=dict(type='Conv2d', kernel_size=3, padding=1),
                  conv5x5=dict(type='Conv2d', kernel_size=5, padding=2, bias=False))


def one_shot_op(alias: str | None = None, channels: int = 4) -> OneShotMutableOP:
    return OneShotMutableOP(CANDIDATES, module_kwargs=dict(in_channels=channels, out_channels=channels),
                            alias=alias)


class Net(nn.Module):
    """stem -> three searchable ops (two sharing an alias) -> head."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 4, 3, padding=1)
        self.block1 = one_shot_op('shared')
        self.block2 = one_shot_op('shared')
        self.block3 = one_shot_op()
        self.head = nn.Linear(4, 10)

    def forward(self, x):
        x = self.block3(self.block2(self.block1(self.stem(x))))
        return self.head(x.mean((2, 3)))


@pytest.fixture
def x() -> torch.Tensor:
    return torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(0))


@pytest.fixture
def prepared(x) -> tuple[Net, OneShotModuleMutator]:
    torch.manual_seed(0)
    net = Net().eval()
    mutator = OneShotModuleMutator()
    mutator.prepare_from_supernet(net, example_inputs=x)
    return net, mutator


# -- OneShotMutableOP -----------------------------------------------------------------------------
def test_candidates_from_configs_modules_or_module_dict() -> None:
    cfg = copy.deepcopy(CANDIDATES)
    op = OneShotMutableOP(cfg, module_kwargs=dict(in_channels=4, out_channels=6))
    assert cfg == CANDIDATES  # configs are data: building does not change them
    assert op.choices == ['conv1x1', 'conv3x3', 'conv5x5'] and op.num_choices == 3
    assert op.candidates['conv5x5'].bias is None and op.candidates['conv3x3'].out_channels == 6
    convs = nn.ModuleDict(dict(a=nn.Conv2d(2, 2, 1), b=nn.Identity()))
    assert OneShotMutableOP(convs).candidates is convs
    assert OneShotMutableOP(dict(a=nn.Identity())).choices == ['a']


def test_only_registered_types_are_built() -> None:
    with pytest.raises(KeyError, match="'os.system' is not a registered type"):
        OneShotMutableOP(dict(evil=dict(type='os.system', command='true')))
    with pytest.raises(ValueError, match='non-empty'):
        OneShotMutableOP({})
    with pytest.raises(TypeError, match="candidate 'a' must be a config dict or a module"):
        OneShotMutableOP(dict(a='nn.Identity()'))


def test_forward_all_then_choice_then_fixed() -> None:
    op = one_shot_op()
    x = torch.randn(1, 4, 5, 5)
    ops = op.candidates
    with torch.no_grad():
        assert op.current_choice is None
        torch.testing.assert_close(op(x), sum(o(x) for o in ops.values()))
        op.current_choice = 'conv3x3'
        assert torch.equal(op(x), ops['conv3x3'](x))
        conv5 = ops['conv5x5']
        op.fix_chosen('conv5x5')
        assert op.is_fixed and op.choices == ['conv5x5'] and op.dump_chosen() == 'conv5x5'
        assert torch.equal(op(x), conv5(x))
    with pytest.raises(AttributeError, match='fixed'):
        op.fix_chosen('conv5x5')
    with pytest.raises(ValueError, match='fixed'):
        op.current_choice = 'conv1x1'
    with pytest.raises(AttributeError, match='cannot be unfixed'):
        op.is_fixed = False


def test_bad_choice_changes_nothing() -> None:
    op = one_shot_op()
    op.current_choice = 'conv1x1'
    with pytest.raises(ValueError, match=r"'conv7x7' is not a candidate; the candidates are \['conv1x1'"):
        op.current_choice = 'conv7x7'
    assert op.current_choice == 'conv1x1'
    fresh = one_shot_op()
    with pytest.raises(ValueError, match='no choice to fix'):
        fresh.fix_chosen()
    with pytest.raises(ValueError, match='no candidate is chosen'):
        fresh.dump_chosen()
    assert not fresh.is_fixed and fresh.num_choices == 3


# -- ModuleMutator: groups ----------------------------------------------------------------------
def test_search_groups_by_alias_and_alone(prepared) -> None:
    net, mutator = prepared
    assert mutator.search_groups == {0: [net.block1, net.block2], 1: [net.block3]}
    assert mutator.group_names == {0: ['block1', 'block2'], 1: ['block3']}
    assert mutator.group_label(0) == 'shared' and mutator.group_label(1) == 'block3'
    assert mutator.search_space == {0: ['conv1x1', 'conv3x3', 'conv5x5'], 1: ['conv1x1', 'conv3x3', 'conv5x5']}
    assert mutator.current_choices == {0: None, 1: None}
    assert set(mutator.name2mutable) == {'block1', 'block2', 'block3'}


def test_custom_group_by_alias_and_module_name() -> None:
    net = Net()
    mutator = OneShotModuleMutator(custom_group=[['block3', 'shared']])
    mutator.prepare_from_supernet(net)
    assert mutator.group_names == {0: ['block3', 'block1', 'block2']}
    mutator = OneShotModuleMutator(custom_group=[['block1'], ['block3']])
    mutator.prepare_from_supernet(Net())
    assert mutator.group_names == {0: ['block1'], 1: ['block3'], 2: ['block2']}


@pytest.mark.parametrize('custom_group, message', [
    ([['nope']], "The key: nope in `custom_group` is not legal"),
    ([['shared', 'block1']], "should not be used in `custom_group`"),
    ([['block3'], ['block3']], "Repeated grouping of mutables"),
])
def test_bad_custom_groups(custom_group, message) -> None:
    mutator = OneShotModuleMutator(custom_group=custom_group)
    with pytest.raises(ValueError, match=message):
        mutator.prepare_from_supernet(Net())
    with pytest.raises(RuntimeError, match='prepare_from_supernet'):
        mutator.search_groups  # noqa: B018


def test_a_group_needs_the_same_choices() -> None:
    net = nn.Sequential(one_shot_op('a'), OneShotMutableOP(dict(other=nn.Identity()), alias='a'))
    with pytest.raises(ValueError, match='same choices'):
        OneShotModuleMutator().prepare_from_supernet(net)


# -- ModuleMutator: choices -------------------------------------------------------------------
def test_set_choices_is_atomic(prepared) -> None:
    net, mutator = prepared
    mutator.set_choices({0: 'conv3x3', 1: 'conv1x1'})
    before = mutator.current_choices
    with pytest.raises(ValueError, match=r"group 1 \(block3\): 'conv7x7' is not a candidate"):
        mutator.set_choices({0: 'conv5x5', 1: 'conv7x7'})
    with pytest.raises(KeyError, match='no search group 7'):
        mutator.set_choices({0: 'conv5x5', 7: 'conv1x1'})
    with pytest.raises(TypeError, match='dict of group id'):
        mutator.set_choices(['conv1x1'])
    assert mutator.current_choices == before
    assert net.block1.current_choice == net.block2.current_choice == 'conv3x3'


def test_set_choices_partial_and_from_json(prepared) -> None:
    net, mutator = prepared
    mutator.set_choices({1: 'conv5x5'})
    assert mutator.current_choices == {0: None, 1: 'conv5x5'}
    mutator.set_choices(json.loads(json.dumps({0: 'conv1x1'})))  # JSON keys are strings
    assert mutator.current_choices == {0: 'conv1x1', 1: 'conv5x5'}
    sampled = mutator.sample_choices()
    assert all(sampled[g] in mutator.search_space[g] for g in sampled)


# -- counting and export ------------------------------------------------------------------------
def test_resources_match_the_exported_model(prepared, x) -> None:
    net, mutator = prepared
    supernet = mutator.resources()
    assert supernet.params == sum(p.numel() for p in net.parameters())
    assert (supernet.params, supernet.macs) == (supernet.original_params, supernet.original_macs)
    assert supernet.macs == count_resources(net, x).macs  # no choice: every candidate runs
    for choices in ({0: 'conv1x1', 1: 'conv5x5'}, {0: 'conv5x5', 1: 'conv3x3'}, {0: 'conv3x3', 1: 'conv3x3'}):
        mutator.set_choices(choices)
        live = mutator.resources()
        exported = count_resources(mutator.to_static(), x)
        assert (live.params, live.macs) == (exported.params, exported.macs)
        assert live.original_params == supernet.params


def test_what_if_resources_and_candidates(prepared) -> None:
    net, mutator = prepared
    mutator.set_choices({0: 'conv1x1', 1: 'conv1x1'})
    small = mutator.resources()
    big = mutator.resources({0: 'conv5x5'})
    assert mutator.current_choices == {0: 'conv1x1', 1: 'conv1x1'}
    per = mutator.candidate_resources(0)  # two mutables in group 0
    assert per['conv5x5'].params == 2 * (4 * 4 * 25)
    assert per['conv3x3'].macs == 2 * (2 * 8 * 8 * 4 * 4 * 9)
    assert big.macs - small.macs == per['conv5x5'].macs - per['conv1x1'].macs
    with pytest.raises(ValueError, match='is not a candidate'):
        mutator.resources({0: 'nope'})


def test_resources_need_a_measure(x) -> None:
    mutator = OneShotModuleMutator()
    mutator.prepare_from_supernet(Net())
    with pytest.raises(RuntimeError, match='MACs need one forward pass'):
        mutator.resources()
    mutator.measure(x)
    assert mutator.resources().macs > 0


def test_to_static_keeps_only_the_chosen_candidates(prepared, x) -> None:
    net, mutator = prepared
    with pytest.raises(ValueError, match='block1: no candidate is chosen'):
        mutator.to_static()
    mutator.set_choices({0: 'conv5x5', 1: 'conv1x1'})
    static = mutator.to_static()
    assert not any(isinstance(m, OneShotMutableOP) for m in static.modules())
    assert static.block1.kernel_size == (5, 5) and static.block3.kernel_size == (1, 1)
    with torch.no_grad():
        torch.testing.assert_close(static(x), net(x))
    assert isinstance(net.block1, OneShotMutableOP) and net.block1.num_choices == 3  # model kept


def test_fixed_mutables_export_and_count(prepared, x) -> None:
    net, mutator = prepared
    assert mutator.resources().params == sum(p.numel() for p in net.parameters())
    net.block3.fix_chosen('conv3x3')  # drops two candidates: counts must follow
    mutator.set_choices({0: 'conv1x1'})
    with pytest.raises(ValueError, match='fixed'):
        mutator.set_choices({1: 'conv1x1'})
    live = mutator.resources()
    exported = count_resources(mutator.to_static(), x)
    assert (live.params, live.macs) == (exported.params, exported.macs)


def test_with_a_channel_mutator(prepared, x) -> None:
    """Choose candidates, then prune the channels of the chosen path, then export both."""
    net, mutator = prepared
    mutator.set_choices({0: 'conv3x3', 1: 'conv5x5'})
    channels = ChannelMutator()
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        channels.prepare_from_supernet(net, example_inputs=x)
    channels.set_choices({name: 0.5 for name in channels.current_choices})
    with torch.no_grad():
        expected = net(x)
        small = mutator.to_static(channels.to_static())
        torch.testing.assert_close(small(x), expected)
    assert channels.resources().macs == count_resources(small, x).macs


# -- differentiable -----------------------------------------------------------------------------
def test_diff_module_mutator_weights_candidates() -> None:
    torch.manual_seed(0)
    net = nn.Sequential(DiffMutableOP(CANDIDATES, dict(in_channels=3, out_channels=3), alias='a'),
                        DiffMutableOP(CANDIDATES, dict(in_channels=3, out_channels=3), alias='a'))
    x = torch.randn(1, 3, 6, 6)
    op = net[0]
    torch.testing.assert_close(op(x), sum(o(x) for o in op.candidates.values()))  # no weights yet
    mutator = MODELS.build(dict(type='DiffModuleMutator'))
    mutator.prepare_from_supernet(net)
    assert list(mutator.arch_params) == ['0'] and mutator.arch_params['0'].shape == (3,)
    with torch.no_grad():
        mutator.arch_params['0'].copy_(torch.tensor([0.0, 2.0, 1.0]))
    probs = torch.softmax(mutator.arch_params['0'], -1)
    expected = sum(p * o(x) for p, o in zip(probs, op.candidates.values()))
    torch.testing.assert_close(op(x), expected)
    net(x).sum().backward()
    assert mutator.arch_params['0'].grad is not None and mutator.arch_params['0'].grad.abs().sum() > 0
    assert mutator.sample_choices() == {0: 'conv3x3'}
    static = mutator.to_static()  # no choice set: the largest weight's candidate
    assert [m.kernel_size for m in static] == [(3, 3), (3, 3)]
    mutator.set_choices(mutator.sample_choices())
    op.fix_chosen(['conv1x1', 'conv5x5'])
    assert op.choices == ['conv1x1', 'conv5x5'] and op.dump_chosen() == ['conv1x1', 'conv5x5']
    with pytest.raises(ValueError, match='fixed at several candidates'):
        mutator.to_static()
    assert isinstance(mutator, DiffModuleMutator)


# -- mutable values and derived mutables --------------------------------------------------------
def test_mutable_values() -> None:
    value = MutableValue([3, 5, 7])
    assert value.current_choice == 7 and value.num_choices == 3
    with pytest.raises(ValueError, match=r'Expected choice in: \[3, 5, 7\], but got: 4'):
        value.current_choice = 4
    assert value.current_choice == 7
    with pytest.raises(TypeError, match='one type'):
        MutableValue([3, 'a'])
    value.fix_chosen(5)
    assert value.is_fixed and value.dump_chosen() == 5
    with pytest.raises(AttributeError, match='fixed'):
        value.fix_chosen(3)
    one_shot = MODELS.build(dict(type='OneShotMutableValue', value_list=[6, 3, 4], default_value=4))
    assert isinstance(one_shot, OneShotMutableValue)
    assert (one_shot.choices, one_shot.current_choice, one_shot.min_choice, one_shot.max_choice) == (
        [3, 4, 6], 4, 3, 6)
    assert one_shot.sample_choice() in [3, 4, 6]
    assert repr(one_shot) == 'OneShotMutableValue(value_list=[3, 4, 6], current_choice=4)'


def test_derived_values_follow_their_sources() -> None:
    width = OneShotMutableValue([16, 32, 64])
    doubled, halved = width * 2, width // (2, 8)
    third = derive_concat_mutable([width, doubled])
    width.current_choice = 32
    assert (doubled.current_choice, halved.current_choice, third.current_choice) == (64, 16, 96)
    assert third.source_mutables == [width]
    with pytest.raises(RuntimeError, match='should not be called'):
        doubled.fix_chosen(3)
    with pytest.raises(RuntimeError, match='should not be modified'):
        doubled.is_fixed = True
    assert not hasattr(doubled, 'current_mask')  # a value has no channels, so neither does its double


def test_derived_channel_mask_and_repr() -> None:
    a, b = SquentialMutableChannel(2), SquentialMutableChannel(3)
    cat = derive_concat_mutable([a, b])
    b.current_choice = 1
    assert cat.num_channels == 5 and cat.current_choice == 3
    assert repr(cat).startswith('DerivedMutable(current_choice=3, activated_channels=3, source_mutables=[')
    same = a.expand_mutable_channel(2)  # the engine's own per-channel expansion is unaffected
    assert same.num_channels == 4


# -- searchable ShuffleNetV2 --------------------------------------------------------------------
def test_shuffle_ops_check_their_arguments() -> None:
    with pytest.raises(ValueError, match='kernel_size must be 3, 5 or 7'):
        ShuffleBlock(8, 8, 1, kernel_size=4)
    with pytest.raises(ValueError, match='must equal out_channels'):
        ShuffleXception(8, 16, 1)
    x = torch.randn(1, 8, 8, 8)
    assert ShuffleBlock(8, 16, 2, kernel_size=7)(x).shape == (1, 16, 4, 4)
    assert ShuffleXception(8, 8, 1)(x).shape == (1, 8, 8, 8)


def test_miniature_searchable_shufflenet(one_thread) -> None:
    torch.manual_seed(0)
    net = SearchableShuffleNetV2([[16, 2, STAGE_MUTABLE], [32, 2, STAGE_MUTABLE]], out_indices=(1, 2)).eval()
    x = torch.randn(1, 3, 32, 32)
    mutator = OneShotModuleMutator()
    mutator.prepare_from_supernet(net, example_inputs=x)
    assert len(mutator.search_groups) == 4
    mutator.set_choices({0: 'shuffle_7x7', 1: 'shuffle_xception', 2: 'shuffle_3x3', 3: 'shuffle_5x5'})
    static = mutator.to_static()
    with torch.no_grad():
        outs, static_outs = net(x), static(x)
    assert [o.shape for o in outs] == [(1, 32, 4, 4), (1, 1024, 4, 4)]
    for a, b in zip(outs, static_outs, strict=True):
        torch.testing.assert_close(a, b)
    live, exported = mutator.resources(), count_resources(static, x)
    assert (live.params, live.macs) == (exported.params, exported.macs)
    with pytest.raises(ValueError, match='out_indices'):
        SearchableShuffleNetV2([[16, 1, STAGE_MUTABLE]], out_indices=(3,))
