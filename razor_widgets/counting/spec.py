"""The geometry of a traced model, turned into count formulas over the units' kept channels.

From the trace and the channel analysis, :func:`build_spec` records once, per layer, the
channel-independent geometry and a small formula (a layer kind's ``macs`` and ``param_size``;
the products ``_fn_*`` below) over the kept counts of the layer's sides: linear in the units'
kept channels, or "special" sides evaluated from the unit masks. Every count is a sum of
:class:`CountTerm` ``factor * side_a * side_b * ... // div``; ``live_counter.py`` evaluates them.
The convention and the terms: docs/counting.md.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import nn
from torch.utils._pytree import tree_map
from torch.utils.flop_counter import FlopCounterMode

from ..analysis import rules
from ..analysis.rules_matmul import add_product_operands
from ..channels.analysis_result import ChannelAnalysis
from ..layers import KINDS, LayerGeometry, LayerKind, Term, function_kind, kind_of, leaf_kind
from ..layers.base import FunctionOwner, Side
from ..layers.derived_weights import derived_weight
from ..layers.transposed_linear import OWNED_LINEAR
from ..trace.graph import Node, TensorRef, TracedGraph
from .resources import REFERENCE_FLOP_FORMULAS


# -- the analytic counter: linear forms, special sides and terms ---------------------------------
class Form(NamedTuple):
    """A kept size linear in the units' kept channels per block: ``const + sum(coef * kept[unit])``."""

    const: int
    coefs: tuple[tuple[int, int], ...]  # (unit index, coef), sorted


class SideRef(NamedTuple):
    """A side whose value changes with the choices: an index into the counter's side array."""

    index: int


class SpecialSide(NamedTuple):
    """A special side (its kept size depends on which channels are kept) and its index in the
    counter's side array."""

    side: int
    special: _Special


class CountTerm(NamedTuple):
    """``factor * prod(sides[i] for i in sides) // div`` params (``is_param``) or MACs of a layer."""

    layer: str
    is_param: bool
    factor: int
    sides: tuple[int, ...]  # side indices (0 is the constant 1)
    div: int


def _form(const: int, coefs: dict[int, int] | None = None) -> Form:
    return Form(int(const), tuple(sorted((u, int(c)) for u, c in (coefs or {}).items() if c)))


@dataclass
class _Special:
    """A side whose kept size depends on which channels are kept: max over lines of
    ``weights @ [1, mask(unit_0)[:base_0], mask(unit_1)[:base_1], ...]``."""

    units: list[int]
    weights: np.ndarray  # (lines, 1 + sum of the units' bases), int64


class _Spec:
    """What the builder records: sides and terms, turned into arrays by ``ResourceCounter``."""

    def __init__(self, bases: list[int]) -> None:
        self.bases = bases  # channels per block of each mutable unit
        self.forms: dict[Form, int] = {_form(1): 0}  # side 0 is the constant 1 (padding)
        self.full: dict[int, int] = {0: 1}  # every side's value at full choices
        self.specials: dict[Any, int] = {}
        self.special_defs: list[SpecialSide] = []
        self.terms: list[CountTerm] = []
        self.layers: dict[str, int] = {}
        self.notes: list[str] = []

    def side(self, form: Form | _Special | int, key: Any = None) -> int | SideRef:
        """An ``int`` for a constant side, else a :class:`SideRef`."""
        if isinstance(form, int):
            return form
        if isinstance(form, _Special):
            if key not in self.specials:
                idx = self.specials[key] = len(self.forms) + len(self.special_defs)
                self.special_defs.append(SpecialSide(idx, form))
                self.full[idx] = int(form.weights.sum(axis=1).max())
            return SideRef(self.specials[key])
        if not form.coefs:
            return form.const
        if form not in self.forms:
            idx = self.forms[form] = len(self.forms) + len(self.special_defs)
            self.full[idx] = form.const + sum(c * self.bases[u] for u, c in form.coefs)
        return SideRef(self.forms[form])

    def full_value(self, factor: int, sides: list, div: int) -> int:
        for side in sides:
            factor *= self.full[side.index] if isinstance(side, SideRef) else int(side)
        return factor // div

    def term(self, layer: str, is_param: bool, factor: int, sides: list, div: int = 1) -> None:
        """Add ``factor * prod(sides) // div`` to ``layer``'s params or MACs."""
        self.layers.setdefault(layer, len(self.layers))
        idx = []
        for side in sides:
            if isinstance(side, SideRef):
                idx.append(side.index)
            else:
                factor *= int(side)
        if div > 1 and not idx:
            factor, div = factor // div, 1
        self.terms.append(CountTerm(layer, bool(is_param), int(factor), tuple(idx), int(div)))


