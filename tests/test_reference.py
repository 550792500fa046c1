"""The examples of the reference pages (MMRazor's user guides) run with only their imports
changed and print what the pages show."""
from __future__ import annotations

import json
import random
from collections import OrderedDict

import torch
from torch import nn
from torchvision.models import resnet34

from razor_widgets import (
    MODELS,
    BaseModel,
    ChannelMutator,
    DynamicConv2d,
    DynamicLinear,
    MutableChannelContainer,
    MutableChannelUnit,
    SquentialMutableChannel,
)


class MyModel(BaseModel):
    def __init__(self):
        super().__init__(None, None)
        self.net = nn.Sequential(
            OrderedDict([('conv0', nn.Conv2d(3, 8, 3, 1, 1)),
                         ('relu', nn.ReLU()),
                         ('conv1', nn.Conv2d(8, 16, 3, 1, 1))]))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Linear(16, 1000)

    def forward(self, x):
        feature = self.net(x)
        pool = self.pool(feature).flatten(1)
        return self.head(pool)


class MyDynamicModel(BaseModel):
    def __init__(self):
        super().__init__(None, None)
        self.net = nn.Sequential(
            OrderedDict([('conv0', DynamicConv2d(3, 8, 3, 1, 1)),
                         ('relu', nn.ReLU()),
                         ('conv1', DynamicConv2d(8, 16, 3, 1, 1))]))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = DynamicLinear(16, 1000)
        MutableChannelUnit._register_channel_container(self, MutableChannelContainer)
        self._register_mutables()

    def forward(self, x):
        feature = self.net(x)
        pool = self.pool(feature).flatten(1)
        return self.head(pool)

    def _register_mutables(self):
        mutable1 = SquentialMutableChannel(8)
        mutable2 = SquentialMutableChannel(16)
        MutableChannelContainer.register_mutable_channel_to_module(
            self.net.conv0, mutable1, is_to_output_channel=True)
        MutableChannelContainer.register_mutable_channel_to_module(
            self.net.conv1, mutable1, is_to_output_channel=False)
        MutableChannelContainer.register_mutable_channel_to_module(
            self.net.conv1, mutable2, is_to_output_channel=True)
        MutableChannelContainer.register_mutable_channel_to_module(
            self.head, mutable2, is_to_output_channel=False)


UNIT_CFG = dict(type='SequentialMutableChannelUnit', default_args=dict(choice_mode='ratio'),
                units={})

CONFIG_UNITS = {
    'net.conv0_(0, 8)_8': {
        'init_args': {'num_channels': 8},
        'channels': {'input_related': [{'name': 'net.conv1'}],
                     'output_related': [{'name': 'net.conv0'}]},
        'choice': 1.0,
    },
    'net.conv1_(0, 16)_16': {
        'init_args': {'num_channels': 16},
        'channels': {'input_related': [{'name': 'head'}],
                     'output_related': [{'name': 'net.conv1'}]},
        'choice': 1.0,
    },
}

PRUNED_PRINT = """MyDynamicModel(
  (net): Sequential(
    (conv0): DynamicConv2d(
      3, 8, kernel_size=(3, 3), stride=(1, 1), padding=(1, 1)
      (mutable_attrs): ModuleDict(
        (in_channels): MutableChannelContainer(num_channels=3, activated_channels=3)
        (out_channels): MutableChannelContainer(num_channels=8, activated_channels=4)
      )
    )
    (relu): ReLU()
    (conv1): DynamicConv2d(
      8, 16, kernel_size=(3, 3), stride=(1, 1), padding=(1, 1)
      (mutable_attrs): ModuleDict(
        (in_channels): MutableChannelContainer(num_channels=8, activated_channels=4)
        (out_channels): MutableChannelContainer(num_channels=16, activated_channels=8)
      )
    )
  )
  (pool): AdaptiveAvgPool2d(output_size=1)
  (head): DynamicLinear(
    in_features=16, out_features=1000, bias=True
    (mutable_attrs): ModuleDict(
      (in_features): MutableChannelContainer(num_channels=16, activated_channels=8)
      (out_features): MutableChannelCo"""


def test_000_tracer(capsys) -> None:
    model = MyModel()
    mutator = ChannelMutator(
        channel_unit_cfg=UNIT_CFG,
        parse_cfg=dict(type='BackwardTracer',
                       loss_calculator=dict(type='ImageClassifierPseudoLoss')))
    mutator.prepare_from_supernet(model)
    print(f'The mutator has {len(mutator.mutable_units)} mutable channel units.')
    assert capsys.readouterr().out == 'The mutator has 2 mutable channel units.\n'
    assert list(mutator.current_choices) == ['net.conv0_(0, 8)_8', 'net.conv1_(0, 16)_16']


