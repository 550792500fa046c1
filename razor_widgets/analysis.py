"""Find channel units in a traced graph: run the channel rules, then group elements into units.

Each rule (see ``rules.py``) maps the channel ids of an op's inputs to its outputs, unions
elements that must be pruned together and records *slots*: the input or output channels of a
layer (or the channel dim of a parameter) as a sequence of elements. After the union-find,
elements that always appear side by side in the same order in every slot form a unit, so
concatenations and splits give sub-range units, and grouped layers give repeated blocks.
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from .channel_chains import channel_chains, reasons_by_chain
from .channel_range import Channel
from .channel_space import CONST, NONE, ChannelSpace, compress, varying_dims
from .compared_sizes import resolve_comparisons
from .derived_weights import is_layer_weight
from .model_outputs import output_paths, pin_outputs, pinned_outputs
from .param_elements import ParameterElements
from .slot_cuts import cut_slots
from .traced_size import AttrRef, attribute_sources, shape_sources
from .tracing import Node, TensorRef, TracedGraph, analysis_error
from .unit_traits import UnitTraits, assign_traits

INPUT_REASON = "derived from a model input"
ATTENTION_MODES = ("heads", "head_dims")  # how attention units prune: whole heads, or positions in every head


class UnprunableChannelsWarning(UserWarning):
    """An op without a channel rule touched channels, which are therefore not prunable."""


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
    traits: UnitTraits = field(default_factory=UnitTraits)  # attention heads, residual joins

    @property
    def name(self) -> str:
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
    output path -> dim -> the elements along it.
    """

    units: list[UnitSpec]
    roots: np.ndarray
    tensor_ids: dict[int, torch.Tensor]
    sides: dict[tuple[str, bool, int | None], torch.Tensor]
    size_attributes: dict[tuple[str, str], torch.Tensor]
    expert_slices: dict[int, TensorRef] = field(default_factory=dict)  # ``P[e]`` -> the 3-D parameter ``P``
    free_outputs: dict[tuple, dict[int, torch.Tensor]] = field(default_factory=dict)  # path -> dim -> elements

    def elements(self, ref: TensorRef) -> torch.Tensor | None:
        return self.tensor_ids.get(ref.handle)

    def side_elements(self, name: str, is_output: bool, param_dim: int | None = None) -> torch.Tensor | None:
        return self.sides.get((name, is_output, param_dim))


class AnalysisContext:
    """What a channel rule sees: ids of tensors, fresh elements, unions, fixes and slots."""

    def __init__(self, graph: TracedGraph, modules: dict[str, nn.Module],
                 attention: str = "heads") -> None:
        self.graph = graph
        self.modules = modules
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
                    is_layer_weight(self.modules, ref.param, ref.shape):
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
        self.ids[ref.handle] = compress(ids)

    def full(self, ref: TensorRef) -> torch.Tensor:
        return self.get(ref).expand(ref.shape).contiguous()

    def along(self, ids1d: torch.Tensor, ndim: int, dim: int) -> torch.Tensor:
        """Place 1-D ids along ``dim`` of an ``ndim``-d id tensor."""
        shape = [1] * ndim
        shape[dim] = ids1d.numel()
        return ids1d.reshape(shape)

    # -- what rules do --------------------------------------------------------------------
    def describe(self) -> str:
        node = self.node
        if node is None:
            return "model"
        if node.kind == "module":
            return f"{type(node.target).__name__} {node.name!r}"
        return f"{node.name!r} in {node.scope or 'the model'!r}"

    def fix(self, ids: torch.Tensor, reason: str) -> None:
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
        read = {r.handle for n in self.graph.nodes for r in n.input_refs()} | {r.handle for r in self.graph.outputs}
        for source, parts, reason, handles in self.slice_checks:
            if handles and read.isdisjoint(handles):
                continue
            whole = set(roots[source.numpy()].tolist())
            if any(set(roots[p.numpy()].tolist()) < whole for p in parts):
                self.fix(source, reason)

    def write(self, ref: TensorRef, dim: int, ids1d: torch.Tensor) -> None:
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

    def first_slot(self, name: str, is_output: bool) -> torch.Tensor | None:  # a layer side as first recorded
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


