"""What a layer kind is: everything the engine knows about one family of layers, in one object.

A :class:`LayerKind` owns, for its module types and their functional forms, the channel rules,
the dynamic op classes, the count formulas (written against :class:`LayerGeometry`, returning
:class:`Term` records), the channel count of each side and the per-channel weight slices that
importance criteria read. The registry (``registry.py``) maps module types and functional op
names to kinds. What each part is: docs/layer-kinds.md.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from ..trace.graph import Node, TensorRef

if TYPE_CHECKING:
    from ..channels.context import AnalysisContext

Side = Any  # a fixed size (int) or an opaque kept-channel side made by the counter


@dataclass(frozen=True)
class Term:
    """One count term: ``factor * prod(sides) // div`` (params or MACs of one layer)."""

    factor: int
    sides: tuple[Side, ...] = ()
    div: int = 1


@dataclass(frozen=True)
class LayerGeometry:
    """What a count formula may read about one call of a layer (or one parameter).

    ``kept(is_output)`` is the kept-channel side of the layer's input or output channels (as
    the units prune them); ``input_shapes`` and ``output_shape`` are the traced shapes of the
    call (empty for a parameter's size).
    """

    name: str
    module: nn.Module
    input_shapes: tuple[tuple[int, ...], ...] = ()
    output_shape: tuple[int, ...] = ()
    kept_side: Callable[[bool], Side] = field(default=lambda is_output: 1, repr=False)
    output_dim_side: Callable[[int], Side] | None = field(default=None, repr=False)
    param_dim_side: Callable[[str, int, int], Side] | None = field(default=None, repr=False)

    def kept(self, is_output: bool) -> Side:
        """The kept-channel side of the layer's output (``is_output=True``) or input channels."""
        return self.kept_side(is_output)

    def kept_output_dim(self, dim: int) -> Side:
        """The kept size of one dim of the output (its full size where no unit prunes it)."""
        return self.output_shape[dim] if self.output_dim_side is None else self.output_dim_side(dim)

    def kept_param_dim(self, attr: str, dim: int, full: int) -> Side:
        """The kept size of dim ``dim`` of the layer's parameter ``attr`` where units prune it as a
        parameter slot (a bilinear layer's second input), ``full`` where none does."""
        return full if self.param_dim_side is None else self.param_dim_side(attr, dim, full)


@dataclass(frozen=True)
class FunctionOwner:
    """The module whose parameter a functional layer call uses (``F.linear(x, fc.weight)``)."""

    name: str
    module: nn.Module
    attr: str  # the parameter's attribute name in the module ("weight", "running_mean"...)


