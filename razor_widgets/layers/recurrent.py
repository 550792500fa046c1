"""Recurrent layers (``nn.RNN``, ``nn.LSTM``, ``nn.GRU`` and the cells ``nn.RNNCell``,
``nn.LSTMCell``, ``nn.GRUCell``): the hidden size is one unit for every layer and direction.

Channels: the input's last dim is read (the input size); the output's last dim is the hidden
size (``proj_size`` with projections; twice, once per direction, when bidirectional), the states'
last dim too; an LSTM's cell size under projections is a unit of its own (a parameter slot:
``weight_hr_l0``'s columns, the same positions in every layer and direction). The gates keep the
same hidden positions. A pruned layer runs as its export runs: on the kept inputs with the kept
weights, its outputs put back at their places (zeros at the pruned ones). MACs: every step's
input and hidden matmuls (docs/counting.md).
"""
from __future__ import annotations

import math
from collections import OrderedDict
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from ..registry import MODELS
from ..trace.graph import Node, TensorRef
from .base import LayerGeometry, LayerKind, Term, raw_param
from .dynamic_ops import DynamicChannelMixin, index_of

if TYPE_CHECKING:
    from ..channels.context import AnalysisContext

GATES = {"RNN_TANH": 1, "RNN_RELU": 1, "LSTM": 4, "GRU": 3}
CELLS = (nn.RNNCell, nn.LSTMCell, nn.GRUCell)
CELL_GATES = {nn.RNNCell: 1, nn.LSTMCell: 4, nn.GRUCell: 3}
CELL_SLOT = "weight_hr_l0"  # an LSTM with projections: its cell positions are this weight's columns


def gates(module: nn.Module) -> int:
    """Gate blocks in the rows of the weights: 1 (RNN), 3 (GRU), 4 (LSTM)."""
    if isinstance(module, CELLS):
        return next(g for t, g in CELL_GATES.items() if isinstance(module, t))
    return GATES[module.mode]


def directions(module: nn.Module) -> int:
    """2 for a bidirectional layer, else 1."""
    return 2 if getattr(module, "bidirectional", False) else 1


def out_size(module: nn.Module) -> int:
    """The size of the output's last dim per direction: ``proj_size`` or ``hidden_size``."""
    return getattr(module, "proj_size", 0) or module.hidden_size


def _states(module: nn.Module, node: Node) -> tuple[list[TensorRef], list[TensorRef]]:
    """The initial states given (h0 and c0) and the states returned (h_n and c_n)."""
    hx = node.args[1] if len(node.args) > 1 else node.kwargs.get("hx")
    given = [r for r in (hx if isinstance(hx, (tuple, list)) else [hx]) if isinstance(r, TensorRef)]
    outs = node.output_refs()
    return given, outs[0 if isinstance(module, CELLS) else 1:]


def recurrent_rule(ctx: AnalysisContext, node: Node) -> None:
    """Input channels on the input's last dim; the hidden size on the outputs' and states' last dims."""
    m, x = node.target, node.args[0] if node.args else node.kwargs.get("input")
    if not isinstance(x, TensorRef):  # a PackedSequence
        return ctx.unknown(node, detail="a packed sequence: its data holds no channel dim the rule reads")
    ids_in = ctx.read(x, -1)
    ids_out = ctx.fresh_layer_output(node.name, out_size(m))
    ctx.slot(node.name, False, ids_in)
    ctx.slot(node.name, True, ids_out)
    proj = getattr(m, "proj_size", 0)
    cell = ctx.fresh_layer_output(f"{node.name}.{CELL_SLOT}", m.hidden_size) if proj else ids_out
    if proj:  # the cell size: read and written inside the layer (and its cell state)
        ctx.slot(f"{node.name}.{CELL_SLOT}", True, cell, param_dim=1)
        ctx.layer_params.add(f"{node.name}.{CELL_SLOT}")
    if not isinstance(m, CELLS):
        ctx.write(node.output_refs()[0], -1, ids_out.repeat(directions(m)))
    given, returned = _states(m, node)
    for ref, ids in zip(given, (ids_out, cell)):
        ctx.space.union(ctx.read(ref, -1), ids)
    for ref, ids in zip(returned, (ids_out, cell)):
        ctx.write(ref, -1, ids)
    return None


def _param_kind(attr: str) -> tuple[str, int]:
    """(``weight_ih`` / ``weight_hh`` / ``weight_hr`` / ``bias_ih`` / ``bias_hh``, layer index)."""
    _, _, rest = attr.partition("_l")
    parts = attr.split("_")
    return "_".join(parts[:2]), int(rest.split("_")[0]) if rest else 0