class ChannelAnalyzer:
    """Runs the rule table over a traced graph and returns the units it finds."""

    def __init__(self, rules: Any, attention: str = "heads", fixed_outputs: Any = None) -> None:
        if attention not in ATTENTION_MODES:
            raise ValueError(f"attention must be one of {', '.join(ATTENTION_MODES)}, got {attention!r}")
        self.rules = rules
        self.attention = attention
        self.fixed_outputs = fixed_outputs  # which outputs keep their shape (``model_outputs.py``)

    def analyze(self, graph: TracedGraph) -> ChannelAnalysis:
        ctx = AnalysisContext(graph, graph.modules, self.attention)
        pinned_outputs(output_paths(graph), self.fixed_outputs)  # a name the output lacks: ValueError first
        try:
            for node in graph.nodes:
                ctx.node = node
                self.rules.apply(ctx, node)
            ctx.node = None
            from .layers.embedding import tie_shared_weights  # layers build on this module

            tie_shared_weights(ctx)
            free_outputs = pin_outputs(ctx, self.fixed_outputs)
            value_uses = resolve_comparisons(ctx, graph.size_uses)
            roots = ctx.space.resolve()
            ctx.resolve_slices(roots)
            _resolve_size_uses(ctx, value_uses, roots)
            units = build_units(ctx, roots)
            assign_traits(units, roots, ctx.head_elements, ctx.sums)
        except Exception as exc:  # a bug of the analysis: say where, never crash raw
            raise analysis_error(ctx, exc) from exc
        _warn_unknown(ctx, units)
        sides: dict[tuple[str, bool, int | None], torch.Tensor] = {}
        for slot in ctx.slots:
            sides.setdefault((slot.name, slot.is_output, slot.param_dim), slot.ids)
        return ChannelAnalysis(units, roots, ctx.ids, sides, ctx.size_attributes, ctx.expert_slices, free_outputs)


def _resolve_size_uses(ctx: AnalysisContext, uses: list, roots: np.ndarray) -> None:
    """Channel counts and attributes the code uses as numbers must not change: fix those
    channels, and the elements an attribute counts. One exception: ``C // heads`` stays the
    same when ``C`` is pruned by whole heads in step with the ``heads`` attribute."""
    for sources, reason, value in uses:
        if not _per_head_size(ctx, sources, value, roots):
            ctx.fix_size_sources(sources, reason)
    for sources, reason, value, ids in ctx.quotient_sizes:
        if not _per_head_size(ctx, sources, value, roots):
            for t in ids:
                ctx.fix(t, reason)
    for attr, reason in ctx.frozen_attributes:
        line = ctx.size_attributes.get((attr.module, attr.attr))
        if line is not None:
            ctx.fix(line, f"attribute {attr} keeps its value: {reason}")


def _per_head_size(ctx: AnalysisContext, sources: tuple, value: int, roots: np.ndarray) -> bool:
    """Whether ``value`` is ``C // heads`` with the ``C`` channels pruned by the same whole heads
    that the ``heads`` attribute counts."""
    shapes, attrs = shape_sources(sources), attribute_sources(sources)
    if ctx.attention != "heads" or len(shapes) != 1 or len(attrs) != 1:
        return False
    (ref, dim), attr = shapes[0], attrs[0]
    heads = ctx.size_attributes.get((attr.module, attr.attr))
    n = ref.shape[dim]
    if heads is None or heads.numel() != attr.value or n % attr.value or value != n // attr.value:
        return False
    ids = ctx.get(ref)
    if ids.shape[dim] != n:
        return False
    line = roots[ids.movedim(dim, -1).reshape(-1, n)[0].numpy()]
    blocks = line.reshape(attr.value, value)  # heads outer: ``C // heads`` channels per head
    if bool((blocks == blocks[:, :1]).all()) and set(blocks[:, 0].tolist()) == set(roots[heads.numpy()].tolist()):
        return True
    copies = line.reshape(value, attr.value)  # heads inner (``B * heads // heads``): every copy the same heads
    return bool((copies == copies[:1]).all()) and copies[0].tolist() == roots[heads.numpy()].tolist()


def _param_slots(ctx: AnalysisContext, roots: np.ndarray) -> None:
    """Parameters used by functional ops: sliceable when their elements vary along one dim."""
    for name, (ids, _shape) in ctx.param_ids.items():
        dims = varying_dims(compress(torch.from_numpy(roots[ids.reshape(-1).numpy()]).reshape(ids.shape)))
        if len(dims) == 1:
            dim = dims[0]
            line = ids.movedim(dim, 0).reshape(ids.shape[dim], -1)[:, 0]
            ctx.slot(name, True, line, param_dim=dim)
        elif len(dims) > 1:
            ctx.fix(ids, f"parameter {name!r} mixes channels along several dims")
    # parameters still in ctx.params.pending were only fixed, one element per position: they
    # mix channels along several dims, hold no slot and meet no other element


