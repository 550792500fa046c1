"""The geometry of a traced model, turned into count formulas over the units' kept channels.

After ``prepare_from_supernet`` the trace holds every op with its tensor shapes, and the
channel analysis holds the channel elements of each tensor. From these :func:`build_spec`
records once, per layer, the channel-independent geometry (output positions and kernel area
of a conv, rows of a linear, sequence lengths of an attention) and a small formula (the
table of ``_conv_macs``, ``_linear_macs``, ``_mha_macs``, ``_fn_*`` below) that multiplies it
with the kept channel counts of the layer's sides. A side's kept count is linear in the
units' kept channels per block, ``const + sum(coef * kept[unit])``; a tensor dim whose kept
size depends on *which* channels are kept (a dim holding one position of every head, say)
is a "special" side evaluated from the unit masks. Every count is then a sum of terms
``factor * side_a * side_b * ... // div``; ``live_counter.py`` evaluates them.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils._pytree import tree_map
from torch.utils.flop_counter import FlopCounterMode

from .resources import REFERENCE_FLOP_FORMULAS
from .tracing import Node, TensorRef

# -- the analytic counter: linear forms, special sides and terms ---------------------------------
Form = tuple[int, tuple[tuple[int, int], ...]]  # (const, ((unit index, coef), ...))


def _form(const: int, coefs: dict[int, int] | None = None) -> Form:
    return int(const), tuple(sorted((u, int(c)) for u, c in (coefs or {}).items() if c))


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
        self.special_defs: list[tuple[int, _Special]] = []
        self.terms: list[tuple[str, bool, int, tuple[int, ...], int]] = []
        self.layers: dict[str, int] = {}
        self.notes: list[str] = []

    def side(self, form: Form | _Special | int, key: Any = None) -> int | tuple[int]:
        """An ``int`` for a constant side, else ``(side index,)``."""
        if isinstance(form, int):
            return form
        if isinstance(form, _Special):
            if key not in self.specials:
                idx = self.specials[key] = len(self.forms) + len(self.special_defs)
                self.special_defs.append((idx, form))
                self.full[idx] = int(form.weights.sum(axis=1).max())
            return (self.specials[key],)
        if not form[1]:
            return form[0]
        if form not in self.forms:
            idx = self.forms[form] = len(self.forms) + len(self.special_defs)
            self.full[idx] = form[0] + sum(c * self.bases[u] for u, c in form[1])
        return (self.forms[form],)

    def full_value(self, factor: int, sides: list, div: int) -> int:
        for side in sides:
            factor *= self.full[side[0]] if isinstance(side, tuple) else int(side)
        return factor // div

    def term(self, layer: str, is_param: bool, factor: int, sides: list, div: int = 1) -> None:
        """Add ``factor * prod(sides) // div`` to ``layer``'s params or MACs."""
        self.layers.setdefault(layer, len(self.layers))
        idx = []
        for side in sides:
            if isinstance(side, tuple):
                idx.append(side[0])
            else:
                factor *= int(side)
        if div > 1 and not idx:
            factor, div = factor // div, 1
        self.terms.append((layer, is_param, int(factor), tuple(idx), int(div)))


class _Builder:
    """Reads the trace, the analysis and the units once and records sides and terms."""

    def __init__(self, mutator: Any) -> None:
        self.mutator = mutator
        self.model: nn.Module = mutator.model
        self.graph = mutator.graph_trace
        self.ctx = mutator.analysis
        self.modules = dict(self.model.named_modules())
        self.units = [u for u in mutator.units if u.is_mutable]
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
        roots = self.ctx.space.roots
        self.roots = roots
        self.root_unit = np.full(len(roots), -1, dtype=np.int64)
        self.root_pos = np.zeros(len(roots), dtype=np.int64)
        slots = {}
        for slot in self.ctx.slots:
            slots.setdefault((slot.name, slot.is_output, slot.param_dim), slot)
        for ui, unit in enumerate(self.units):
            base = unit.num_channels // unit.repeats
            for ch in unit.channels:
                slot = slots.get((ch.name, ch.is_output_channel, ch.param_dim))
                if slot is None:
                    continue
                ids = slot.ids[ch.start:ch.end].numpy()
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
        ids = self.ctx.ids.get(ref.handle)
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
                handler = FUNCTION_OPS.get(node.name)
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
    module = modules.get(owner)
    if module is not None and isinstance(module, _LAYER_TYPES):
        return owner
    return None


# -- the formula table --------------------------------------------------------------------------
_NORMS = (nn.modules.batchnorm._NormBase, nn.LayerNorm, nn.GroupNorm)
_LAYER_TYPES = (nn.modules.conv._ConvNd, nn.Linear, nn.MultiheadAttention, *_NORMS)


def _conv_forms(b: _Builder, name: str, m: nn.modules.conv._ConvNd) -> tuple[Form, Form, int, bool]:
    f_in = b.layer_form(name, False, m.in_channels)
    f_out = b.layer_form(name, True, m.out_channels)
    depthwise = m.groups > 1 and m.groups == m.in_channels == m.out_channels
    return f_in, f_out, m.groups, depthwise


