"""Parameters the export must treat together: tied weights (a tied LM head and its token
embedding share one tensor) and parameters that a layer kind runs as a layer (3-D expert
weights), whose owner module reads them masked in the prepared model."""
from __future__ import annotations

import torch
from torch import nn

from ..layers import kind_of
from ..layers.embedding import sync_embedding_sizes
from ..mutables.units import MutableChannelUnit


def retie(static: nn.Module, prepared: nn.Module) -> None:
    """Parameters shared in the prepared model (a tied LM head and its token embedding) are
    shared again in the export, where their kept slices agree; an embedding's sizes follow its
    weight."""
    names: dict[int, list[str]] = {}
    shapes: dict[int, torch.Size] = {}
    for name, param in prepared.named_parameters(remove_duplicate=False):
        names.setdefault(id(param), []).append(name)
        shapes[id(param)] = param.shape
    for key, tied in names.items():
        if len(tied) < 2:
            continue
        owners = [(static.get_submodule(n.rpartition(".")[0]) if "." in n else static, n.rpartition(".")[2])
                  for n in tied]
        params = [owner._parameters[attr] for owner, attr in owners]
        pruned = [p for p in params if p.shape != shapes[key]]  # sliced by the export
        first = pruned[0] if pruned else params[0]
        for (owner, attr), param in zip(owners, params):
            if param.shape in (first.shape, shapes[key]):  # same slice, or a tie the export left whole
                owner._parameters[attr] = first
    sync_embedding_sizes(static)


def convert_param_owners(model: nn.Module, units: list[MutableChannelUnit]) -> None:
    """Modules whose parameter slots the masked model must read masked (3-D expert weights):
    their kind's dynamic op, told which unit masks which dim of which parameter."""
    modules = dict(model.named_modules())
    converted: dict[str, nn.Module] = {}
    for unit in units:
        for channel in unit.channels:
            owner_name, _, attr = channel.name.rpartition(".")
            module = converted.get(owner_name, modules.get(owner_name))
            kind = kind_of(module)
            if channel.param_dim is None or not getattr(kind, "masks_param_slots", False):
                continue
            if owner_name not in converted:
                converted[owner_name] = kind.dynamic_op_for(type(module)).convert_from(module)
                _set_submodule(model, owner_name, converted[owner_name])
            converted[owner_name].add_param_channel(attr, channel.param_dim, unit, channel)
            channel.module = converted[owner_name]




def _set_submodule(model: nn.Module, name: str, module: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, module)
