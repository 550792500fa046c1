"""Tied parameters in the export: a tied LM head and its token embedding share one tensor in
the prepared model, and again in the export."""
from __future__ import annotations

import torch
from torch import nn

from ..layers.embedding import sync_embedding_sizes


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