def _conv_macs(b: _Builder, layer: str, m: nn.modules.conv._ConvNd, out: TensorRef) -> None:
    """conv: out positions * kept_out * kept_in / groups * kernel area (depthwise: groups
    follow the kept channels, so kept_in / groups = 1)."""
    f_in, f_out, groups, depthwise = _conv_forms(b, layer, m)
    positions = math.prod(out.shape) // m.out_channels
    kernel = math.prod(m.kernel_size)
    sides = [b.spec.side(f_out)] if depthwise else [b.spec.side(f_out), b.spec.side(f_in)]
    b.spec.term(layer, False, positions * kernel, sides, 1 if depthwise else groups)


def _linear_macs(b: _Builder, layer: str, in_f: int, out_f: int, out: TensorRef) -> None:
    """linear: rows (every leading dim, at its kept size: the rows of a token-mixing linear hold
    channels) * kept_in * kept_out."""
    rows = [b.dim_side(out, d) for d in range(len(out.shape) - 1)]
    sides = [b.spec.side(b.layer_form(layer, False, in_f)),
             b.spec.side(b.layer_form(layer, True, out_f))]
    b.spec.term(layer, False, 1, rows + sides)


def _mha_macs(b: _Builder, node: Node) -> None:
    """nn.MultiheadAttention: q/k/v and output projections plus Q·Kᵀ and A·V, all inside
    the formula (the layer reads ``out_proj.weight`` directly, so no hook would see it)."""
    m: nn.MultiheadAttention = node.target
    q, k = node.input_refs()[:2]
    if len(q.shape) == 2:
        n, length, source = 1, q.shape[0], k.shape[0]
    elif m.batch_first:
        n, length, source = q.shape[0], q.shape[1], k.shape[1]
    else:
        n, length, source = q.shape[1], q.shape[0], k.shape[0]
    embed = b.spec.side(b.layer_form(node.name, True, m.embed_dim))
    keys = source + (m.bias_k is not None) + bool(m.add_zero_attn)
    spec, layer = b.spec, node.name
    if m._qkv_same_embed_dim:
        spec.term(layer, False, (2 * length + 2 * source) * n, [embed, embed])  # q, k, v, out
    else:
        spec.term(layer, False, 2 * length * n, [embed, embed])  # q and out projections
        spec.term(layer, False, source * n * (m.kdim + m.vdim), [embed])
    spec.term(layer, False, 2 * n * length * keys, [embed])  # Q·Kᵀ and A·V


def _module_op(b: _Builder, node: Node) -> None:
    m, name = node.target, node.name
    out = node.output_refs()[0]
    b.op_layers.add(name)
    if isinstance(m, nn.modules.conv._ConvNd) and not m.transposed:
        _conv_macs(b, name, m, out)
    elif isinstance(m, nn.Linear):
        _linear_macs(b, name, m.in_features, m.out_features, out)
    elif isinstance(m, nn.MultiheadAttention):
        _mha_macs(b, node)
    else:  # norms: parameters only
        b.spec.layers.setdefault(name, len(b.spec.layers))


def _weight_ref(node: Node, index: int, key: str) -> TensorRef | None:
    value = node.args[index] if len(node.args) > index else node.kwargs.get(key)
    return value if isinstance(value, TensorRef) else None


def _owner(b: _Builder, ref: TensorRef | None, kind: type) -> tuple[str, nn.Module] | None:
    if ref is None or ref.param is None:
        return None
    name, _, attr = ref.param.rpartition(".")
    module = b.graph.modules.get(name)
    return (name, module) if isinstance(module, kind) and attr == "weight" else None


def _fn_linear(b: _Builder, node: Node) -> bool:
    weight = _weight_ref(node, 1, "weight")
    owner = _owner(b, weight, nn.Linear)
    if owner is None:
        return False
    b.op_layers.add(owner[0])
    _linear_macs(b, owner[0], weight.shape[1], weight.shape[0], node.output_refs()[0])
    return True


def _fn_conv(b: _Builder, node: Node) -> bool:
    weight = _weight_ref(node, 1, "weight")
    owner = _owner(b, weight, nn.modules.conv._ConvNd)
    if owner is None or owner[1].transposed:
        return False
    b.op_layers.add(owner[0])
    _conv_macs(b, owner[0], owner[1], node.output_refs()[0])
    return True


def _fn_matmul(b: _Builder, node: Node) -> bool:
    """``a @ b`` as the einsum ``...nk,...km->...nm``."""
    refs = node.input_refs()
    if len(refs) < 2 or len(refs[0].shape) < 2 or len(refs[1].shape) < 2:
        return False
    a, c = refs[:2]
    out = node.output_refs()[0]
    batch = "".join(chr(ord("A") + i) for i in range(len(out.shape) - 2))
    a_letters = batch[len(batch) - (len(a.shape) - 2):] + "nk"
    b_letters = batch[len(batch) - (len(c.shape) - 2):] + "km"
    return _product_of_letters(b, node, [(a, a_letters), (c, b_letters), (out, batch + "nm")])