class LayerKind:
    """Base class of a layer kind; subclasses fill in what their layers need."""

    name = "layer"
    module_types: tuple[type, ...] = ()  # types whose own forward the rule describes (leaves)
    family_types: tuple[type, ...] = ()  # further base types: counted and sized, never leaves
    functions: tuple[str, ...] = ()  # functional op names this kind owns
    owner_args: tuple[tuple[int, str], ...] = ((1, "weight"),)  # (position, keyword) of a param arg
    dynamic_ops: dict[type, type] = {}
    child_params: tuple[str, ...] = ()  # children whose parameters this kind sizes (MHA out_proj)
    has_macs = True  # False: no MACs by the convention (norms), and FlopCounterMode counts none
    weight_rows_are_outputs = False  # dim 0 of its weight (and its bias) holds its output channels

    # -- channel rules --------------------------------------------------------------------
    def module_rule(self, ctx: AnalysisContext, node: Node) -> None:
        """The channel rule of a leaf module of this kind (default: no rule, its channels are fixed)."""
        ctx.unknown(node)

    def function_rule(self, ctx: AnalysisContext, node: Node) -> None:
        """The channel rule of this kind's functional form (default: no rule, its channels are fixed)."""
        ctx.unknown(node)

    def function_owner(self, node: Node, modules: dict[str, nn.Module]) -> FunctionOwner | None:
        """The module of this kind whose parameter a functional call uses, if any (only the
        ``module_types``, which have dynamic ops: a family type would stay unconverted)."""
        for index, key in self.owner_args:
            ref = _arg(node, index, key)
            if ref is None or ref.param is None:
                continue
            owner, _, attr = ref.param.rpartition(".")
            module = modules.get(owner)
            if module is not None and isinstance(module, self.module_types):
                return FunctionOwner(owner, module, attr)
            return None
        return None

    # -- sizes and counts -----------------------------------------------------------------
    def channels(self, module: nn.Module, is_output: bool) -> int:
        """The number of input (``is_output=False``) or output channels of ``module``."""
        raise NotImplementedError

    def macs(self, call: LayerGeometry) -> list[Term]:
        """Multiply-accumulates of one call (none for norms: see docs/counting.md)."""
        return []

    def param_size(self, param: LayerGeometry, attr: str, shape: tuple[int, ...]) -> Term | None:
        """The exported size of parameter ``attr`` (``None``: not sized here, counted whole)."""
        return None

    # -- importance -----------------------------------------------------------------------
    def output_channel_weights(self, module: nn.Module) -> dict[str, torch.Tensor]:
        """``{parameter name: tensor}`` of raw (unmasked) weights whose dim 0 is the output
        channel: ``tensor[start:end]`` belongs to output channels ``start:end``. Empty when the
        kind has none."""
        return {}

    def input_channel_weights(self, module: nn.Module) -> dict[str, torch.Tensor]:
        """The same for input channels (empty where no tensor has them on one dim, as in a
        grouped conv)."""
        return {}

    def channel_scale(self, module: nn.Module) -> torch.Tensor | None:
        """The raw per-channel scale of a normalisation (its gamma), which Network Slimming
        ranks channels by; None for kinds without one."""
        return None

    def output_channel_dim(self, module: nn.Module, output: Any) -> int | None:
        """The dim of ``output`` (the module's forward result) that holds its output channels,
        for criteria that read activations; None where there is no such single tensor dim."""
        return None

    def dynamic_op_for(self, module_type: type) -> type | None:
        """The dynamic op class of ``module_type`` (its own, or the one of its nearest base)."""
        for base in module_type.__mro__:
            if base in self.dynamic_ops:
                return self.dynamic_ops[base]
        return None

    def __repr__(self) -> str:
        return f"<layer kind {self.name}>"


# -- helpers shared by the kinds ------------------------------------------------------------------
def raw_param(module: nn.Module, name: str) -> torch.Tensor | None:
    """A parameter as stored (a dynamic op's ``weight`` property would mask it)."""
    return module.__dict__.get("_parameters", {}).get(name)


def weights_along(module: nn.Module, dim: int, names: tuple[str, ...]) -> dict[str, torch.Tensor]:
    """Raw parameters ``names`` of ``module`` with their dim ``dim`` moved to the front."""
    found = {name: raw_param(module, name) for name in names}
    return {name: (t if dim == 0 else t.transpose(0, dim)) for name, t in found.items()
            if t is not None and t.dim() > dim}


def _arg(node: Node, index: int, key: str) -> TensorRef | None:
    value = node.args[index] if len(node.args) > index else node.kwargs.get(key)
    return value if isinstance(value, TensorRef) else None


def node_arg(node: Node, index: int, key: str, default: Any = None) -> Any:
    """Argument ``index`` (or keyword ``key``) of a recorded call."""
    return node.args[index] if len(node.args) > index else node.kwargs.get(key, default)


def first_input(node: Node) -> TensorRef:
    """The first tensor among a recorded call's inputs (the layer's input)."""
    return node.input_refs()[0]


def group_union(ctx: AnalysisContext, ids: torch.Tensor, groups: int) -> None:
    """The same position in every one of ``groups`` equal blocks is one channel."""
    blocks = ids.reshape(groups, -1)
    ctx.space.union(blocks[:1].expand_as(blocks), blocks)


def coupled(ctx: AnalysisContext, name: str, x: TensorRef, out: TensorRef, dim: int,
            groups: int = 1) -> None:
    """A per-channel layer: its input and output channels along ``dim`` are the same."""
    ids = ctx.read(x, dim)
    if groups > 1:
        group_union(ctx, ids, groups)
    ctx.slot(name, False, ids)
    ctx.slot(name, True, ids)
    ctx.write(out, dim, ids)


def positions(shape: tuple[int, ...], channels: int) -> int:
    """Elements of a tensor per channel (every dim but one channel dim of ``channels``)."""
    return math.prod(shape) // channels
