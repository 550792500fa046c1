"""Dropped blocks leave the export: a ``ModuleList`` or ``Sequential`` of layers becomes shorter
(a ``ModuleDict`` loses the key, a lone block becomes ``nn.Identity``, an inline branch a
``ZeroBranch``), the block masks' hooks are
taken off, and a Hugging Face config's layer count and per-layer lists follow the kept layers
(layers' ``layer_idx`` renumbered). What the config cannot say is warned (``HFConfigWarning``).
"""
from __future__ import annotations

import warnings
from collections import OrderedDict
from typing import Any

import torch
from torch import nn

from ..mutables.block_mutable import BlockMaskHook
from .hf_export import HFConfigWarning, _mismatched_params, is_hf_model

LAYER_COUNT_KEYS = ("num_hidden_layers", "n_layer", "num_layers", "n_layers")


def strip_block_hooks(model: nn.Module) -> None:
    """Take the block masks' forward hooks (copied with the model) off every module."""
    for module in model.modules():
        for key, hook in list(module._forward_hooks.items()):
            if isinstance(hook, BlockMaskHook):
                del module._forward_hooks[key]
                module._forward_hooks_with_kwargs.pop(key, None)
                module._forward_hooks_always_called.pop(key, None)


class ZeroBranch(nn.Module):
    """What a dropped inline residual branch becomes in the export: zeros of its input's shape
    (its parent still adds it: ``x + 0`` is ``x``)."""

    def forward(self, *args: Any, **kwargs: Any) -> torch.Tensor:
        """Zeros like the one tensor argument (other arguments of the call are ignored)."""
        tensor = next(v for v in (*args, *kwargs.values()) if isinstance(v, torch.Tensor))
        return torch.zeros_like(tensor)


def remove_blocks(static: nn.Module, paths: list[str], branches: tuple[str, ...] = ()) -> dict[str, list[int]]:
    """Take the modules at ``paths`` out of ``static`` (those in ``branches`` become
    ``ZeroBranch``); returns, per shortened ``ModuleList`` / ``Sequential``, the positions (in the
    original) of the children it keeps."""
    strip_block_hooks(static)
    for path in branches:
        parent, _, key = path.rpartition(".")
        setattr(static.get_submodule(parent) if parent else static, key, ZeroBranch())
    by_parent: dict[str, set[str]] = {}
    for path in (p for p in paths if p not in branches):
        parent, _, key = path.rpartition(".")
        by_parent.setdefault(parent, set()).add(key)
    kept: dict[str, list[int]] = {}
    for parent_path, keys in by_parent.items():
        parent = static.get_submodule(parent_path) if parent_path else static
        if isinstance(parent, (nn.ModuleList, nn.Sequential)):
            items = list(parent._modules.items())
            kept[parent_path] = [i for i, (k, _) in enumerate(items) if k not in keys]
            renumber = isinstance(parent, nn.ModuleList) or all(k.isdigit() for k, _ in items)
            parent._modules = OrderedDict(
                (str(n) if renumber else items[i][0], items[i][1]) for n, i in enumerate(kept[parent_path]))
        elif isinstance(parent, nn.ModuleDict):
            for key in keys:
                del parent[key]
        else:
            for key in keys:
                setattr(parent, key, nn.Identity())
    return kept


def follow_layer_counts(static: nn.Module, kept: dict[str, list[int]], lengths: dict[str, int]) -> None:
    """Each Hugging Face model in ``static``: its config's layer count and per-layer lists follow
    the one shortened container of its layers; its layers' ``layer_idx`` is their new position.
    ``lengths``: each shortened container's length before."""
    done: set[int] = set()  # configs already followed (an HF model inside another shares its config)
    for name, module in static.named_modules():
        if not is_hf_model(module) or id(module.config) in done:
            continue
        done.add(id(module.config))
        prefix = f"{name}." if name else ""
        mine = {p: k for p, k in kept.items() if p.startswith(prefix) or not name}
        if not mine:
            continue
        config = module.config
        key = next((k for k in LAYER_COUNT_KEYS if isinstance(getattr(config, k, None), int)), None)
        counted = [p for p in mine if key is not None and lengths[p] == getattr(config, key)]
        if len(counted) != 1:
            _warn(module, f"{len(mine)} layer containers were shortened and the config counts "
                          f"{'none' if not counted else 'several'} of them")
            continue
        path = counted[0]
        indices, before = mine[path], lengths[path]
        setattr(config, key, len(indices))
        for attr, value in list(config.to_dict().items()):
            if isinstance(value, list) and len(value) == before and attr not in LAYER_COUNT_KEYS:
                setattr(config, attr, [value[i] for i in indices])
        layers = static.get_submodule(path)
        for new, (old, layer) in enumerate(zip(indices, layers.children())):
            for sub in layer.modules():
                if getattr(sub, "layer_idx", None) == old:
                    sub.layer_idx = new
        mismatched = _mismatched_params(module)
        if mismatched and not hasattr(config, "razor_widgets_unrepresentable"):
            config.razor_widgets_unrepresentable = mismatched
            _warn(module, f"from_pretrained would not rebuild {len(mismatched)} parameters "
                          f"({', '.join(mismatched[:3])})")


def _warn(model: nn.Module, why: str) -> None:
    config = model.config
    if not hasattr(config, "razor_widgets_unrepresentable"):
        config.razor_widgets_unrepresentable = [why]
    warnings.warn(f"the {type(model).__name__} without its dropped blocks cannot be described by its "
                  f"{type(config).__name__}: {why}. The exported module works: save it with torch.save.",
                  HFConfigWarning, stacklevel=4)


def remove_dropped(static: nn.Module, mutator: Any) -> None:
    """Take ``mutator``'s dropped blocks out of its export ``static`` and let the HF configs follow."""
    branches = tuple(mutator.dropped_branches()) if hasattr(mutator, "dropped_branches") else ()
    paths = [p for p in mutator.dropped_paths() if p not in branches]
    lengths = {p.rpartition(".")[0]: len(static.get_submodule(p.rpartition(".")[0])) for p in paths
               if isinstance(static.get_submodule(p.rpartition(".")[0]), (nn.ModuleList, nn.Sequential))}
    kept = remove_blocks(static, paths, branches)
    follow_layer_counts(static, kept, lengths)