def _fn_einsum(b: _Builder, node: Node) -> bool:
    """Two-operand einsum: one MAC per combination of all its letters."""
    refs = node.input_refs()
    equation = node.args[0] if node.args and isinstance(node.args[0], str) else None
    if equation is None or len(refs) != 2 or "..." in equation or "->" not in equation:
        return False
    lhs, out_letters = equation.replace(" ", "").split("->")
    a_letters, b_letters = lhs.split(",")
    return _product_of_letters(b, node, [(refs[0], a_letters), (refs[1], b_letters),
                                         (node.output_refs()[0], out_letters)])


def _product_of_letters(b: _Builder, node: Node, operands: list[tuple[TensorRef, str]]) -> bool:
    """MACs = the product of every letter's kept size, each read from the first operand whose
    channels vary along it (heads pruned in q give the kept heads, for instance)."""
    sides: dict[str, Any] = {}
    for ref, letters in operands:
        if len(letters) != len(ref.shape):
            return False
        for dim, letter in enumerate(letters):
            known = sides.get(letter, 1)
            if isinstance(known, tuple):
                continue
            side = b.dim_side(ref, dim)  # an int (a size that never changes) or a side index
            sides[letter] = side if isinstance(side, tuple) else max(known, side)  # broadcast dims are 1
    b.spec.term(_function_layer(node), False, 1, list(sides.values()))
    return True


def _fn_sdpa(b: _Builder, node: Node) -> bool:
    """scaled_dot_product_attention: Q·Kᵀ = kept(q) * keys, A·V = kept(out) * keys."""
    refs = node.input_refs()
    if len(refs) < 3:
        return False
    q, k = refs[0], refs[1]
    out = node.output_refs()[0]
    keys = b.dim_side(k, -2)
    layer = _function_layer(node)
    b.spec.term(layer, False, 1, [*b.numel_sides(q), keys])
    b.spec.term(layer, False, 1, [*b.numel_sides(out), keys])
    return True


FUNCTION_OPS = {
    "linear": _fn_linear, "conv1d": _fn_conv, "conv2d": _fn_conv, "conv3d": _fn_conv,
    "matmul": _fn_matmul, "__matmul__": _fn_matmul, "bmm": _fn_matmul, "mm": _fn_matmul,
    "einsum": _fn_einsum, "scaled_dot_product_attention": _fn_sdpa,
}


def _no_compute() -> frozenset[str]:
    from . import rules

    return frozenset(rules.PASSTHROUGH | rules.ELEMENTWISE | rules.MOVEMENT | rules.CREATION
                     | rules.REDUCTIONS | set(rules.POOLING) | {"layer_norm", "group_norm",
                                                                "batch_norm", "instance_norm"})


NO_COMPUTE = _no_compute()  # ops that FlopCounterMode never counts: not replayed


def _param_sizes(b: _Builder, qualname: str, owner_name: str, attr: str,
                 param: torch.Tensor) -> tuple[int, list, int]:
    """``(factor, sides, div)`` with ``numel = factor * prod(sides) // div`` after export."""
    spec = b.spec
    shape = tuple(param.shape)
    dims = b.param_dims.get(qualname)
    if dims:  # class tokens, position embeddings, layer scales: pruned along one dim
        sides = [spec.side(b.layer_form(qualname, d, shape[d])) if d in dims else shape[d]
                 for d in range(len(shape))]
        return 1, sides, 1
    owner = b.modules.get(owner_name)
    parent_name = owner_name.rpartition(".")[0]
    parent = b.modules.get(parent_name) if owner_name else None
    if isinstance(parent, nn.MultiheadAttention) and owner is parent.out_proj:
        owner, owner_name = parent, parent_name
        embed = spec.side(b.layer_form(owner_name, True, owner.embed_dim))
        return 1, ([embed, embed] if attr == "weight" else [embed]), 1
    if isinstance(owner, nn.modules.conv._ConvNd) and not owner.transposed:
        f_in, f_out, groups, depthwise = _conv_forms(b, owner_name, owner)
        if attr == "bias":
            return 1, [spec.side(f_out)], 1
        kernel = math.prod(shape[2:])
        if depthwise:
            return kernel, [spec.side(f_out)], 1
        return kernel, [spec.side(f_out), spec.side(f_in)], groups
    if isinstance(owner, nn.Linear):
        f_out = spec.side(b.layer_form(owner_name, True, owner.out_features))
        if attr == "bias":
            return 1, [f_out], 1
        return 1, [f_out, spec.side(b.layer_form(owner_name, False, owner.in_features))], 1
    if isinstance(owner, _NORMS) and param.dim() == 1:
        return 1, [spec.side(b.layer_form(owner_name, True, shape[0]))], 1
    if isinstance(owner, nn.MultiheadAttention) and attr in ("in_proj_weight", "in_proj_bias"):
        embed = spec.side(b.layer_form(owner_name, True, owner.embed_dim))
        return 3, ([embed, embed] if attr == "in_proj_weight" else [embed]), 1
    return param.numel(), [], 1


def build_spec(mutator: Any) -> tuple[_Spec, list]:
    """The count terms of a prepared mutator's model, and the mutable units they read."""
    builder = _Builder(mutator)
    return builder.build(), builder.units