class _Builder:
    """Reads the trace, the analysis and the units once and records sides and terms."""

    def __init__(self, model: nn.Module, trace: TracedGraph, analysis: ChannelAnalysis, units: list) -> None:
        self.model = model
        self.graph = trace
        self.analysis = analysis
        self.modules = dict(self.model.named_modules())
        self.units = units
        self.spec = _Spec([u.num_channels // u.repeats for u in self.units])
        self._index_units()

    # -- units and sides ------------------------------------------------------------------
    def _index_units(self) -> None:
        self.side_items: dict[Any, list[tuple[int, int, int]]] = {}
        self.param_dims: dict[str, set[int]] = {}  # parameters pruned along a dim
        for ui, unit in enumerate(self.units):
            base = unit.num_channels // unit.repeats
            for ch in unit.channels:
                span = ch.end - ch.start
                if ch.param_dim is None:
                    key = (ch.name, ch.is_output_channel)
                else:
                    key = (ch.name, "param", ch.param_dim)
                    self.param_dims.setdefault(ch.name, set()).add(ch.param_dim)
                self.side_items.setdefault(key, []).append((ui, span // base, span))
        # channel element (root) -> (unit, position in the unit's first block)
        roots = self.analysis.roots
        self.roots = roots
        self.root_unit = np.full(len(roots), -1, dtype=np.int64)
        self.root_pos = np.zeros(len(roots), dtype=np.int64)
        for ui, unit in enumerate(self.units):
            base = unit.num_channels // unit.repeats
            for ch in unit.channels:
                side = self.analysis.side_elements(ch.name, ch.is_output_channel, ch.param_dim)
                if side is None:
                    continue
                ids = side[ch.start:ch.end].numpy()
                pos = (np.arange(len(ids)) // ch.expand_ratio) % unit.num_channels % base
                valid = ids >= 0
                r = roots[ids[valid]]
                self.root_unit[r] = ui
                self.root_pos[r] = pos[valid]
                break

    def layer_form(self, name: str, is_output: bool, full: int) -> Form:
        """Kept channels of one side of a layer (or of one dim of a parameter)."""
        key = (name, is_output) if isinstance(is_output, bool) else (name, "param", is_output)
        items = self.side_items.get(key, ())
        const, coefs = full, {}
        for ui, coef, span in items:
            const -= span
            coefs[ui] = coefs.get(ui, 0) + coef
        return _form(const, coefs)

    def dim_side(self, ref: TensorRef, dim: int) -> int | tuple[int]:
        """Kept size of one dim of a traced tensor, from its channel elements."""
        ndim = len(ref.shape)
        dim %= ndim
        size = ref.shape[dim]
        ids = self.analysis.elements(ref)
        if ids is None or ids.dim() != ndim or ids.shape[dim] == 1 or size <= 1:
            return size
        lines = np.unique(ids.movedim(dim, -1).reshape(-1, ids.shape[dim]).numpy(), axis=0)
        bases = {}
        rows = []
        for line in lines:
            valid = line >= 0
            r = self.roots[line[valid]]
            units, pos = self.root_unit[r], self.root_pos[r]
            mutable = units >= 0
            const = int((~valid).sum() + (~mutable).sum())
            counts: dict[int, np.ndarray] = {}
            for ui in np.unique(units[mutable]).tolist():
                base = bases.setdefault(ui, self.units[ui].num_channels // self.units[ui].repeats)
                counts[ui] = np.bincount(pos[mutable & (units == ui)], minlength=base)
            rows.append((const, counts))
        linear = [(c, {u: int(v[0]) for u, v in cnt.items()}) for c, cnt in rows
                  if all((v == v[0]).all() for v in cnt.values())]
        if len(linear) == len(rows) and all(x == linear[0] for x in linear):
            return self.spec.side(_form(*linear[0]))
        units = sorted(bases)
        offsets = np.cumsum([1] + [bases[u] for u in units])
        weights = np.zeros((len(rows), offsets[-1]), dtype=np.int64)
        for i, (const, counts) in enumerate(rows):
            weights[i, 0] = const
            for j, ui in enumerate(units):
                if ui in counts:
                    weights[i, offsets[j]:offsets[j + 1]] = counts[ui]
        return self.spec.side(_Special(units, weights), key=(ref.handle, dim))

    def numel_sides(self, ref: TensorRef) -> list:
        return [self.dim_side(ref, d) for d in range(len(ref.shape))]

    # -- the walk -------------------------------------------------------------------------
    def build(self) -> _Spec:
        self.op_layers: set[str] = set()
        replay: list[tuple[str, Node]] = []
        for node in self.graph.nodes:
            if node.kind == "module":
                _module_op(self, node)
            else:
                handler = _fn_layer if function_kind(node.name) is not None else FUNCTION_OPS.get(node.name)
                if handler is None or not handler(self, node):
                    if node.name not in NO_COMPUTE:
                        replay.append((_function_layer(node), node))
        if replay:
            self._replay_fixed(replay)
        self._params()
        return self.spec

    def _replay_fixed(self, nodes: list[tuple[str, Node]]) -> None:
        """Ops without a formula here (einsum, baddbmm, ...): their channels are fixed by the
        analysis, so their cost is fixed; measure it once with FlopCounterMode on meta tensors."""
        values = self.graph.values

        def meta(x):
            if not isinstance(x, TensorRef):
                return x
            if not x.is_float and x.handle in values:
                return values[x.handle].to("meta")
            return torch.empty(x.shape, device="meta")

        with FlopCounterMode(display=False, custom_mapping=REFERENCE_FLOP_FORMULAS) as counter, \
                torch.no_grad():
            for layer, node in nodes:
                before = counter.get_total_flops()
                try:
                    node.target(*tree_map(meta, node.args), **tree_map(meta, node.kwargs))
                except Exception as exc:  # noqa: BLE001 (an op that cannot run on meta)
                    self.spec.notes.append(f"could not measure {node.name!r} in "
                                           f"{node.scope or 'the model'!r}: {exc}")
                    continue
                flops = counter.get_total_flops() - before
                if flops:
                    self.spec.term(layer, False, flops // 2, [])

    def _params(self) -> None:
        """Every parameter once, at the size it has after export."""
        for qualname, param in self.model.named_parameters():
            owner_name, _, attr = qualname.rpartition(".")
            layer = _param_layer(owner_name, self.op_layers, self.modules) or qualname
            factor, sides, div = _param_sizes(self, qualname, owner_name, attr, param)
            if self.spec.full_value(factor, sides, div) != param.numel():
                self.spec.notes.append(f"parameter {qualname!r}: no size rule, counted whole")
                factor, sides, div = param.numel(), [], 1
            self.spec.term(layer, True, factor, sides, div)


def _function_layer(node: Node) -> str:
    return f"{node.scope}.{node.name}" if node.scope else node.name


def _param_layer(owner: str, layers: set[str], modules: dict[str, nn.Module]) -> str | None:
    """The counted layer a parameter belongs to (its owner, or a leaf layer holding it)."""
    parts = owner.split(".") if owner else []
    for i in range(len(parts), 0, -1):
        prefix = ".".join(parts[:i])
        if prefix in layers:
            return prefix
    if kind_of(modules.get(owner)) is not None:
        return owner
    return None


# -- layers: the formulas of their kinds -----------------------------------------------------------
def _geometry(builder: _Builder, name: str, module: nn.Module, kind: LayerKind,
              node: Node | None = None) -> LayerGeometry:
    """What a kind's formula reads: shapes of the call, and the kept sides of the layer."""
    def kept(is_output: bool) -> Side:
        return builder.spec.side(builder.layer_form(name, is_output, kind.channels(module, is_output)))

    def kept_param(attr: str, dim: int, full: int) -> Side:
        return builder.spec.side(builder.layer_form(f"{name}.{attr}" if name else attr, dim, full))

    if node is None:
        return LayerGeometry(name, module, kept_side=kept, param_dim_side=kept_param)
    out = node.output_refs()[0]
    return LayerGeometry(name, module, tuple(r.shape for r in node.input_refs()), out.shape, kept,
                         lambda dim: builder.dim_side(out, dim), kept_param)


def _add_terms(builder: _Builder, layer: str, is_param: bool, terms: list[Term]) -> None:
    builder.spec.layers.setdefault(layer, len(builder.spec.layers))
    for term in terms:
        builder.spec.term(layer, is_param, term.factor, list(term.sides), term.div)


def _module_op(builder: _Builder, node: Node) -> None:
    """A leaf layer: the MACs of its kind's formula (norms have none)."""
    kind = leaf_kind(node.target)
    builder.op_layers.add(node.name)
    _add_terms(builder, node.name, False, kind.macs(_geometry(builder, node.name, node.target, kind, node)))


def _fn_layer(builder: _Builder, node: Node) -> bool:
    """A functional layer call with a module's weight (``F.conv2d(x, conv.weight)``)."""
    kind = function_kind(node.name)
    owner = kind.function_owner(node, builder.graph.modules) or _derived_owner(builder, node, kind)
    if owner is None and node.name == "linear" and node.input_refs()[1].handle in builder.analysis.expert_slices:
        return _fn_expert_linear(builder, node)
    if owner is None and node.name == "linear":  # a module's own weight, not a linear layer's (a router)
        kind = OWNED_LINEAR
        owner = kind.function_owner(node, builder.graph.modules)
    if owner is None and node.name in FUNCTION_OPS:  # an addmm of two computed tensors: a product
        return FUNCTION_OPS[node.name](builder, node)
    if owner is None or owner.attr != "weight":
        return False
    terms = kind.macs(_geometry(builder, owner.name, owner.module, kind, node))
    if terms:  # norms have none: their layer is their parameters'
        builder.op_layers.add(owner.name)
        _add_terms(builder, owner.name, False, terms)
    return True


def _derived_owner(builder: _Builder, node: Node, kind: LayerKind) -> FunctionOwner | None:
    """The layer of a weight computed from stored weights (``derived_weights``); the layers summed
    into it are counted with it (their parameters, not their MACs)."""
    weight = node.args[1] if len(node.args) > 1 else node.kwargs.get("weight")
    derived = derived_weight(builder.graph, weight, kind.module_types + kind.family_types)
    if derived is None:
        return None
    builder.op_layers.update(derived.sources)
    return FunctionOwner(derived.layer, derived.module, "weight")


def _fn_expert_linear(builder: _Builder, node: Node) -> bool:
    """``F.linear(x, experts[e])`` and ``_grouped_mm(x, experts, offs)``: rows * kept_in *
    kept_out, from the tensors' own elements (every row meets one expert's matrix)."""
    refs = node.input_refs()
    if len(refs) < 2 or (node.name == "_grouped_mm" and (len(refs[0].shape), len(refs[1].shape)) != (2, 3)):
        return False
    x, out = node.input_refs()[0], node.output_refs()[0]
    weight = node.input_refs()[1]
    spec = builder.analysis.expert_slices.get(weight.handle)
    layer = spec.param.param if spec is not None else weight.param
    builder.op_layers.add(layer.rpartition(".")[0])
    builder.spec.term(layer, False, 1, [*builder.numel_sides(out), builder.dim_side(x, -1)])
    return True


def _fn_matmul(builder: _Builder, node: Node) -> bool:
    """``a @ b`` as the einsum ``...nk,...km->...nm``."""
    refs = node.input_refs()
    if len(refs) < 2 or len(refs[0].shape) < 2 or len(refs[1].shape) < 2:
        return False
    a, c = refs[:2]
    out = node.output_refs()[0]
    batch = "".join(chr(ord("A") + i) for i in range(len(out.shape) - 2))
    a_letters = batch[len(batch) - (len(a.shape) - 2):] + "nk"
    b_letters = batch[len(batch) - (len(c.shape) - 2):] + "km"
    return _product_of_letters(builder, node, [(a, a_letters), (c, b_letters), (out, batch + "nm")])


def _fn_add_product(builder: _Builder, node: Node) -> bool:
    """``baddbmm``/``addbmm``/``addmm``: the MACs of ``b1 @ b2`` (``addbmm`` sums its batch)."""
    operands = add_product_operands(node)
    out = node.output_refs()[0]
    if operands is None or len(operands[1].shape) != len(operands[2].shape) or len(operands[1].shape) < 2:
        return False
    a, c = operands[1:]
    batch = "".join(chr(ord("A") + i) for i in range(len(a.shape) - 2))
    out_letters = ("" if node.name == "addbmm" else batch) + "nm"
    if len(out.shape) != len(out_letters):
        return False
    return _product_of_letters(builder, node, [(a, batch + "nk"), (c, batch + "km"), (out, out_letters)])


def _fn_einsum(builder: _Builder, node: Node) -> bool:
    """Two-operand einsum: one MAC per combination of all its letters."""
    refs = node.input_refs()
    equation = node.args[0] if node.args and isinstance(node.args[0], str) else None
    if equation is None or len(refs) != 2 or "..." in equation or "->" not in equation:
        return False
    lhs, out_letters = equation.replace(" ", "").split("->")
    a_letters, b_letters = lhs.split(",")
    return _product_of_letters(builder, node, [(refs[0], a_letters), (refs[1], b_letters),
                                         (node.output_refs()[0], out_letters)])


def _product_of_letters(builder: _Builder, node: Node, operands: list[tuple[TensorRef, str]]) -> bool:
    """MACs = the product of every letter's kept size, each read from the first operand whose
    channels vary along it (heads pruned in q give the kept heads, for instance)."""
    sides: dict[str, Any] = {}
    for ref, letters in operands:
        if len(letters) != len(ref.shape):
            return False
        for dim, letter in enumerate(letters):
            known = sides.get(letter, 1)
            if isinstance(known, SideRef):
                continue
            side = builder.dim_side(ref, dim)  # an int (a size that never changes) or a side index
            sides[letter] = side if isinstance(side, SideRef) else max(known, side)  # broadcast dims are 1
    builder.spec.term(_function_layer(node), False, 1, list(sides.values()))
    return True


def _fn_sdpa(builder: _Builder, node: Node) -> bool:
    """scaled_dot_product_attention: Q·Kᵀ = kept(q) * keys, A·V = kept(out) * keys."""
    refs = node.input_refs()
    if len(refs) < 3:
        return False
    q, k = refs[0], refs[1]
    out = node.output_refs()[0]
    keys = builder.dim_side(k, -2)
    layer = _function_layer(node)
    builder.spec.term(layer, False, 1, [*builder.numel_sides(q), keys])
    builder.spec.term(layer, False, 1, [*builder.numel_sides(out), keys])
    return True


FUNCTION_OPS = {
    "matmul": _fn_matmul, "__matmul__": _fn_matmul, "bmm": _fn_matmul, "mm": _fn_matmul,
    "einsum": _fn_einsum, "scaled_dot_product_attention": _fn_sdpa, "_grouped_mm": _fn_expert_linear,
    "baddbmm": _fn_add_product, "addbmm": _fn_add_product, "addmm": _fn_add_product,
}


def _no_compute() -> frozenset[str]:
    norms = {name for kind in KINDS if not kind.has_macs for name in kind.functions}
    return frozenset(rules.PASSTHROUGH | rules.ELEMENTWISE | rules.MOVEMENT | rules.CREATION
                     | rules.REDUCTIONS | set(rules.POOLING) | norms
                     | {"lstm"})  # the fused CPU LSTM kernel shows FlopCounterMode no matmul (GRU, RNN: counted)


NO_COMPUTE = _no_compute()  # ops that FlopCounterMode never counts: not replayed


def _param_sizes(builder: _Builder, qualname: str, owner_name: str, attr: str,
                 param: torch.Tensor) -> tuple[int, list, int]:
    """``(factor, sides, div)`` with ``numel = factor * prod(sides) // div`` after export."""
    shape = tuple(param.shape)
    dims = builder.param_dims.get(qualname)
    if dims and getattr(kind_of(builder.modules.get(owner_name)), "sizes_param_slots", False):
        dims = None  # a layer with a side on a parameter dim (a bilinear layer): its kind's formula
    if dims:  # class tokens, position embeddings, layer scales: pruned along one dim
        sides = [builder.spec.side(builder.layer_form(qualname, d, shape[d])) if d in dims else shape[d]
                 for d in range(len(shape))]
        return 1, sides, 1
    parent_name, _, child = owner_name.rpartition(".")
    parent = builder.modules.get(parent_name) if owner_name else None
    parent_kind = kind_of(parent)
    term = None
    if parent_kind is not None and child in parent_kind.child_params:  # MHA's out_proj
        geometry = _geometry(builder, parent_name, parent, parent_kind)
        term = parent_kind.param_size(geometry, f"{child}.{attr}", shape)
    owner = builder.modules.get(owner_name)
    kind = kind_of(owner)
    if term is None and kind is not None:
        term = kind.param_size(_geometry(builder, owner_name, owner, kind), attr, shape)
    if term is None:
        return param.numel(), [], 1
    return term.factor, list(term.sides), term.div


def build_spec(model: nn.Module, trace: TracedGraph, analysis: ChannelAnalysis, units: list) -> _Spec:
    """The count terms of a traced model, over the kept channels of its mutable ``units``."""
    return _Builder(model, trace, analysis, units).build()