class RecurrentKind(LayerKind):
    """The layer kind of ``nn.RNN``, ``nn.LSTM``, ``nn.GRU`` and the RNN cells."""

    name = "recurrent"
    module_types = (nn.RNN, nn.LSTM, nn.GRU, *CELLS)
    masks_param_slots = True  # the cell size of an LSTM with projections (``CELL_SLOT``)
    sizes_param_slots = True

    def module_rule(self, ctx: AnalysisContext, node: Node) -> None:
        """:func:`recurrent_rule`."""
        recurrent_rule(ctx, node)

    def channels(self, module: nn.Module, is_output: bool) -> int:
        """The hidden size (``proj_size`` with projections) or the input size."""
        return int(out_size(module) if is_output else module.input_size)

    def _sides(self, geo: LayerGeometry) -> tuple[Any, Any]:
        """(kept hidden-cell side, kept output side): with projections, the cell side is the
        parameter slot ``CELL_SLOT``."""
        m = geo.module
        proj = getattr(m, "proj_size", 0)
        return (geo.kept_param_dim(CELL_SLOT, 1, m.hidden_size) if proj else geo.kept(True)), geo.kept(True)

    def param_size(self, param: LayerGeometry, attr: str, shape: tuple[int, ...]) -> Term | None:
        """Rows: the gates times the kept hidden size; columns: the kept inputs (layer 0), the kept
        outputs of both directions (later layers) or the kept outputs (hidden and projection weights)."""
        m, (kind, layer) = param.module, _param_kind(attr)
        cell, out = self._sides(param)
        g = gates(m)
        if kind.startswith("bias"):
            return Term(g, (cell,))
        if kind == "weight_hr":
            return Term(1, (out, cell))
        if kind == "weight_hh":
            return Term(g, (cell, out))
        if layer == 0:
            return Term(g, (cell, param.kept(False)))
        return Term(g * directions(m), (cell, out))

    def macs(self, call: LayerGeometry) -> list[Term]:
        """Every step of every layer and direction: the input, hidden (and projection) matmuls."""
        m = call.module
        steps = math.prod(call.input_shapes[0][:-1]) if call.input_shapes else 1
        cell, out = self._sides(call)
        g, d = gates(m), directions(m)
        layers = getattr(m, "num_layers", 1)
        terms = [Term(steps * d * g, (cell, call.kept(False))), Term(steps * d * g * layers, (cell, out))]
        if layers > 1:
            terms.append(Term(steps * d * g * d * (layers - 1), (cell, out)))
        if getattr(m, "proj_size", 0):
            terms.append(Term(steps * d * layers, (out, cell)))
        return terms

    def output_channel_weights(self, module: nn.Module) -> dict[str, torch.Tensor]:
        """The input and hidden weights and biases with the hidden position first (gates after it)."""
        if getattr(module, "proj_size", 0):
            return {n: raw_param(module, n) for n in _names(module) if n.startswith("weight_hr")}
        g, h = gates(module), module.hidden_size
        return {n: raw_param(module, n).reshape(g, h, -1).transpose(0, 1) for n in _names(module)
                if not n.startswith("weight_hr")}

    def input_channel_weights(self, module: nn.Module) -> dict[str, torch.Tensor]:
        """The first layer's input weights, their columns first."""
        return {n: raw_param(module, n).t() for n in _names(module)
                if n.startswith("weight_ih") and _param_kind(n)[1] == 0}

    def output_channel_dim(self, module: nn.Module, output: Any) -> int | None:
        """The last dim of the output (one direction after the other when bidirectional)."""
        return -1 if isinstance(output, torch.Tensor) and directions(module) == 1 else None


def _names(module: nn.Module) -> list[str]:
    return [n for n, p in module.__dict__["_parameters"].items() if p is not None]


