"""The static copy of a prepared model: every dynamic op swapped for its static op, parameters
sliced along the dims units prune, size attributes set to the kept counts, and no tensor shared
with the prepared model (tied weights tied again). ``ChannelMutator.to_static()`` checks it."""
from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn

from ..layers import remove_fused_path_guards
from ..layers.dynamic_ops import DynamicChannelMixin, set_submodule
from .shared_params import retie


def static_copy(model: nn.Module, param_masks: dict[tuple[str, int], torch.Tensor],
                size_attributes: dict[tuple[str, str], list[tuple[Any, int]]]) -> nn.Module:
    """A new model of plain layers holding only the kept channels of the prepared ``model``.
    ``param_masks``: ``(parameter, dim) -> kept mask``; ``size_attributes``: ``(module, attribute)
    -> (unit, position)`` pairs whose kept count the attribute becomes (a None unit always counts)."""
    originals = {id(t): t for t in (*model.parameters(), *model.buffers())}
    static = copy.deepcopy(model, dict(originals))  # the copy shares the tensors: no second copy
    remove_fused_path_guards(static)
    for name, module in list(static.named_modules()):
        if isinstance(module, DynamicChannelMixin) and not _exported_by_parent(static, name):
            set_submodule(static, name, module.to_static_op())
    for (qualname, dim), mask in param_masks.items():
        owner_name, _, attr = qualname.rpartition(".")
        owner = static.get_submodule(owner_name) if owner_name else static
        param = getattr(owner, attr)
        if param.shape[dim] != mask.numel():  # its layer's static op cut it already (a bilinear's second input)
            continue
        kept = param.detach().index_select(dim, mask.nonzero().squeeze(1).to(param.device))
        setattr(owner, attr, nn.Parameter(kept.clone(), requires_grad=param.requires_grad))
    for (owner_name, attr), positions in size_attributes.items():
        kept = sum(unit is None or bool(unit.current_mask[pos]) for unit, pos in positions)
        setattr(static.get_submodule(owner_name) if owner_name else static, attr, kept)
    _own_tensors(static, originals)
    retie(static, model)
    return static


def _exported_by_parent(model: nn.Module, name: str) -> bool:
    """Whether a dynamic op is a child its dynamic parent exports (MHA's out_proj)."""
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else None
    return isinstance(parent, DynamicChannelMixin) and child in parent.dynamic_children


def _own_tensors(static: nn.Module, originals: dict[int, torch.Tensor]) -> None:
    """Give ``static`` its own copy of every tensor it still shares with the prepared model
    (layers no unit prunes), one tensor at a time; tied weights stay tied."""
    copies: dict[int, torch.Tensor] = {}
    for module in static.modules():
        for store, make in ((module._parameters, _parameter_copy), (module._buffers, torch.Tensor.clone)):
            for key, tensor in store.items():
                if tensor is not None and id(tensor) in originals:
                    if id(tensor) not in copies:
                        copies[id(tensor)] = make(tensor)
                    store[key] = copies[id(tensor)]


def _parameter_copy(param: torch.Tensor) -> nn.Parameter:
    """A parameter of its own, with the same data and ``requires_grad``."""
    return nn.Parameter(param.detach().clone(), requires_grad=param.requires_grad)
