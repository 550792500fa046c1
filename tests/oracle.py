"""An independent check of pruning: the original model with pruned channels zeroed.

For every layer that reads a unit's channels, the pruned channels are set to zero at that
layer's input (forward pre-hooks on a copy of the unprepared model; for convs and linears also the
weight's input columns). For attention, the q/k/v
channels the unit prunes are zeroed where they are made (rows of ``in_proj``). A correct
engine's masked model and exported model both compute exactly this.
"""
from __future__ import annotations

import copy

import torch
from torch import nn


def _input_dim(module: nn.Module, x: torch.Tensor) -> int:
    if isinstance(module, nn.modules.conv._ConvNd):
        return 1 if x.dim() == len(module.kernel_size) + 2 else 0
    if isinstance(module, (nn.modules.batchnorm._BatchNorm, nn.GroupNorm,
                           nn.modules.instancenorm._InstanceNorm)):
        return 1 if x.dim() > 1 else 0
    if isinstance(module, nn.LayerNorm) and x.shape[-1] != module.normalized_shape[-1]:
        return 1  # a channels-first LayerNorm (LayerNorm2d)
    return -1


def zeroed_model(original: nn.Module, mutator) -> nn.Module:
    """A copy of ``original`` in which every pruned channel is zeroed where it is read."""
    model = copy.deepcopy(original)
    modules = dict(model.named_modules())
    masks: dict[str, torch.Tensor] = {}
    for unit in mutator.mutable_units:
        for channel in unit.input_related:
            if channel.param_dim is not None:
                continue
            module = modules[channel.name]
            size = _size_in(module)
            mask = masks.setdefault(channel.name, torch.ones(size, dtype=torch.bool))
            mask[channel.start:channel.end] = unit.channel_mask(channel)
    for name, mask in masks.items():
        module = modules[name]
        if isinstance(module, nn.MultiheadAttention):
            with torch.no_grad():
                rows = mask.repeat(3).to(module.in_proj_weight.dtype)
                module.in_proj_weight.mul_(rows.unsqueeze(1))
                if module.in_proj_bias is not None:
                    module.in_proj_bias.mul_(rows)
        _zero_weight_columns(module, mask)
        module.register_forward_pre_hook(_zero_hook(mask))
    return model


def _zero_weight_columns(module: nn.Module, mask: torch.Tensor) -> None:
    """For a conv (groups 1) or linear, zeroing the pruned input columns of the weight is the
    same as zeroing its input; it also covers weights used without calling the layer
    (``F.conv2d(x, self.conv3.weight + F.pad(self.conv1.weight, ...))``)."""
    plain_conv = isinstance(module, nn.modules.conv._ConvNd) and module.groups == 1 and not module.transposed
    if plain_conv or isinstance(module, nn.Linear):
        with torch.no_grad():
            shape = [1, -1] + [1] * (module.weight.dim() - 2)
            module.weight.mul_(mask.view(shape).to(module.weight.dtype))


def _size_in(module: nn.Module) -> int:
    for attr in ("in_channels", "in_features", "num_features", "num_channels", "embed_dim"):
        if hasattr(module, attr):
            return int(getattr(module, attr))
    return int(module.normalized_shape[-1])


def _zero_hook(mask: torch.Tensor):
    def hook(module, args):
        x = args[0]
        dim = _input_dim(module, x)
        shape = [1] * x.dim()
        shape[dim] = -1
        zeroed = x * mask.view(shape).to(x.dtype)
        return (zeroed, *args[1:])

    return hook