def test_000_config(capsys) -> None:
    model = MyModel()
    mutator = ChannelMutator(channel_unit_cfg=dict(UNIT_CFG, units=CONFIG_UNITS),
                             parse_cfg=dict(type='Config'))
    mutator.prepare_from_supernet(model)
    print(f'The mutator has {len(mutator.mutable_units)} mutable channel units.')
    assert capsys.readouterr().out == 'The mutator has 2 mutable channel units.\n'
    assert mutator.graph_trace is None  # built from the config, not traced
    mutator.set_choices({'net.conv0_(0, 8)_8': 0.5})
    assert model.net.conv1.get_mutable_attr('in_channels').activated_channels == 4


def test_000_predefined(capsys) -> None:
    model = MyDynamicModel()
    mutator = ChannelMutator(channel_unit_cfg=UNIT_CFG, parse_cfg=dict(type='Predefined'))
    mutator.prepare_from_supernet(model)
    print(f'The mutator has {len(mutator.mutable_units)} mutable channel units.')
    print(mutator.current_choices)
    mutator.set_choices({0: 4, 1: 8})
    print(model)
    lines = capsys.readouterr().out.splitlines()
    assert lines[:2] == ['The mutator has 2 mutable channel units.', '{0: 8, 1: 16}']
    assert '\n'.join(lines[2:]).startswith(PRUNED_PRINT)
    small = mutator.to_static()
    assert small(torch.randn(1, 3, 8, 8)).shape == (1, 1000)
    assert (small.net.conv0.out_channels, small.net.conv1.out_channels) == (4, 8)


def test_001_config_template_round_trip() -> None:
    model = resnet34()
    mutator = ChannelMutator(
        channel_unit_cfg=UNIT_CFG,
        parse_cfg=dict(type='BackwardTracer',
                       loss_calculator=dict(type='ImageClassifierPseudoLoss')))
    mutator.prepare_from_supernet(model)
    random.seed(0)
    mutator.set_choices(mutator.sample_choices())
    config = mutator.config_template(with_unit_init_args=True)
    assert config['type'] == 'ChannelMutator'
    assert config['channel_unit_cfg']['units']['conv1_(0, 3)_3']['init_args']['num_channels'] == 3
    config = json.loads(json.dumps(config))  # a config is plain data

    mutator2 = MODELS.build(config)
    mutator2.prepare_from_supernet(resnet34())
    assert [u.name for u in mutator2.units] == [u.name for u in mutator.units]
    assert mutator2.current_choices == mutator.current_choices


def test_001_with_channels_rebuilds_without_tracing() -> None:
    model = resnet34()
    mutator = ChannelMutator()
    mutator.prepare_from_supernet(model)
    mutator.set_choices({name: 0.5 for name in mutator.current_choices})
    config = json.loads(json.dumps(mutator.config_template(with_channels=True)))
    assert config['parse_cfg'] == {'type': 'Config'}

    model2 = resnet34()
    mutator2 = MODELS.build(config)
    mutator2.prepare_from_supernet(model2)
    assert mutator2.graph_trace is None
    assert mutator2.current_choices == mutator.current_choices
    assert [u.name for u in mutator2.mutable_units] == [u.name for u in mutator.mutable_units]
    for a, b in zip(mutator.units, mutator2.units, strict=True):
        assert a.config_template_channels() == b.config_template_channels()
        assert a.is_mutable == b.is_mutable
    model2.load_state_dict(model.state_dict())
    x = torch.randn(1, 3, 64, 64)
    model.eval()
    model2.eval()
    with torch.no_grad():
        torch.testing.assert_close(mutator2.to_static()(x), mutator.to_static()(x))


def test_001_only_mutable_units_and_choice_template() -> None:
    mutator = ChannelMutator()
    mutator.prepare_from_supernet(resnet34())
    config = mutator.config_template(only_mutable_units=True)
    # channel units, then the blocks that can be dropped (depth choices, issue 28)
    unit_cfg = config['channel_unit_cfg']
    assert [*unit_cfg['units'], *unit_cfg['blocks']] == list(mutator.current_choices)
    assert mutator.choice_template == mutator.current_choices
