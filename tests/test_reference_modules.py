"""The examples of references 002 to 004 (mutables, mutators, the pruning framework) run with
only their imports changed, and print what the pages show.

Where a page's code cannot run as printed (a missing ``super().__init__()``, group keys that
name no module, bodies elided with ``......``) the smallest change that makes it run is made
and said in a comment.
"""
from __future__ import annotations

import ast
import random
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn as nn
from torch import Tensor

from razor_widgets import (
    MODELS,
    BaseModel,
    DynamicConv2d,
    IteAlgorithm,
    MutableChannelContainer,
    MutableModule,
    OneShotModuleMutator,
    OneShotMutableModule,
    OneShotMutableValue,
    SquentialMutableChannel,
    derive_concat_mutable,
)
from razor_widgets import ChannelMutator as BaseChannelMutator  # reference 004's older name
from razor_widgets import OneShotModuleMutator as OneShotMutator  # reference 003's short name


@pytest.fixture(autouse=True)
def _seeded():
    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)


# -- reference 002: Mutable ---------------------------------------------------------------------
def reference_002_backbone_config() -> dict:
    # we only use OneShotMutableOP, then take 4 ShuffleOP as its candidates.
    _STAGE_MUTABLE = dict(
        _scope_='mmrazor',
        type='OneShotMutableOP',
        candidates=dict(
            shuffle_3x3=dict(type='ShuffleBlock', kernel_size=3),
            shuffle_5x5=dict(type='ShuffleBlock', kernel_size=5),
            shuffle_7x7=dict(type='ShuffleBlock', kernel_size=7),
            shuffle_xception=dict(type='ShuffleXception')))
    # Use the _STAGE_MUTABLE in various stages.
    arch_setting = [
        # Parameters to build layers. 3 parameters are needed to construct a
        # layer, from left to right: channel, num_blocks, mutable_cfg.
        [64, 4, _STAGE_MUTABLE],
        [160, 4, _STAGE_MUTABLE],
        [320, 8, _STAGE_MUTABLE],
        [640, 4, _STAGE_MUTABLE]
    ]
    nas_backbone = dict(
        _scope_='mmrazor',
        type='SearchableShuffleNetV2',
        widen_factor=1.0,
        arch_setting=arch_setting)
    return nas_backbone


def test_002_searchable_shufflenet_from_config(one_thread) -> None:
    nas_backbone = reference_002_backbone_config()
    backbone = MODELS.build(nas_backbone).eval()
    mutator = OneShotModuleMutator()
    mutator.prepare_from_supernet(backbone)
    assert len(mutator.search_groups) == 4 + 4 + 8 + 4
    assert mutator.search_space[0] == ['shuffle_3x3', 'shuffle_5x5', 'shuffle_7x7', 'shuffle_xception']
    assert mutator.group_names[0] == ['layers.0.0'] and mutator.group_names[19] == ['layers.3.3']
    first = backbone.layers[0][0]
    assert [type(op).__name__ for op in first.candidates.values()] == [
        'ShuffleBlock', 'ShuffleBlock', 'ShuffleBlock', 'ShuffleXception']
    assert [op.kernel_size for op in list(first.candidates.values())[:3]] == [3, 5, 7]
    assert (first.module_kwargs['in_channels'], first.module_kwargs['out_channels']) == (16, 64)
    # the config is data: building did not write module_kwargs into it
    assert 'module_kwargs' not in nas_backbone['arch_setting'][0][2]

    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        (supernet_out,) = backbone(x)  # no choice yet: every candidate runs (forward_all)
        mutator.set_choices(mutator.sample_choices())
        (subnet_out,) = backbone(x)
    assert supernet_out.shape == subnet_out.shape == (1, 1024, 1, 1)
    assert not torch.allclose(supernet_out, subnet_out)


