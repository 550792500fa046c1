"""Finding the first layer whose output differs between the masked model and its export, the
units that touch it, and whether the difference was born in a selection (top-k, NMS) outside
the layers (the policy: docs/export-check.md)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from ..trace.structured_values import structural_leaves
from .model_runs import call_model
from .output_comparison import compare_leaf, structure_kind


@dataclass
class _Recording:
    """A forward's module inputs and outputs by (name, call), in the order the modules returned,
    the modules still running (innermost last) and the kept channels of the masked tensors.

    Inputs and outputs are kept as references, not copies: both models are compared after both
    forwards, so an in-place op (``ReLU(inplace=True)``) has changed the same tensors on both sides."""

    ranges: dict[str, list[tuple[int, int, torch.Tensor]]] | None = None
    order: list[tuple[str, int]] = field(default_factory=list)
    inputs: dict[tuple[str, int], Any] = field(default_factory=dict)
    outputs: dict[tuple[str, int], Any] = field(default_factory=dict)
    kept: dict[int, list[tuple[int, int, torch.Tensor]]] = field(default_factory=dict)  # id(tensor) -> ranges
    running: list[str] = field(default_factory=list)
    calls: dict[str, int] = field(default_factory=dict)
    selecting: set[str] = field(default_factory=set)  # modules whose own code ran a selection op

    def hooks(self, model: nn.Module) -> list:
        handles = []
        for name, module in model.named_modules():
            handles.append(module.register_forward_pre_hook(self._enter(name), with_kwargs=True))
            handles.append(module.register_forward_hook(self._leave(name, module)))
        return handles

    def _enter(self, name: str):
        def run(_module, args, kwargs):
            self.running.append(name)
            self.inputs[(name, self.calls.get(name, 0))] = (args, kwargs)
        return run

    def _leave(self, name: str, module: nn.Module):
        def run(_module, args, out):
            if self.running and self.running[-1] == name:
                self.running.pop()
            key = (name, self.calls.setdefault(name, 0))
            self.calls[name] += 1
            self.order.append(key)
            self.outputs[key] = out
            if self.ranges is not None and isinstance(out, torch.Tensor) and id(out) not in self.kept:
                if name in self.ranges:
                    self.kept[id(out)] = self.ranges[name]
                elif _shape_preserving(module, args, out) and id(args[0]) in self.kept:
                    self.kept[id(out)] = self.kept[id(args[0])]  # activations, dropout: channels pass
        return run

    def run(self, model: nn.Module, inputs: Any) -> BaseException | None:
        """Forward ``model`` with the hooks on; the exception it raised, if any."""
        handles = self.hooks(model)
        try:
            with _SelectionWatch(self):
                call_model(model, inputs)
        except Exception as error:
            return error
        finally:
            for handle in handles:
                handle.remove()
        return None


# ops whose result jumps when a value crosses another: what turns float rounding into other picks
SELECTION_OPS = frozenset({"topk", "sort", "argsort", "msort", "argmax", "argmin", "kthvalue", "mode", "median",
                           "nonzero", "where", "masked_select", "unique", "searchsorted", "bucketize", "nms",
                           "gt", "lt", "ge", "le", "greater", "less", "greater_equal", "less_equal",
                           "__gt__", "__lt__", "__ge__", "__le__"})


class _SelectionWatch(TorchFunctionMode):
    """Notes which modules run a selection op (top-k, sort, argmax, a threshold, ``max`` over a
    dim) in their own code, outside their submodules."""

    def __init__(self, recording: _Recording) -> None:
        super().__init__()
        self.recording = recording

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = getattr(func, "__name__", "").split(".")[-1]
        picks = name in SELECTION_OPS or (name in ("max", "min") and (len(args) > 1 or "dim" in kwargs)
                                          and not isinstance(args[1] if len(args) > 1 else None, torch.Tensor))
        if picks and self.recording.running:
            self.recording.selecting.add(self.recording.running[-1])
        return func(*args, **kwargs)


def _out_ranges(mutator: Any) -> dict[str, list[tuple[int, int, torch.Tensor]]]:
    """For each layer of a mutable unit: (start, end, kept mask) of its output channels."""
    ranges: dict[str, list[tuple[int, int, torch.Tensor]]] = {}
    for unit in mutator.mutable_units:
        for channel in unit.output_related:
            if channel.param_dim is None:
                ranges.setdefault(channel.name, []).append((channel.start, channel.end, unit.channel_mask(channel)))
    return ranges


def _shape_preserving(module: nn.Module, args: tuple, out: torch.Tensor) -> bool:
    return (not any(True for _ in module.parameters()) and bool(args) and isinstance(args[0], torch.Tensor)
            and args[0].shape == out.shape)


@dataclass
class LayerDifference:
    """What the hooks found: ``layer``, the first module whose output differs in a way the
    export is to blame for (or in which the export raised; None: no module blamed), ``detail``
    what differs there, ``selection`` the first module whose output differs only after
    data-dependent selection (its inputs match and it owns no weights), ``same_modules`` whether
    both models ran the same modules in the same order."""

    layer: str | None = None
    detail: str = ""
    selection: str | None = None
    same_modules: bool = True


def locate_difference(mutator: Any, model: nn.Module, static: nn.Module, inputs: Any, rtol: float,
                      rerun: Any) -> LayerDifference:
    """The first module (in the export's execution order, matched by qualified name and call)
    whose output differs from the masked model's, compared structurally (tensors inside tuples,
    dicts, dataclasses and objects), or the module in which the export raised. Not blamed: a
    module that owns no parameters or buffers itself, gets the same inputs and runs a selection
    op (top-k, a threshold) in its code or inside it: its difference is born there; and an output
    of another shape whose inputs differ too (pruned channels, fewer boxes after a selection)."""
    masked = _Recording(ranges=_out_ranges(mutator))
    masked.run(model, inputs)
    rerun()
    exported = _Recording()
    error = exported.run(static, inputs)
    found = LayerDifference(same_modules=error is None and exported.order == masked.order)
    picked: set[str] = set()  # modules whose difference is born in selection, in them or inside them
    resized: set[str] = set()  # modules whose outputs have other shapes (pruned channels, other counts)
    for key in exported.order:
        if key not in masked.outputs:
            continue
        if _shapes(masked.outputs[key]) != _shapes(exported.outputs[key]):
            resized.add(key[0])
        problem, reshaped = _differs(masked, masked.outputs[key], exported.outputs[key], rtol)
        if problem is None and not reshaped:
            continue
        same_inputs = _same_inputs(masked, masked.inputs[key], exported.inputs[key], rtol)
        born_in_selection = key[0] in exported.selecting or _inside(picked, key[0])
        if same_inputs and born_in_selection and _owns_no_state(static.get_submodule(key[0])):
            found.selection = found.selection or key[0]
            picked.add(key[0])
        elif problem is not None:
            found.layer, found.detail = key[0], problem
            return found
        elif same_inputs and not _inside(resized, key[0]):  # a shape change not born inside it
            found.layer, found.detail = key[0], f"{reshaped[0]} (its inputs are the same)"
            return found
    if error is not None:
        found.layer = exported.running[-1] if exported.running else ""
        found.detail = "the export raised the error in its forward"
    return found


def _inside(names: set[str], name: str) -> bool:
    """One of ``names`` is a module inside ``name``."""
    return any(other != name and (not name or other.startswith(f"{name}.")) for other in names)


def _same_inputs(masked: _Recording, expected: Any, actual: Any, rtol: float) -> bool:
    """The module got the same inputs in both models: same shapes (nothing pruned) and values."""
    return _shapes(expected) == _shapes(actual) and _differs(masked, expected, actual, rtol) == (None, [])


def _shapes(value: Any) -> list:
    return [tuple(leaf.shape) if isinstance(leaf, torch.Tensor) else None for _, leaf in structural_leaves(value)]


def _owns_no_state(module: nn.Module) -> bool:
    return not any(t is not None for t in (*module._parameters.values(), *module._buffers.values()))


def _differs(masked: _Recording, expected: Any, actual: Any, rtol: float) -> tuple[str | None, list[str]]:
    """What differs first between two recorded values (None: nothing), and the values of
    another shape that were not compared (their kept channels are not known)."""
    exp_leaves, act_leaves = structural_leaves(expected), structural_leaves(actual)
    if [p for p, _ in exp_leaves] != [p for p, _ in act_leaves]:
        return (f"holds {len(act_leaves)} values ({structure_kind(actual)}) where the masked model's holds "
                f"{len(exp_leaves)} ({structure_kind(expected)})"), []
    reshaped = []
    for (path, a), (_, b) in zip(exp_leaves, act_leaves):
        where = f"output {path}" if path else "its output"
        if isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and a.shape != b.shape:
            part = _kept_part(masked.kept.get(id(a)), a, b)
            if part is None:  # pruned along a dim whose kept channels are not known here: not compared
                reshaped.append(f"{where} has shape {tuple(b.shape)} where the masked model's has {tuple(a.shape)}")
                continue
            a = part
            if isinstance(a, str):
                return f"{where} {a}", reshaped
        problem = compare_leaf(a, b, rtol)
        if problem is not None:
            return f"{where} {problem}", reshaped
    return None, reshaped


def _kept_part(ranges: list | None, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor | str | None:
    """The channels of the masked output ``a`` that the export's ``b`` keeps, or a text saying
    why ``b`` cannot hold them, or None when they are not known."""
    dims = [d for d in range(a.dim()) if a.dim() == b.dim() and a.shape[d] != b.shape[d]]
    if len(dims) != 1 or ranges is None:
        return None
    dim = dims[0]
    mask = torch.ones(a.shape[dim], dtype=torch.bool)
    for start, end, kept in ranges:
        if end > mask.numel():
            return None
        mask[start:end] = kept
    if int(mask.sum()) != b.shape[dim]:
        return f"has {b.shape[dim]} channels in dim {dim} where its units keep {int(mask.sum())} of {a.shape[dim]}"
    return a.index_select(dim, mask.nonzero().squeeze(1).to(a.device))


def units_touching(mutator: Any, layer: str | None) -> list[Any]:
    """Names of the mutable units with channels in ``layer`` (or in modules or parameters
    inside it); for a module no unit touches, those of its nearest ancestor that has some."""
    if layer is None:
        return []
    name = layer
    while True:
        prefix = f"{name}." if name else ""
        found = [u.name for u in mutator.mutable_units
                 if any(c.name == name or c.name.startswith(prefix) for c in u.channels)]
        if found or not name:
            return found
        name = name.rpartition(".")[0]
