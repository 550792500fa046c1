"""What the channel analysis finds: units (``UnitSpec``) and the read-only ``ChannelAnalysis``
that the mutator and the counter read."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from ..trace.graph import TensorRef
from .channel_range import Channel
from .unit_traits import UnitTraits


class UnprunableChannelsWarning(UserWarning):
    """An op without a channel rule touched channels, which are therefore not prunable."""


@dataclass
class UnitSpec:
    """A unit found by the analysis: its size, repeats, channel items and why it is fixed."""

    num_channels: int
    repeats: int
    output_related: list[Channel] = field(default_factory=list)  # module unset: the mutator binds it
    input_related: list[Channel] = field(default_factory=list)
    fixed_reasons: list[str] = field(default_factory=list)
    order: int = 0
    roots: list[int] = field(default_factory=list)  # the unit's elements, one per channel of a block
    divisor: int = 1  # kept channels per block must be a multiple (a kernel's alignment)
    min_kept: int = 1  # kept channels per block at least (a weight standardised over them)
    traits: UnitTraits = field(default_factory=UnitTraits)  # attention heads, residual joins

    @property
    def name(self) -> str:
        """The unit's name: its first output range (else input range) as ``layer_(start, end)_channels``."""
        first = (self.output_related or self.input_related)[0]
        return f"{first.name}_{(first.start, first.end)}_{self.num_channels}"


@dataclass(frozen=True)
class ChannelAnalysis:
    """What the analysis hands on to the mutator and the counter (read-only).

    ``units``: the units found. ``roots[e]``: the channel element that element ``e`` was
    unioned into. ``elements(ref)``: the element ids of a traced tensor (compressed: a dim of
    size 1 is broadcast), or None. ``side_elements(name, is_output, param_dim)``: the elements
    of a layer side (or of a parameter's dim) as the layer's first call read or wrote them.
    ``size_attributes``: ``(module, attribute) -> elements`` the attribute counts.
    ``expert_slices``: tensors that are one expert of a 3-D expert parameter (``layers/experts.py``).
    ``free_outputs``: the outputs whose widths follow the pruned model (``model_outputs.py``):
    output path -> dim -> the elements along it (None: a tensor held in an output object, such as
    a cache, that cannot be cut: the export check reports it).
    """

    units: list[UnitSpec]
    roots: np.ndarray
    tensor_ids: dict[int, torch.Tensor]
    sides: dict[tuple[str, bool, int | None], torch.Tensor]
    size_attributes: dict[tuple[str, str], torch.Tensor]
    expert_slices: dict[int, TensorRef] = field(default_factory=dict)  # ``P[e]`` -> the 3-D parameter ``P``
    free_outputs: dict[tuple, dict[int, torch.Tensor] | None] = field(default_factory=dict)  # path -> dim -> elements

    def elements(self, ref: TensorRef) -> torch.Tensor | None:
        """The element ids of a traced tensor (a dim of size 1 is broadcast), or None if it was not seen."""
        return self.tensor_ids.get(ref.handle)

    def side_elements(self, name: str, is_output: bool, param_dim: int | None = None) -> torch.Tensor | None:
        """The elements of a layer side (or of a parameter's dim) as the layer's first call read or
        wrote them, or None."""
        return self.sides.get((name, is_output, param_dim))