class CustomOneShotMutableOP(OneShotMutableModule):
    """Reference 002's "customize your mutable" code, method by method (the page's elided
    ``__init__`` written out; registered under another name, as OneShotMutableOP exists)."""

    def __init__(self, candidates, module_kwargs=None, alias=None, init_cfg=None) -> None:
        super().__init__(module_kwargs=module_kwargs, alias=alias, init_cfg=init_cfg)
        self._chosen = None
        self._candidates = self._build_ops(candidates, module_kwargs)

    def fix_chosen(self, chosen: str) -> None:
        if self.is_fixed:
            raise AttributeError(
                'The mode of current MUTABLE is `fixed`. '
                'Please do not call `fix_chosen` function again.')

        for c in self.choices:
            if c != chosen:
                self._candidates.pop(c)

        self._chosen = chosen
        self.is_fixed = True

    def dump_chosen(self) -> str:
        assert self.current_choice is not None

        return self.current_choice

    @property
    def choices(self) -> list[str]:
        """list: all choices. """
        return list(self._candidates.keys())

    @property
    def num_choices(self):
        return len(self.choices)

    def sample_choice(self) -> str:
        """uniform sampling."""
        return np.random.choice(self.choices, 1)[0]

    def forward_fixed(self, x: Any) -> Tensor:
        return self._candidates[self._chosen](x)

    def forward_choice(self, x: Any, choice: str) -> Tensor:
        assert isinstance(choice, str) and choice in self.choices
        return self._candidates[choice](x)

    def forward_all(self, x: Any) -> Tensor:
        outputs = list()
        for op in self._candidates.values():
            outputs.append(op(x))
        return sum(outputs)

    @staticmethod
    def _build_ops(
            candidates: dict[str, dict] | nn.ModuleDict,
            module_kwargs: dict[str, dict] | None = None) -> nn.ModuleDict:
        if isinstance(candidates, nn.ModuleDict):
            return candidates

        ops = nn.ModuleDict()
        for name, op_cfg in candidates.items():
            assert name not in ops
            if module_kwargs is not None:
                op_cfg.update(module_kwargs)
            ops[name] = MODELS.build(op_cfg)
        return ops


MODELS.register_module(module=CustomOneShotMutableOP)


def test_002_customized_mutable_runs_on_the_base_classes() -> None:
    op = MODELS.build(dict(
        type='CustomOneShotMutableOP',
        candidates=dict(conv3x3=dict(type='Conv2d', kernel_size=3, padding=1),
                        conv5x5=dict(type='Conv2d', kernel_size=5, padding=2)),
        module_kwargs=dict(in_channels=4, out_channels=4)))
    x = torch.randn(1, 4, 8, 8)
    assert op.num_choices == 2 and op.choices == ['conv3x3', 'conv5x5']
    ops = op._candidates
    assert torch.allclose(op(x), ops['conv3x3'](x) + ops['conv5x5'](x))  # no choice: forward_all
    op.current_choice = op.sample_choice()
    assert op.current_choice in op.choices
    op.current_choice = 'conv5x5'
    assert torch.equal(op(x), ops['conv5x5'](x))  # forward_choice
    op.fix_chosen('conv5x5')
    assert op.is_fixed and op.choices == ['conv5x5'] and op.dump_chosen() == 'conv5x5'
    assert torch.equal(op(x), ops['conv5x5'](x))  # forward_fixed
    with pytest.raises(AttributeError, match='fixed'):
        op.fix_chosen('conv5x5')
    mutator = OneShotModuleMutator()
    mutator.prepare_from_supernet(nn.Sequential(op))  # a custom mutable is found like any other
    assert mutator.current_choices == {0: 'conv5x5'}


def test_002_mutable_module_is_abstract() -> None:
    with pytest.raises(TypeError, match='abstract'):
        MutableModule()
    with pytest.raises(TypeError, match='abstract'):
        OneShotMutableModule()


def test_002_derived_concat_in_channels_of_conv3() -> None:
    """conv3 = concat(conv1, conv2): in_channels of conv3 is derived, never chosen."""
    conv1, conv2 = DynamicConv2d(3, 3, 3, padding=1), DynamicConv2d(3, 4, 3, padding=1)
    conv3 = DynamicConv2d(7, 5, 1)
    out1, out2 = SquentialMutableChannel(3), SquentialMutableChannel(4)
    MutableChannelContainer.register_mutable_channel_to_module(conv1, out1, is_to_output_channel=True)
    MutableChannelContainer.register_mutable_channel_to_module(conv2, out2, is_to_output_channel=True)
    in3 = derive_concat_mutable([out1, out2])
    MutableChannelContainer.register_mutable_channel_to_module(conv3, in3, is_to_output_channel=False)
    assert in3.current_choice == 7
    with pytest.raises(RuntimeError, match='can not be set'):
        in3.current_choice = 5

    out1.current_choice = 2  # the sources change, the derived mutable follows
    out2.current_choice = 3
    assert in3.current_choice == 5
    assert in3.current_mask.tolist() == [True, True, False, True, True, True, False]
    assert conv3.get_mutable_attr('in_channels').activated_channels == 5
    x = torch.randn(1, 3, 6, 6)
    with torch.no_grad():
        y = conv3(torch.cat([conv1(x), conv2(x)], 1))
        static = [c.to_static_op() for c in (conv1, conv2, conv3)]
        y_static = static[2](torch.cat([static[0](x), static[1](x)], 1))
    assert static[2].in_channels == 5
    torch.testing.assert_close(y, y_static)


