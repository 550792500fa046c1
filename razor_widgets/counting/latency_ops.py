"""The other ops of the latency table: activations, pooling, adds, ... whose tensors the units shrink.

Every traced call that is not a pruned layer (a leaf module such as ``nn.ReLU`` or ``nn.MaxPool2d``,
or a torch function such as ``add``) and reads a tensor whose sizes follow some units is timed on
random tensors of its kept sizes, all its units at the same fraction, over the kept count of its
first changing dim. Calls that cannot run at other sizes (sizes passed as numbers) are left to the
measured rest. Used by :func:`profile_latency`.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch.utils._pytree import tree_map

from ..layers.dynamic_ops import DynamicChannelMixin
from ..trace.graph import Node, TensorRef
from .latency_cache import entry_key
from .latency_table import LatencyLayer, form_value
from .spec import Form, SideRef, _form

__all__ = ["op_items"]


def _dims(prof: Any, forms: dict[int, Form], ref: TensorRef) -> list[Form] | None:
    """Each dim of a traced tensor as a form (a constant dim: a form without units); None when a
    dim depends on which channels are kept (a special side: not timed)."""
    out = []
    for d in range(len(ref.shape)):
        side = prof.builder.dim_side(ref, d)
        if isinstance(side, SideRef):
            if side.index not in forms:  # dim_side records new forms as it meets them
                forms.update({i: f for f, i in prof.builder.spec.forms.items()})
            if side.index not in forms:
                return None
            out.append(forms[side.index])
        else:
            out.append(_form(int(side)))
    return out


def _scaled(shape: list[int], ref: TensorRef, batch: int) -> list[int]:
    """A traced activation of batch 1 at ``batch`` (parameters and buffers keep their shapes)."""
    if batch != 1 and ref.param is None and shape and ref.shape[0] == 1:
        shape = [batch] + shape[1:]
    return shape


def _op_layer(prof: Any, node: Node, forms: dict[int, Form]) -> tuple[LatencyLayer, dict] | None:
    refs = [r for r in node.input_refs() if r.is_float and r.param is None]
    dims = {}
    for ref in refs:
        d = _dims(prof, forms, ref)
        if d is None:
            return None
        dims[ref.handle] = d
    changing = [f for ref in refs for f in dims[ref.handle] if f.coefs]
    if not changing:
        return None
    units = sorted({u for f in changing for u, _ in f.coefs})
    shapes = [_scaled(list(r.shape), r, prof.batch_size) for r in node.input_refs()]
    others = tree_map(lambda v: None if isinstance(v, TensorRef) else repr(v), (node.args, node.kwargs))
    geometry = entry_key("op", node.name if node.kind != "module" else repr(node.target), shapes, others,
                         prof.backend)
    layer = LatencyLayer(f"{node.scope or 'model'}:{node.name}#{node.index}", geometry, "out", _form(0),
                         changing[0], 1, 0, align=prof.align, extra_units=tuple(units),
                         context_name=node.name if node.kind == "module" else "")
    return layer, dims


def _runner(prof: Any, node: Node, dims: dict[int, list[Form]]) -> Callable[[list[int]], Callable[[], Any]]:
    values = prof.mutator.graph_trace.values
    target = prof.model.get_submodule(node.name) if node.kind == "module" else node.target

    def build(kept: list[int]) -> Callable[[], Any]:
        def tensor(ref: Any) -> Any:
            if not isinstance(ref, TensorRef):
                return ref
            if ref.handle in dims:
                shape = _scaled([form_value(f, kept) for f in dims[ref.handle]], ref, prof.batch_size)
                return torch.randn(shape, device=prof.device, dtype=prof.dtype)
            if ref.param is not None:
                return prof.model.get_parameter(ref.param) if ref.is_float else values[ref.handle]
            if ref.handle in values:
                return values[ref.handle].to(prof.device)
            return torch.zeros(_scaled(list(ref.shape), ref, prof.batch_size), device=prof.device)
        args, kwargs = tree_map(tensor, (node.args, node.kwargs))
        with torch.no_grad():
            target(*args, **kwargs)  # raises here when the call cannot run at these sizes
        return lambda: target(*args, **kwargs)
    return build


def op_items(prof: Any, skip: set[str]) -> list[tuple[LatencyLayer, Callable]]:
    """The traced calls to time besides the pruned layers (``skip``), with their builders."""
    if prof.batch_size != 1 and any(r.shape[:1] != (1,) for r in prof.mutator.graph_trace.inputs):
        return []  # a trace at another batch: which dim is the batch is not known
    forms = {i: f for f, i in prof.builder.spec.forms.items()}
    items = []
    for node in prof.mutator.graph_trace.nodes:
        if node.kind == "module":
            module = prof.model.get_submodule(node.name) if node.name else None
            if node.name in skip or isinstance(module, DynamicChannelMixin) or module is None:
                continue
        found = _op_layer(prof, node, forms)
        if found is None:
            continue
        layer, dims = found
        build = _runner(prof, node, dims)
        try:
            prof.set_kept(layer.units, 0.5)
            build(prof.kept())
        except Exception:  # noqa: BLE001 (sizes passed as numbers, index tensors: left to the rest)
            continue
        finally:
            prof.set_kept(layer.units, 1.0)
        items.append((layer, build))
    return items
