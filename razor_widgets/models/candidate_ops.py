"""Candidate ops for searchable blocks: ShuffleNetV2's blocks (reference 002) and plain layers.

Every op takes ``in_channels``, ``out_channels`` and ``stride``, which a searchable backbone
passes to all candidates of a block through ``module_kwargs``. Plain torch layers are
registered under their own names (``Conv2d``, ``Identity``, ...) so that configs can use them.
"""
from __future__ import annotations

import torch
from torch import nn

from ..registry import MODELS

__all__ = ["BaseOP", "ConvBnAct", "ShuffleBlock", "ShuffleXception", "channel_shuffle"]


def channel_shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    """Interleave the channels of ``groups`` groups (ShuffleNet's channel shuffle)."""
    batch, channels, height, width = x.shape
    if channels % groups:
        raise ValueError(f"{channels} channels cannot be split into {groups} groups")
    x = x.view(batch, groups, channels // groups, height, width).transpose(1, 2).contiguous()
    return x.view(batch, channels, height, width)


class ConvBnAct(nn.Sequential):
    """Conv2d (no bias) -> BatchNorm2d -> ReLU (the ReLU left out when ``act=False``)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1,
                 groups: int = 1, act: bool = True) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride, kernel_size // 2,
                              groups=groups, bias=False)
        self.bn = nn.BatchNorm2d(out_channels)
        if act:
            self.activate = nn.ReLU(inplace=True)


class BaseOP(nn.Module):
    """A candidate op: maps ``in_channels`` to ``out_channels`` with ``stride``."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.stride = stride


class _ShuffleUnit(BaseOP):
    """ShuffleNetV2's unit: with stride 1 half the channels pass and half go through branch2;
    with stride 2 both halves are computed (branch1 and branch2). Then channels are shuffled."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1) -> None:
        super().__init__(in_channels, out_channels, stride)
        if stride not in (1, 2):
            raise ValueError(f"stride must be 1 or 2, got {stride}")
        if out_channels % 2:
            raise ValueError(f"out_channels must be even, got {out_channels}")
        self.branch_features = out_channels // 2
        if stride == 1 and in_channels != out_channels:
            raise ValueError(f"with stride 1 in_channels ({in_channels}) must equal out_channels ({out_channels})")

    def _branch1(self, kernel_size: int) -> nn.Sequential:
        return nn.Sequential(
            ConvBnAct(self.in_channels, self.in_channels, kernel_size, self.stride, groups=self.in_channels,
                      act=False),
            ConvBnAct(self.in_channels, self.branch_features, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride > 1:
            out = torch.cat((self.branch1(x), self.branch2(x)), dim=1)
        else:
            x1, x2 = x.chunk(2, dim=1)
            out = torch.cat((x1, self.branch2(x2)), dim=1)
        return channel_shuffle(out, 2)


@MODELS.register_module()
class ShuffleBlock(_ShuffleUnit):
    """ShuffleNetV2 block with a depthwise ``kernel_size`` x ``kernel_size`` conv (3, 5 or 7)."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1, kernel_size: int = 3) -> None:
        super().__init__(in_channels, out_channels, stride)
        if kernel_size not in (3, 5, 7):
            raise ValueError(f"kernel_size must be 3, 5 or 7, got {kernel_size}")
        self.kernel_size = kernel_size
        branch, inp = self.branch_features, in_channels if stride > 1 else self.branch_features
        if stride > 1:
            self.branch1 = self._branch1(kernel_size)
        self.branch2 = nn.Sequential(
            ConvBnAct(inp, branch, 1),
            ConvBnAct(branch, branch, kernel_size, stride, groups=branch, act=False),
            ConvBnAct(branch, branch, 1))


@MODELS.register_module()
class ShuffleXception(_ShuffleUnit):
    """ShuffleNetV2 Xception block: three depthwise-separable 3x3 convs in branch2."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1) -> None:
        super().__init__(in_channels, out_channels, stride)
        branch, inp = self.branch_features, in_channels if stride > 1 else self.branch_features
        if stride > 1:
            self.branch1 = self._branch1(3)
        layers = []
        for c_in, s in ((inp, stride), (branch, 1), (branch, 1)):
            layers += [ConvBnAct(c_in, c_in, 3, s, groups=c_in, act=False), ConvBnAct(c_in, branch, 1)]
        self.branch2 = nn.Sequential(*layers)


# plain torch layers, buildable from configs (a candidate such as dict(type='Conv2d', kernel_size=3))
for _layer in (nn.Conv2d, nn.Linear, nn.Identity, nn.ReLU, nn.BatchNorm2d, nn.MaxPool2d, nn.AvgPool2d):
    MODELS.register_module(module=_layer)