def test_002_derived_expand_ratio() -> None:
    """The hidden width of an inverted residual block: in_channels * expand_ratio."""
    in_channels = SquentialMutableChannel(8)
    expand_ratio = OneShotMutableValue([6, 2, 4])
    mid = in_channels * expand_ratio
    assert expand_ratio.choices == [2, 4, 6] and expand_ratio.current_choice == 6
    assert mid.num_channels == 48 and mid.current_choice == 48
    expand = DynamicConv2d(8, 48, 1)
    MutableChannelContainer.register_mutable_channel_to_module(expand, in_channels, False)
    MutableChannelContainer.register_mutable_channel_to_module(expand, mid, True)
    expand_ratio.current_choice = 4
    in_channels.current_choice = 5
    assert mid.current_choice == 20 and mid.current_mask[:20].all() and not mid.current_mask[20:].any()
    static = expand.to_static_op()
    assert (static.in_channels, static.out_channels) == (5, 20)
    assert mid.source_mutables == [in_channels, expand_ratio]
    assert not mid.is_fixed
    in_channels.fix_chosen()
    expand_ratio.fix_chosen()
    assert mid.is_fixed


# -- reference 003: Mutator ---------------------------------------------------------------------
one_shot_op_cfg = dict(candidates=dict(
    choice1=dict(type='Conv2d', kernel_size=1),
    choice2=dict(type='Conv2d', kernel_size=3, padding=1),
    choice3=dict(type='Conv2d', kernel_size=5, padding=2),
    choice4=dict(type='Identity')), module_kwargs=dict(in_channels=4, out_channels=4))


class SearchableModel(nn.Module):
    def __init__(self, one_shot_op_cfg):
        super().__init__()  # missing on the page: nn.Module needs it
        # assume `OneShotMutableModule` contains 4 choices:
        # choice1, choice2, choice3 and choice4
        # (the page builds the abstract OneShotMutableModule; its concrete OneShotMutableOP here)
        self.choice_block1 = MODELS.build(dict(type='OneShotMutableOP', **one_shot_op_cfg))
        self.choice_block2 = MODELS.build(dict(type='OneShotMutableOP', **one_shot_op_cfg))
        self.choice_block3 = MODELS.build(dict(type='OneShotMutableOP', **one_shot_op_cfg))

    def forward(self, x: Tensor) -> Tensor:
        x = self.choice_block1(x)
        x = self.choice_block2(x)
        x = self.choice_block3(x)

        return x


def test_003_search_groups(capsys) -> None:
    supernet = SearchableModel(one_shot_op_cfg)
    mutator1 = OneShotModuleMutator()
    # build mutator1 from supernet.
    mutator1.prepare_from_supernet(supernet)
    print(mutator1.search_groups.keys())

    # the page's 'op1', 'op2', 'op3' stand for the three blocks: their module names here
    custom_group = [
        ['choice_block1', 'choice_block2'],
        ['choice_block3']
    ]
    mutator2 = OneShotMutator(custom_group)
    mutator2.prepare_from_supernet(supernet)
    print(mutator2.search_groups.keys())
    assert capsys.readouterr().out == 'dict_keys([0, 1, 2])\ndict_keys([0, 1])\n'
    assert mutator2.search_groups[0] == [supernet.choice_block1, supernet.choice_block2]


