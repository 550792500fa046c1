"""A mean over the channels inside a small module: RMSNorm as Hugging Face writes it.

``x * rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * weight`` (``LlamaRMSNorm``,
``T5LayerNorm``, Gemma's and most others) reads its channels as one set: after pruning, the
export averages over the kept channels. So the module whose own code takes the mean (a module
without children, such as an RMSNorm) gets the channels as its input side and becomes a
:class:`DynamicChannelMean`: with a partial mask, its forward runs under a
``TorchFunctionMode`` that takes every mean over those channels over the kept ones only, which
is what the export computes. At full choices it runs the original code. Its ``weight`` is a
parameter used by an elementwise product, pruned along its one dim like a class token.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from ..channels.channel_space import CONST
from ..registry import MODELS
from .base import LayerKind
from .dynamic_ops import DynamicChannelMixin
from .registry import register_family_type

if TYPE_CHECKING:
    from ..channels.context import AnalysisContext
    from ..trace.graph import Node

MEAN_OPS = frozenset({"mean"})


def channel_mean(ctx: AnalysisContext, node: Node, dim: int) -> None:
    """``mean`` over the channel dim ``dim`` in a childless module: the module reads those
    channels (its input side); the mean itself is a statistic without channels."""
    module = ctx.modules.get(node.scope)
    src = node.input_refs()[0]
    weight = None if module is None else module.__dict__.get("_parameters", {}).get("weight")
    if not node.scope or next(module.children(), None) is not None or weight is None \
            or weight.shape[-1] != src.shape[dim] or dim % len(src.shape) != len(src.shape) - 1:
        return ctx.unknown(node)  # not a norm-like module over its last dim: no rule
    ids = ctx.read(src, dim)
    ctx.slot(node.scope, False, ids)
    register_family_type(CHANNEL_MEAN, type(module))
    for ref in node.output_refs():
        ctx.set(ref, torch.full([1] * len(ref.shape), CONST, dtype=torch.long))


class _KeptMean(TorchFunctionMode):
    """Means over the last ``n`` channels (of dim ``-1``) are taken over the kept ones."""

    def __init__(self, mask: torch.Tensor) -> None:
        super().__init__()
        self.n = mask.numel()
        self.idx = mask.nonzero().squeeze(1)

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if getattr(func, "__name__", "") in MEAN_OPS and args and isinstance(args[0], torch.Tensor):
            x = args[0]
            dim = kwargs.get("dim", args[1] if len(args) > 1 else None)
            dims = [dim] if isinstance(dim, int) else list(dim or [])
            if len(dims) == 1 and x.dim() and x.shape[dims[0]] == self.n and dims[0] % x.dim() == x.dim() - 1:
                kept = x.index_select(-1, self.idx.to(x.device))
                return func(kept, *args[1:], **kwargs)
        return func(*args, **kwargs)


class DynamicChannelMeanMixin(DynamicChannelMixin):
    """A module that averages over its channels, with those channels masked."""

    container_names = {"in_channels": "in_channels", "out_channels": "in_channels"}

    def _channel_counts(self) -> dict[str, int]:
        return {"in_channels": int(self.__dict__["_parameters"]["weight"].shape[-1])}

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        """The original forward; with a partial mask, every mean over the channels is taken over the
        kept ones."""
        mask = self.mask("in_channels")
        if mask is None:
            return super().forward(*args, **kwargs)
        with _KeptMean(mask):
            return super().forward(*args, **kwargs)

    def to_static_op(self) -> nn.Module:
        """The module as its original class (its ``weight`` is pruned as a parameter, like a class token)."""
        return self._static_copy({}, {})


class DynamicChannelMean(DynamicChannelMeanMixin, nn.Module):
    """A module averaging over its channels, with a channel mask (the class adopts the module's type
    when converted)."""

    static_class = nn.Module


MODELS.register_module(module=DynamicChannelMean)


class ChannelMeanKind(LayerKind):
    """Modules whose own code averages over their channels (RMSNorm): no rule of a module type
    (their forward is traced; ``channel_mean`` is called by the reduction rule), their types
    join the kind as they are met; no MACs; their weight is sized as a parameter slot."""

    name = "channel_mean"

    def channels(self, module: nn.Module, is_output: bool) -> int:
        """The width of the module's ``weight`` (its last dim), on both sides."""
        return int(module.__dict__["_parameters"]["weight"].shape[-1])

    def dynamic_op_for(self, module_type: type) -> type | None:
        """:class:`DynamicChannelMean`, for every type of the kind."""
        return DynamicChannelMean


CHANNEL_MEAN = ChannelMeanKind()