# -- the dynamic op -------------------------------------------------------------------------------
class DynamicRecurrentMixin(DynamicChannelMixin):
    """A recurrent layer whose input and hidden channels follow masks: with a partial mask it runs
    its export (the kept weights, on the kept inputs) and puts the outputs back at their places."""

    def _channel_counts(self) -> dict[str, int]:
        return {"in_channels": self.input_size, "out_channels": out_size(self)}

    def _init_mutable_attrs(self, *args: Any) -> None:
        super()._init_mutable_attrs(*args)
        self.__dict__["_cell_channels"] = []

    def add_param_channel(self, attr: str, dim: int, unit: Any, channel: Any) -> None:
        """Let ``channel`` of ``unit`` mask the cell positions (``CELL_SLOT``'s columns)."""
        if (attr, dim) != (CELL_SLOT, 1) or not getattr(self, "proj_size", 0):
            raise ValueError(f"a recurrent layer's parameter slot is {CELL_SLOT} dim 1, not {attr!r} dim {dim}")
        self.__dict__["_cell_channels"].append((unit, channel))

    def cell_mask(self) -> torch.Tensor | None:
        """The kept cell positions of an LSTM with projections, or None while all are kept."""
        channels = self.__dict__.get("_cell_channels") or []
        mask = torch.ones(self.hidden_size, dtype=torch.bool)
        for unit, channel in channels:
            mask[channel.start:channel.end] = unit.channel_mask(channel)
        return None if bool(mask.all()) else mask

    def _kept(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(kept inputs, kept outputs, kept cell positions)."""
        kept_in = index_of(self.mask("in_channels"), self.input_size)
        kept_out = index_of(self.mask("out_channels"), out_size(self))
        cell = index_of(self.cell_mask(), self.hidden_size) if getattr(self, "proj_size", 0) else kept_out
        return kept_in, kept_out, cell

    def _kept_weights(self) -> dict[str, torch.Tensor | None]:
        """Every parameter at its kept rows (gate blocks of the kept cell positions) and columns."""
        kept_in, kept_out, cell = self._kept()
        g, h, d = gates(self), self.hidden_size, directions(self)
        rows = torch.cat([cell + k * h for k in range(g)])
        upper = torch.cat([kept_out + k * out_size(self) for k in range(d)])
        kept: dict[str, torch.Tensor | None] = {}
        for name, p in self._parameters.items():
            if p is None:
                kept[name] = None
                continue
            kind, layer = _param_kind(name)
            if kind == "weight_hr":
                kept[name] = p.index_select(0, kept_out.to(p.device)).index_select(1, cell.to(p.device))
                continue
            t = p.index_select(0, rows.to(p.device))
            if kind == "weight_ih":
                t = t.index_select(1, (kept_in if layer == 0 else upper).to(p.device))
            elif kind == "weight_hh":
                t = t.index_select(1, kept_out.to(p.device))
            kept[name] = t
        return kept

    def _sizes(self) -> dict[str, int]:
        kept_in, kept_out, cell = self._kept()
        sizes = {"input_size": len(kept_in), "hidden_size": len(cell)}
        if getattr(self, "proj_size", 0):
            sizes["proj_size"] = len(kept_out)
        return sizes

    def _runner(self) -> nn.Module:
        """A plain layer of the static class over the kept weights (gradients flow to the stored ones)."""
        cls = self.static_class
        new = cls.__new__(cls)
        new.__dict__.update(self.__dict__)
        for key in ("_parameters", "_buffers", "_modules", "_forward_hooks", "_forward_pre_hooks"):
            new.__dict__[key] = OrderedDict(self.__dict__[key])
        new._forward_hooks.clear()
        new._forward_pre_hooks.clear()
        new._modules.pop("mutable_attrs", None)
        new.__dict__["_parameters"] = OrderedDict(self._kept_weights())
        new.__dict__.update(self._sizes())
        if hasattr(new, "_init_flat_weights"):
            new._init_flat_weights()
        return new

    def forward(self, input: Any, hx: Any = None) -> Any:  # noqa: A002 (torch's argument name)
        """The original forward at full masks; else the kept layer's, its outputs put back."""
        if self.mask("in_channels") is None and self.mask("out_channels") is None and self.cell_mask() is None:
            return super().forward(input, hx)
        kept_in, kept_out, cell = self._kept()
        x = input.index_select(-1, kept_in.to(input.device))
        if hx is not None:
            hx = _map_states(hx, lambda t, i: t.index_select(-1, (kept_out, cell)[i].to(t.device)))
        out = self._runner()(x, hx)
        size = out_size(self)
        if isinstance(self, CELLS):
            return _map_states(out, lambda t, i: _put_back(t, (kept_out, cell)[i], (size, self.hidden_size)[i]))
        output, states = out
        index = torch.cat([kept_out + k * size for k in range(directions(self))])
        output = _put_back(output, index, size * directions(self))
        return output, _map_states(states, lambda t, i: _put_back(t, (kept_out, cell)[i],
                                                                 (size, self.hidden_size)[i]))

    def to_static_op(self) -> nn.Module:
        """A plain layer of the kept input, hidden (cell) and projection sizes."""
        new = self._static_copy(self._kept_weights(), {}, **self._sizes())
        new.__dict__.pop("_cell_channels", None)
        if hasattr(new, "_init_flat_weights"):
            new._init_flat_weights()
        return new


def _map_states(states: Any, fn: Any) -> Any:
    if isinstance(states, (tuple, list)):
        return type(states)(fn(t, i) for i, t in enumerate(states))
    return fn(states, 0)


def _put_back(t: torch.Tensor, index: torch.Tensor, size: int) -> torch.Tensor:
    """``t``'s last dim placed at ``index`` of a last dim of ``size``, zeros elsewhere."""
    full = t.new_zeros(*t.shape[:-1], size)
    return full.index_copy(-1, index.to(t.device), t)


def _dynamic(static: type) -> type:
    cls = type(f"Dynamic{static.__name__}", (DynamicRecurrentMixin, static),
               {"static_class": static, "__module__": __name__,
                "__doc__": f"``nn.{static.__name__}`` with channel masks."})
    MODELS.register_module(module=cls)
    return cls


DynamicRNN, DynamicLSTM, DynamicGRU = _dynamic(nn.RNN), _dynamic(nn.LSTM), _dynamic(nn.GRU)
DynamicRNNCell, DynamicLSTMCell, DynamicGRUCell = _dynamic(nn.RNNCell), _dynamic(nn.LSTMCell), _dynamic(nn.GRUCell)
RecurrentKind.dynamic_ops = {nn.RNN: DynamicRNN, nn.LSTM: DynamicLSTM, nn.GRU: DynamicGRU, nn.RNNCell: DynamicRNNCell,
                             nn.LSTMCell: DynamicLSTMCell, nn.GRUCell: DynamicGRUCell}
RECURRENT = RecurrentKind()
