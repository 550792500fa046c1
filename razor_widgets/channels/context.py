"""What a channel rule sees while the analysis runs: the ``AnalysisContext`` (ids of tensors,
fresh elements, unions, fixes) and the ``Slot``s it records for layer sides."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from ..trace.graph import Node, TensorRef, TracedGraph
from ..trace.traced_size import AttrRef, attribute_sources, shape_sources
from .channel_space import CONST, NONE, ChannelSpace, compress
from .param_elements import ParameterElements

INPUT_REASON = "derived from a model input"


@dataclass
class Slot:
    """Channels of one layer side (or of one parameter dim) as a 1-D sequence of elements.

    Not a :class:`Channel`: a slot is a whole side while the analysis runs, before units
    exist; the units' channel ranges are cut from slots at the end."""

    name: str
    is_output: bool
    ids: torch.Tensor
    order: int
    param_dim: int | None = None  # set for parameter slots (class tokens, layer scales...)
    offset: int = 0  # where a piece of a side cut by slices (``cut_slots``) starts in the side


class AnalysisContext:
    """What a channel rule sees: ids of tensors, fresh elements, unions, fixes and slots."""

    def __init__(self, graph: TracedGraph, modules: dict[str, nn.Module], attention: str,
                 is_layer_weight: Callable[[str, tuple[int, ...]], bool]) -> None:
        self.graph = graph
        self.modules = modules
        # a conv/linear weight or bias whose rows are the layer's outputs (the layer kinds know: the analyzer says)
        self.is_layer_weight = is_layer_weight
        self.attention = attention  # "heads": prune whole heads; "head_dims": the same positions in every head
        self.space = ChannelSpace()
        self.ids: dict[int, torch.Tensor] = {}
        self.slots: list[Slot] = []
        self.params = ParameterElements(self.space, modules)  # elements of parameters ops read
        self.param_ids = self.params.ids  # name -> (ids, shape)
        self.layer_out: dict[str, torch.Tensor] = {}  # output elements of each layer (reuse)
        self.unknown_ops: list[str] = []  # the ops without a rule, as ``describe()`` names them
        self.rule_errors: dict[str, str] = {}  # op -> why its rule failed on it
        self.slice_checks: list[tuple[torch.Tensor, list[torch.Tensor], str, list[int]]] = []
        self.cuts: set[int] = set()  # elements where a slice of a channel dim starts or ends
        self.transposed_params: dict[int, str] = {}  # ``w.T`` of a 2-D parameter -> its name
        self.quotient_sizes: list[tuple] = []  # ``B * heads // heads`` in a reshape: checked after the union-find
        self.const_reasons: dict[int, str] = {}  # why a tensor without elements has none
        self._first_slot: dict[tuple[str, bool], torch.Tensor] = {}
        self.expert_slices: dict[int, TensorRef] = {}  # P[e] of a 3-D expert parameter -> P
        self.divisors: list[tuple[torch.Tensor, int]] = []  # elements whose kept count a kernel aligns
        self.minimums: list[tuple[torch.Tensor, int]] = []  # elements of which at least n stay kept
        self.layer_params: set[str] = set()  # parameters run as layers (3-D expert weights)
        self.node: Node | None = None
        self.size_attributes: dict[tuple[str, str], torch.Tensor] = {}  # attribute -> elements it counts
        self.frozen_attributes: list[tuple[AttrRef, str]] = []  # attributes that must keep their value
        self.head_elements: list[torch.Tensor] = []  # elements an attention op holds as heads
        self.sums: list[tuple[torch.Tensor, str]] = []  # (elements, scope) of residual joins

    # -- ids of tensors -------------------------------------------------------------------
    def get(self, ref: TensorRef, along: int | None = None) -> torch.Tensor:
        """Compressed ids of a tensor; parameters get elements of their own on first use (per
        position of dim ``along`` only when a layer reads them along it: ``param_elements.py``)."""
        ids = self.ids.get(ref.handle)
        if ids is None:
            if ref.param is not None and ref.param not in self.param_ids and \
                    self.is_layer_weight(ref.param, ref.shape):
                # a conv/linear weight or bias read by code (derived weights): its rows are the layer's outputs
                owner = ref.param.rpartition(".")[0]
                ids = self.along(self.fresh_layer_output(owner, ref.shape[0]), len(ref.shape), 0)
            else:
                ids = self.params.elements(ref, along) if ref.param is not None else None
            if ids is None:
                ids = torch.full([1] * len(ref.shape), CONST, dtype=torch.long)
            self.ids[ref.handle] = ids
        return ids

    def set(self, ref: TensorRef, ids: torch.Tensor) -> None:
        """Record the ids of a traced tensor (stored compressed)."""
        self.ids[ref.handle] = compress(ids)

    def full(self, ref: TensorRef) -> torch.Tensor:
        """The ids of a traced tensor expanded to its full shape."""
        return self.get(ref).expand(ref.shape).contiguous()

    def along(self, ids1d: torch.Tensor, ndim: int, dim: int) -> torch.Tensor:
        """Place 1-D ids along ``dim`` of an ``ndim``-d id tensor."""
        shape = [1] * ndim
        shape[dim] = ids1d.numel()
        return ids1d.reshape(shape)

    # -- what rules do --------------------------------------------------------------------
    def describe(self) -> str:
        """The op being analysed, in words for reasons and warnings (``Conv2d 'layer1.0.conv1'``)."""
        node = self.node
        if node is None:
            return "model"
        if node.kind == "module":
            return f"{type(node.target).__name__} {node.name!r}"
        return f"{node.name!r} in {node.scope or 'the model'!r}"

    def fix(self, ids: torch.Tensor, reason: str) -> None:
        """Mark the elements among ``ids`` as not prunable, for ``reason``."""
        self.space.fix(ids, reason)

    def fix_size_sources(self, sources: tuple, reason: str) -> None:
        """Fix the channels whose count the model's code reads (``TracedSize`` sources); the
        attributes among the sources keep their values."""
        for ref, dim in shape_sources(sources):
            ids = self.get(ref)
            if ids.shape[dim] > 1:  # a channel dim; batch and spatial dims have no elements
                self.fix(ids, reason)
        self.frozen_attributes += [(attr, reason) for attr in attribute_sources(sources)]

    def count_with_attribute(self, attr: AttrRef, line: torch.Tensor) -> None:
        """``attr`` sizes a dim holding the elements ``line``: the export sets it to how many of
        them are kept. Every dim an attribute sizes keeps the same number (unioned in order)."""
        key = (attr.module, attr.attr)
        first = self.size_attributes.setdefault(key, line)
        if first is not line:
            if first.shape == line.shape:
                self.space.union(first, line)
            else:
                self.fix(torch.cat([first, line]), f"attribute {attr} sizes dims of different lengths")

    def fix_inputs(self, node: Node, reason: str) -> None:
        """Mark every element of the node's inputs as not prunable, for ``reason``."""
        for ref in node.input_refs():
            self.fix(self.get(ref), reason)

    def read(self, ref: TensorRef, dim: int) -> torch.Tensor:
        """Elements of the channel dim ``dim`` as read by a layer (other dims share them)."""
        dim = dim % len(ref.shape)
        size = ref.shape[dim]
        ids = self.get(ref, along=dim)
        if ids.numel() == size and ids.shape[dim] == size and bool((ids >= 0).all()):
            return ids.reshape(-1)  # the common case: one element per channel, nothing to merge
        reason = self.const_reasons.get(ref.handle, INPUT_REASON)
        if ids.shape[dim] == 1 and size > 1:
            ids = ids.expand(*[size if d == dim else s for d, s in enumerate(ids.shape)])
        cols = ids.movedim(dim, 0).reshape(size, -1)
        valid = cols >= 0
        has = valid.any(dim=1)
        first = torch.where(valid, cols, torch.iinfo(torch.long).max).min(dim=1).values
        rows = torch.where(has, first, NONE)
        missing = ~has
        if bool(missing.any()):
            new = self.space.fresh(int(missing.sum()))
            self.fix(new, reason)
            rows = rows.clone()
            rows[missing] = new
            if not bool(has.any()):  # a source tensor: every reader shares these elements
                self.set(ref, self.along(rows, len(ref.shape), dim))
        self.space.union(rows.unsqueeze(1).expand_as(cols), cols)
        partial = has & (~valid).any(dim=1)
        if bool(partial.any()):
            self.fix(rows[partial], f"mixed with constant data at {self.describe()}")
        return rows

    def check_slices(self, source: torch.Tensor, parts: list[torch.Tensor], reason: str) -> None:
        """After the union-find: a part holding only some of the source's channels is a selection by fixed
        indices, which pruning would shift: fixed, unless no op reads the parts (``x[:, :, -1]`` for its shape)."""
        source = torch.unique(_valid(compress(source)))
        parts = [p for p in parts if p.numel()]  # an empty part (``x[..., 16:]`` of 16) selects nothing
        if source.numel():
            handles = [r.handle for r in self.node.output_refs()] if self.node is not None else []
            self.slice_checks.append((source, [torch.unique(_valid(compress(p))) for p in parts], reason, handles))

    def resolve_slices(self, roots: np.ndarray) -> None:
        """After the union-find: fix the source of each recorded slice (:meth:`check_slices`) with a
        part holding only some of its channels, unless no op reads the slice's outputs."""
        read = {r.handle for n in self.graph.nodes for r in n.input_refs()} | {r.handle for r in self.graph.outputs}
        for source, parts, reason, handles in self.slice_checks:
            if handles and read.isdisjoint(handles):
                continue
            whole = set(roots[source.numpy()].tolist())
            if any(set(roots[p.numpy()].tolist()) < whole for p in parts):
                self.fix(source, reason)

    def write(self, ref: TensorRef, dim: int, ids1d: torch.Tensor) -> None:
        """Give a traced tensor the 1-D ids ``ids1d`` along ``dim`` (the other dims share them)."""
        dim = dim % len(ref.shape)
        self.set(ref, self.along(ids1d, len(ref.shape), dim))

    def fresh_layer_output(self, layer: str, n: int) -> torch.Tensor:
        """Output elements of a layer; a layer called again reuses its elements."""
        if layer not in self.layer_out:
            self.layer_out[layer] = self.space.fresh(n)
        return self.layer_out[layer]

    def slot(self, name: str, is_output: bool, ids1d: torch.Tensor, param_dim: int | None = None) -> None:
        """Record a layer side; a layer called again reads into the same channels."""
        first = self._first_slot.get((name, is_output))
        if first is not None:
            if first.shape != ids1d.shape:
                self.fix(torch.cat([first, ids1d]), f"{name!r} is called with different channel counts")
            else:
                self.space.union(first, ids1d)
            return
        self._first_slot[name, is_output] = ids1d
        self.slots.append(Slot(name, is_output, ids1d, len(self.slots), param_dim))

    def require_divisor(self, ids: torch.Tensor, divisor: int) -> None:
        """The kept count of these channels must be a multiple of ``divisor`` (a kernel's alignment)."""
        self.divisors.append((ids.reshape(-1), divisor))

    def require_min(self, ids: torch.Tensor, kept: int) -> None:
        """At least ``kept`` of these channels per block must stay (statistics over them need as many)."""
        self.minimums.append((ids.reshape(-1), kept))

    def first_slot(self, name: str, is_output: bool) -> torch.Tensor | None:
        """A layer side's elements as first recorded, or None if the side has no slot."""
        return self._first_slot.get((name, is_output))

    def unknown(self, node: Node, detail: str | None = None) -> None:
        """No rule (or, with ``detail``, a rule that failed on this form of the op): fix every
        element the op touches and give its outputs no structure."""
        refs = node.input_refs()
        deferred = [r.handle not in self.ids and self.params.can_wait(r) for r in refs]
        touched = [None if later else self.get(r) for r, later in zip(refs, deferred)]
        has_elements = any(deferred) or any(bool((t >= 0).any()) for t in touched if t is not None)
        if has_elements:
            reason = f"no channel rule for {self.describe()}" + (f" ({detail})" if detail else "")
            for ref, t in zip(refs, touched):
                if t is None:
                    self.params.fix_later(ref.param, reason)
                else:
                    self.fix(t, reason)
            self.unknown_ops.append(self.describe())
            if detail:
                self.rule_errors[self.describe()] = detail
        for ref in node.output_refs():
            self.set(ref, torch.full([1] * len(ref.shape), CONST, dtype=torch.long))
            if has_elements:
                self.const_reasons[ref.handle] = f"after no channel rule for {self.describe()}"

    def carry_const_reasons(self, node: Node) -> None:
        """Outputs without elements inherit why their inputs had none."""
        reasons = [self.const_reasons[r.handle] for r in node.input_refs() if r.handle in self.const_reasons]
        if reasons:
            for ref in node.output_refs():
                if ref.handle not in self.const_reasons and bool((self.get(ref) < 0).all()):
                    self.const_reasons[ref.handle] = reasons[0]


def _valid(ids: torch.Tensor) -> torch.Tensor:
    return ids[ids >= 0]