def build_units(ctx: AnalysisContext, roots: np.ndarray) -> list[UnitSpec]:
    _param_slots(ctx, roots)
    # 1. each slot (pieces cut by slices) as a sequence of roots, consecutive repeats folded into an expand ratio
    seqs: list[tuple[Slot, np.ndarray, int]] = []
    for slot in cut_slots(ctx.slots, ctx.cuts, roots):
        r = roots[slot.ids.numpy()]
        change = np.flatnonzero(np.diff(r)) + 1
        starts = np.concatenate([[0], change])
        lengths = np.diff(np.concatenate([starts, [len(r)]]))
        expand = int(lengths[0]) if len(set(lengths.tolist())) == 1 else 1
        seq = r[::expand] if expand > 1 else r
        seqs.append((slot, seq, expand))
    # 2. link a -> b when every occurrence of a is followed by b and every b preceded by a
    a_parts, b_parts = [], []
    for _, seq, _ in seqs:
        a_parts.append(np.concatenate([[-1], seq]))
        b_parts.append(np.concatenate([seq, [-1]]))
    n = len(roots)
    keys = np.unique((np.concatenate(a_parts) + 1) * (n + 1) + np.concatenate(b_parts) + 1)
    pairs = np.stack([keys // (n + 1) - 1, keys % (n + 1) - 1], 1)
    nsucc = np.bincount(pairs[:, 0][pairs[:, 0] >= 0], minlength=n)
    npred = np.bincount(pairs[:, 1][pairs[:, 1] >= 0], minlength=n)
    inner = pairs[(pairs[:, 0] >= 0) & (pairs[:, 1] >= 0) & (pairs[:, 0] != pairs[:, 1])]
    linked = inner[(nsucc[inner[:, 0]] == 1) & (npred[inner[:, 1]] == 1)]
    chain_id, chain_pos, chains = channel_chains(np.unique(np.concatenate([s for _, s, _ in seqs])), linked, n)
    # 3. decompose every slot into runs of chain occurrences
    runs: dict[int, list[tuple[Slot, int, int, int]]] = {}  # chain -> (slot, start, count, expand)
    for slot, seq, expand in seqs:
        c = int(chain_id[seq[0]])
        if chain_pos[seq[0]] == 0 and len(chains[c]) == len(seq):  # the whole slot is one chain
            runs.setdefault(c, []).append((slot, 0, 1, expand))
            continue
        p, seq_list = 0, seq.tolist()
        while p < len(seq_list):
            c = int(chain_id[seq_list[p]])
            length = len(chains[c])
            count = 1
            while p + (count + 1) * length <= len(seq_list) and seq_list[p + count * length] == chains[c][0]:
                count += 1
            runs.setdefault(c, []).append((slot, p, count, expand))
            p += count * length
    chain_reasons = reasons_by_chain(ctx.space.fixed_pairs(), chain_id, chain_pos)
    chain_divisor: dict[int, int] = {}
    for ids, divisor in ctx.divisors:
        for c in np.unique(chain_id[roots[ids[ids >= 0].numpy()]]).tolist():
            if c >= 0:
                chain_divisor[c] = math.lcm(chain_divisor.get(c, 1), divisor)
    # 4. one unit per chain
    units = []
    for c, chain in enumerate(chains):
        chain_runs = runs.get(c, [])
        if not chain_runs:
            continue
        repeats = math.gcd(*[count for _, _, count, _ in chain_runs])
        spec = UnitSpec(num_channels=len(chain) * repeats, repeats=repeats)
        spec.order = min(slot.order for slot, _, _, _ in chain_runs)
        for slot, start, count, expand in sorted(chain_runs, key=lambda x: (x[0].order, x[0].offset, x[1])):
            span = (slot.offset + start * expand, slot.offset + (start + count * len(chain)) * expand)
            item = Channel(slot.name, None, span,
                           slot.is_output, expand, slot.param_dim)
            (spec.output_related if slot.is_output else spec.input_related).append(item)
        spec.fixed_reasons.extend(chain_reasons.get(c, []) or _no_layer_reason(spec, ctx.layer_params))
        spec.roots = chain.tolist()
        spec.divisor = chain_divisor.get(c, 1)
        units.append(spec)
    units.sort(key=lambda u: u.order)
    return units


def _no_layer_reason(spec: UnitSpec, layer_params: frozenset[str] | set[str] = frozenset()) -> list[str]:
    """A unit of parameter entries only: no layer on either side can shrink with it, so slicing
    the parameters would leave the data they meet (``ls * branch(x)``) at full width. The
    parameters a layer kind runs as a layer (3-D expert weights) are layers here."""
    items = spec.output_related + spec.input_related
    if any(item.param_dim is None or item.name in layer_params for item in items):
        return []
    names = ", ".join(dict.fromkeys(item.name for item in items))
    return [f"no layer reads or writes these channels, only the parameter(s) {names}: "
            "slicing them alone would not match the data they meet"]


def _warn_unknown(ctx: AnalysisContext, units: list[UnitSpec]) -> None:
    for tag in dict.fromkeys(ctx.unknown_ops):
        caused = [u for u in units if any(tag in r for r in u.fixed_reasons)
                  and all("no channel rule" in r for r in u.fixed_reasons)]
        if not caused:  # those channels are fixed for another reason too: nothing lost here
            continue
        layers = sorted({item.name for u in caused for item in u.output_related + u.input_related})
        detail = ctx.rule_errors.get(tag)
        model = type(ctx.modules.get("")).__name__
        warnings.warn(
            f"{model}: no channel rule for op {tag}" + (f" ({detail})" if detail else "")
            + ": the channels it touches are not prunable"
            + (f" (layers: {', '.join(layers)})" if layers else ""),
            UnprunableChannelsWarning,
            stacklevel=3,
        )
