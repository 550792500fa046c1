"""The layer-kind registry: a registration is seen by every lookup after it, also for a type
that was looked up (and cached as kind-less) before."""
from __future__ import annotations

import copy

from torch import nn

from razor_widgets.layers import CHANNEL_MEAN, CONV, LayerKindRegistry, kind_of, leaf_kind, register_family_type


class _AveragesChannels(nn.Module):
    def forward(self, x):
        return x.mean(1, keepdim=True)


class _OwnConv(nn.Module):
    def forward(self, x):
        return x


def test_a_family_type_registered_after_a_lookup_is_found():
    module = _AveragesChannels()
    assert kind_of(module) is None  # looked up (and cached) before the registration
    register_family_type(CHANNEL_MEAN, _AveragesChannels)
    assert kind_of(module) is CHANNEL_MEAN
    assert leaf_kind(module) is None  # a family type is counted and converted, never a leaf


def test_a_kind_registered_after_a_lookup_is_found():
    registry = LayerKindRegistry()
    module = _OwnConv()
    assert registry.leaf_kind(module) is None and registry.kind_of(module) is None
    kind = copy.copy(CONV)
    kind.module_types, kind.family_types, kind.functions, kind.dynamic_ops = (_OwnConv,), (), ("own_conv",), {}
    registry.register_kind(kind)
    assert registry.leaf_kind(module) is kind
    assert registry.kind_of(module) is kind
    assert registry.function_kind("own_conv") is kind
