"""Local response norms (``nn.LocalResponseNorm``, ``nn.CrossMapLRN2d``): each channel divided by a
power of the sum of squares over its neighbouring channels (dim 1).

Channels: input and output channels are one. Pruned, the norm runs over the kept channels only
(the neighbours of a kept channel are its kept neighbours), in the masked model as in the export
(a plain copy: the module has no size attribute and no parameter). The module holds no channel
count, so its dynamic op takes it from the units' channel ranges (the traced slot's size). No
parameters, no MACs (``FlopCounterMode`` counts none); no importance slices (no weights).
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from ..registry import MODELS
from ..trace.graph import Node
from .base import LayerKind, coupled, first_input
from .dynamic_ops import DynamicChannelMixin

if TYPE_CHECKING:
    from ..channels.context import AnalysisContext


class LocalResponseNormKind(LayerKind):
    """The layer kind of ``nn.LocalResponseNorm`` and ``nn.CrossMapLRN2d`` (the same operation)."""

    name = "local_response_norm"
    module_types = (nn.LocalResponseNorm, nn.CrossMapLRN2d)
    has_macs = False

    def module_rule(self, ctx: AnalysisContext, node: Node) -> None:
        """Input and output channels are one along dim 1 (an input of at least 3 dims)."""
        x = first_input(node)
        if len(x.shape) < 3:
            return ctx.unknown(node, "a local response norm of an input without spatial dims")
        coupled(ctx, node.name, x, node.output_refs()[0], 1)
        return None

    def channels(self, module: nn.Module, is_output: bool) -> int:
        """The channel count its dynamic op was given (the module itself holds none)."""
        if not isinstance(module, DynamicLocalResponseNormMixin):
            raise TypeError(f"{type(module).__name__} holds no channel count: its dynamic op takes "
                            "it from the traced channels")
        return int(module.mutable_attrs["channels"].num_channels)

    def output_channel_dim(self, module: nn.Module, output: Any) -> int | None:
        """Dim 1."""
        return 1 if isinstance(output, torch.Tensor) and output.dim() > 2 else None


class DynamicLocalResponseNormMixin(DynamicChannelMixin):
    """A local response norm over the kept channels only; pruned channels output zero."""

    container_names = {"in_channels": "channels", "out_channels": "channels"}
    sides_from_units = True  # the mutator gives the channel count (the module holds none)

    def __init__(self, *args: Any, num_channels: int = 0, **kwargs: Any) -> None:
        """The module's own arguments, and the number of channels it will normalise."""
        self.__dict__["_side_sizes"] = {True: int(num_channels)}
        super().__init__(*args, **kwargs)

    def _channel_counts(self) -> dict[str, int]:
        sizes = self.__dict__.get("_side_sizes") or {}
        return {"channels": int(sizes.get(True, sizes.get(False, 0)))}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The original forward; with a partial mask, run on the kept channels and put back at their
        places (channels past the mask, held by no unit, are kept)."""
        mask = self.mask("out_channels")
        if mask is None:
            return super().forward(x)
        keep = torch.ones(x.shape[1], dtype=torch.bool)
        keep[:len(mask)] = mask
        idx = keep.nonzero().squeeze(1).to(x.device)
        kept = super().forward(x.index_select(1, idx))
        return torch.zeros_like(x).index_copy(1, idx, kept)

    def to_static_op(self) -> nn.Module:
        """A plain copy: it normalises over whatever channels it is given."""
        return self._static_copy({}, {})


class DynamicLocalResponseNorm(DynamicLocalResponseNormMixin, nn.LocalResponseNorm):
    """``nn.LocalResponseNorm`` with a channel mask."""

    static_class = nn.LocalResponseNorm


class DynamicCrossMapLRN2d(DynamicLocalResponseNormMixin, nn.CrossMapLRN2d):
    """``nn.CrossMapLRN2d`` with a channel mask."""

    static_class = nn.CrossMapLRN2d


LocalResponseNormKind.dynamic_ops = {nn.LocalResponseNorm: DynamicLocalResponseNorm,
                                     nn.CrossMapLRN2d: DynamicCrossMapLRN2d}
MODELS.register_module(module=DynamicLocalResponseNorm)
MODELS.register_module(module=DynamicCrossMapLRN2d)
LOCAL_RESPONSE_NORM = LocalResponseNormKind()