def test_003_sample_choices_and_set_choices_by_group() -> None:
    supernet = SearchableModel(one_shot_op_cfg)
    mutator = OneShotMutator([['choice_block1', 'choice_block2'], ['choice_block3']])
    mutator.prepare_from_supernet(supernet)
    random_choices = mutator.sample_choices()
    assert set(random_choices) == {0, 1}
    assert all(c in ['choice1', 'choice2', 'choice3', 'choice4'] for c in random_choices.values())
    mutator.set_choices(random_choices)
    # the first mutable's choice is its group's: the grouped blocks share it
    assert supernet.choice_block1.current_choice == supernet.choice_block2.current_choice == random_choices[0]
    assert supernet.choice_block3.current_choice == random_choices[1]
    assert mutator.current_choices == random_choices
    assert mutator.mutable_class_type is OneShotMutableModule


def test_003_mutator_from_config() -> None:
    # model = dict(type='mmrazor.SPOS', architecture=supernet,
    #              mutator=dict(type='mmrazor.OneShotModuleMutator'))
    mutator = MODELS.build(dict(type='mmrazor.OneShotModuleMutator'))
    assert isinstance(mutator, OneShotModuleMutator)
    mutator.prepare_from_supernet(SearchableModel(one_shot_op_cfg))
    assert list(mutator.search_groups) == [0, 1, 2]


# -- reference 004: the pruning framework -------------------------------------------------------
ITE_PRINT = """IteAlgorithm(
  (architecture): Model(
    (conv): Conv2d(3, 8, kernel_size=(3, 3), stride=(1, 1), padding=(1, 1))
  )
  (mutator): ChannelMutator()
)
"""


def test_004_ite_algorithm(capsys) -> None:
    class Model(BaseModel):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 8, 3, 1, 1)

        def forward(self, x):
            return self.conv(x)

    model = Model()
    algorithm = IteAlgorithm(model,
                             mutator_cfg=dict(
                                 type='ChannelMutator',
                                 channl_unit_cfg=dict(type='L1ChannelUnit')),)
    print(algorithm)
    # The page shows the conv as a DynamicConv2d with both containers at full channels:
    # here the conv's input channels are the model's input and its outputs the model's
    # output, both fixed, so no layer needs a dynamic op and the conv stays a Conv2d.
    assert capsys.readouterr().out == ITE_PRINT
    assert [u.fixed_reasons for u in algorithm.mutator.units] == [['derived from a model input'],
                                                                   ['model output']]
    assert algorithm.mutator.unit_class.__name__ == 'L1MutableChannelUnit'


class Model004(BaseModel):
    def __init__(self):
        super().__init__()
        self.feature = nn.Sequential(
            nn.Conv2d(3, 8, 3, 2, 1),
            nn.Conv2d(8, 16, 3, 2, 1)
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Linear(16, 1000)

    def forward(self, x):
        x_ = self.pool(self.feature(x))
        return self.head(x_.flatten(1))


def test_004_channel_mutator_sample_choices(capsys) -> None:
    model = Model004()
    mutator = BaseChannelMutator()
    mutator.prepare_from_supernet(model)
    print(mutator.sample_choices())
    # The page shows {'feature.0_(0, 8)_out_1_in_1': 0.5, 'feature.1_(0, 16)_out_1_in_1': 0.5625}:
    # an older MMRazor's unit names; the names here are those of references 000 and 001, and
    # the ratios are random samples (multiples of 1/8 and 1/16, as on the page).
    choices = ast.literal_eval(capsys.readouterr().out)
    assert list(choices) == ['feature.0_(0, 8)_8', 'feature.1_(0, 16)_16']
    ratio0, ratio1 = choices.values()
    assert 0 < ratio0 <= 1 and (ratio0 * 8).is_integer()
    assert 0 < ratio1 <= 1 and (ratio1 * 16).is_integer()


def test_004_ite_algorithm_prints_dynamic_ops_of_prunable_layers(capsys) -> None:
    algorithm = IteAlgorithm(Model004(), mutator_cfg=dict(type='ChannelMutator',
                                                          channl_unit_cfg=dict(type='L1ChannelUnit')))
    print(algorithm)
    out = capsys.readouterr().out
    assert """    (feature): Sequential(
      (0): DynamicConv2d(
        3, 8, kernel_size=(3, 3), stride=(2, 2), padding=(1, 1)
        (mutable_attrs): ModuleDict(
          (in_channels): MutableChannelContainer(num_channels=3, activated_channels=3)
          (out_channels): MutableChannelContainer(num_channels=8, activated_channels=8)
        )
      )""" in out
    assert out.rstrip().endswith("  (mutator): ChannelMutator()\n)")
