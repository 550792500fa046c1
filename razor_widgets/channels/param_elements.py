"""Channel elements of parameters that ops read directly (``F.embedding(x, w)``, ``x * gamma``,
``x + pos_embed``), made on first use and only as many as the use needs.

Making one element per position would cost the parameter's size (an embedding table: vocabulary
x width); a layer reading the parameter along one dim needs one element per position of that dim,
and an op without a rule only fixes the elements. Why that is enough: docs/channel-analysis.md.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from ..trace.graph import TensorRef
from .channel_space import ChannelSpace, compress


class ParameterElements:
    """The elements of every float parameter used so far: ``ids[name] = (ids, shape)``."""

    def __init__(self, space: ChannelSpace, modules: dict[str, nn.Module]) -> None:
        self.space = space
        self.modules = modules
        self.ids: dict[str, tuple[torch.Tensor, tuple[int, ...]]] = {}
        self.pending: dict[str, list[int]] = {}  # parameter -> its reserved fixes (no ids yet)

    def elements(self, ref: TensorRef, along: int | None = None) -> torch.Tensor | None:
        """The compressed ids of ``ref``'s parameter (one element per position, or per position
        of dim ``along`` when a layer reads it along that dim first); None if not a float one."""
        known = self.ids.get(ref.param)
        if known is not None:
            return known[0]
        if not is_float_param(self.modules, ref.param):
            return None
        ndim = len(ref.shape)
        if along is None:
            ids = compress(self.space.fresh(math.prod(ref.shape)).reshape(ref.shape))
        else:
            ids = compress(self.space.fresh(ref.shape[along]).reshape([-1 if d == along else 1 for d in range(ndim)]))
        for index in self.pending.pop(ref.param, []):
            self.space.fill_fix(index, ids)
        self.ids[ref.param] = (ids, ref.shape)
        return ids

    def can_wait(self, ref: TensorRef) -> bool:
        """Whether ``ref`` is a float parameter not used yet that varies along two dims or more."""
        return (ref.param is not None and ref.param not in self.ids and sum(s > 1 for s in ref.shape) >= 2
                and is_float_param(self.modules, ref.param))

    def fix_later(self, param: str, reason: str) -> None:
        """Fix every element of ``param`` once it has ids (in this place of the fixes' order)."""
        self.pending.setdefault(param, []).append(self.space.reserve_fix(reason))


def is_float_param(modules: dict[str, nn.Module], qualname: str) -> bool:
    """Whether ``qualname`` names an ``nn.Parameter`` of its module (not a buffer or a plain tensor
    attribute)."""
    owner, _, attr = qualname.rpartition(".")
    module = modules.get(owner)
    tensor = None if module is None else getattr(module, attr, None)
    return isinstance(tensor, nn.Parameter)
