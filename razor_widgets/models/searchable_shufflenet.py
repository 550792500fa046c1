"""SearchableShuffleNetV2: reference 002's one-shot supernet, every block a OneShotMutableOP."""
from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn

from ..registry import MODELS
from .candidate_ops import ConvBnAct

STAGE_MUTABLE: dict[str, Any] = dict(
    type="OneShotMutableOP",
    candidates=dict(
        shuffle_3x3=dict(type="ShuffleBlock", kernel_size=3),
        shuffle_5x5=dict(type="ShuffleBlock", kernel_size=5),
        shuffle_7x7=dict(type="ShuffleBlock", kernel_size=7),
        shuffle_xception=dict(type="ShuffleXception")))
"""Reference 002's ``_STAGE_MUTABLE``: three shuffle blocks and an Xception block per layer."""

ARCH_SETTING = [[64, 4, STAGE_MUTABLE], [160, 4, STAGE_MUTABLE], [320, 8, STAGE_MUTABLE],
                [640, 4, STAGE_MUTABLE]]
"""SPOS's search space: ``[channels, num_blocks, mutable_cfg]`` per stage."""


@MODELS.register_module()
class SearchableShuffleNetV2(nn.Module):
    """A ShuffleNetV2 backbone whose blocks are built from each stage's mutable config.

    ``arch_setting`` lists ``[channels, num_blocks, mutable_cfg]`` per stage; the first block
    of a stage has stride 2, and every block gets ``in_channels``, ``out_channels`` and
    ``stride`` through ``module_kwargs``. A 3x3 stride-2 stem of ``16 * stem_multiplier``
    channels comes first and, with ``with_last_layer``, a 1x1 conv to 1024 channels last.
    ``forward`` returns the outputs of the layers in ``out_indices`` as a tuple (a backbone).
    """

    def __init__(self, arch_setting: list[list[Any]] | None = None, stem_multiplier: int = 1,
                 widen_factor: float = 1.0, out_indices: tuple[int, ...] | list[int] = (4,),
                 with_last_layer: bool = True, init_cfg: dict | None = None) -> None:
        super().__init__()
        arch_setting = ARCH_SETTING if arch_setting is None else arch_setting
        num_layers = len(arch_setting) + int(with_last_layer)
        out_indices = tuple(out_indices)
        for index in out_indices:
            if not 0 <= index < num_layers:
                raise ValueError(f"out_indices must be in range(0, {num_layers}), got {index}")
        self.out_indices = out_indices
        self.init_cfg = init_cfg
        self.in_channels = 16 * stem_multiplier
        self.conv1 = ConvBnAct(3, self.in_channels, 3, stride=2)
        self.layers = nn.ModuleList()
        for channels, num_blocks, mutable_cfg in arch_setting:
            out_channels = round(channels * widen_factor)
            self.layers.append(self._make_layer(out_channels, num_blocks, mutable_cfg))
        if with_last_layer:
            self.layers.append(ConvBnAct(self.in_channels, 1024, 1))

    def _make_layer(self, out_channels: int, num_blocks: int, mutable_cfg: dict[str, Any]) -> nn.Sequential:
        blocks = []
        for i in range(num_blocks):
            cfg = copy.deepcopy(mutable_cfg)
            cfg["module_kwargs"] = dict(in_channels=self.in_channels, out_channels=out_channels,
                                        stride=2 if i == 0 else 1)
            blocks.append(MODELS.build(cfg))
            self.in_channels = out_channels
        return nn.Sequential(*blocks)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """The feature maps of the stages named in ``out_indices``, as a tuple."""
        x = self.conv1(x)
        outs = []
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i in self.out_indices:
                outs.append(x)
        return tuple(outs)
