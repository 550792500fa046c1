"""The export checks itself: the exported model must compute what the masked model computes.

:func:`verify_export` runs the masked supernet and the export on the example input and compares
every output; when they differ, it finds the first layer whose output differs and
:class:`ExportError` names it and its units. A detector's selection outside modules (top-k, NMS)
only warns (:class:`ExportCheckWarning`). The check changes nothing (flags, buffers, random
state, choices). The policy: docs/export-check.md.
"""
from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import keystr, tree_flatten_with_path, tree_map

from ..channels.model_outputs import dataclasses_as_dicts, narrowed_outputs
from ..trace.structured_values import structural_leaves
from ..trace.tracer import _split_inputs

# error allowed, as a fraction of the largest magnitude of an output tensor
RTOL = {torch.float64: 1e-7, torch.float32: 1e-4, torch.float16: 1e-2, torch.bfloat16: 5e-2}
MAX_UNITS_NAMED = 6


class ExportError(RuntimeError):
    """The exported model does not compute what the masked model computes (or fails to run).

    ``layer`` is the qualified name of the first module whose output differs (or in which the
    export raised; None where no single module was found), ``units`` the names of the mutable
    units that touch it.
    """

    def __init__(self, message: str, layer: str | None = None, units: list[Any] | None = None) -> None:
        super().__init__(message)
        self.layer = layer
        self.units = list(units or [])


class UncheckedExportWarning(UserWarning):
    """``to_static()`` returned a model it could not check (no example input, meta tensors)."""


class ExportCheckWarning(UserWarning):
    """``to_static()``'s final outputs differ from the masked model's only after selection outside
    modules (top-k, NMS, thresholds) while every module's output matches: the export is returned."""


def verify_export(mutator: Any, static: nn.Module, example_inputs: Any = None) -> nn.Module:
    """Return ``static`` when it computes what ``mutator.model`` (masked) computes on the
    example input (``example_inputs``, else the one the mutator was prepared with); raise
    :class:`ExportError` when it does not. Without an input, warn
    (:class:`UncheckedExportWarning`) that nothing was checked. (A model on the meta device never
    gets here: ``to_static`` refuses it first, with :class:`MetaDeviceError`.)"""
    model = mutator.model
    inputs = example_inputs if example_inputs is not None else getattr(mutator, "example_inputs", None)
    if inputs is None:
        return _unchecked(static, "the mutator has no example input (give one to prepare_from_supernet "
                                  "or to_static(example_inputs=...))")
    inputs = _to_model(inputs, model)
    rtol = _model_rtol(model)
    with _untouched(model, static) as rerun:
        try:
            masked = _call(model, inputs)
        except Exception as error:  # the masked model itself fails: there is nothing to compare with
            return _unchecked(static, f"the masked model failed on the example input: {_line(error)}")
        rerun()
        if hasattr(mutator, "kept_output_channels"):  # outputs that follow the pruned model: its kept channels
            masked = narrowed_outputs(masked, mutator.kept_output_channels())
        try:
            problem = compare_outputs(dataclasses_as_dicts(masked), dataclasses_as_dicts(_call(static, inputs)), rtol)
        except Exception as error:
            problem = f"the exported model raised {_line(error)}"
        if problem is None:
            return static
        del masked
        rerun()
        found = locate_difference(mutator, model, static, inputs, rtol, rerun)
    if found.layer is None and found.same_modules and found.selection is not None:
        return _selected_differently(static, problem, found.selection)
    units = units_touching(mutator, found.layer)
    raise ExportError(_message(problem, found.layer, found.detail, static, units), found.layer, units)


def _selected_differently(static: nn.Module, problem: str, where: str) -> nn.Module:
    kind = type(static.get_submodule(where)).__name__
    warnings.warn(f"to_static(): the final outputs differ ({problem}), but every layer's output matches "
                  f"the masked model's within tolerance, in the same order; the difference is born in "
                  f"{where or 'the model'!r} ({kind}), which owns no weights, gets the same inputs and "
                  "selects (top-k, NMS, a threshold) outside its modules: rounding picks differently. "
                  "The export is returned.", ExportCheckWarning, stacklevel=4)
    return static


def _unchecked(static: nn.Module, why: str) -> nn.Module:
    warnings.warn(f"to_static() did not check the export: {why}", UncheckedExportWarning, stacklevel=4)
    return static


def _line(error: BaseException) -> str:
    text = " ".join(str(error).split())
    return f"{type(error).__name__}: {text[:300]}" if text else type(error).__name__


def _message(problem: str, layer: str | None, detail: str, static: nn.Module, units: list[Any]) -> str:
    text = f"the exported model does not compute what the masked model computes: {problem}."
    if layer is None:
        text += " No single layer was found to differ first."
    else:
        kind = type(static.get_submodule(layer)).__name__ if layer else type(static).__name__
        text += f" First layer that differs: {layer or 'the model'!r} ({kind}): {detail}."
        named = ", ".join(map(str, units[:MAX_UNITS_NAMED]))
        more = f" and {len(units) - MAX_UNITS_NAMED} more" if len(units) > MAX_UNITS_NAMED else ""
        text += f" Units that touch it: {named}{more}." if units else " No mutable unit touches it."
    return text + " The mutator and the supernet are unchanged; to_static(check=False) skips this check."


# -- running the models unchanged ---------------------------------------------------------------
def _call(model: nn.Module, inputs: Any) -> Any:
    args, kwargs = _split_inputs(inputs)
    return model(*args, **kwargs)


def _to_model(inputs: Any, model: nn.Module) -> Any:
    """The example input on the model's device, floats in its float dtype (a model moved or
    cast after it was prepared); tensors already there are passed as they are (no copy)."""
    param = next((p for p in model.parameters() if p.is_floating_point()), None)
    if param is None:
        return inputs

    def move(x: Any) -> Any:
        if not isinstance(x, torch.Tensor):
            return x
        dtype = param.dtype if x.is_floating_point() else x.dtype
        return x if (x.device, x.dtype) == (param.device, dtype) else x.to(param.device, dtype)

    return tree_map(move, inputs)


def _model_rtol(model: nn.Module) -> float:
    dtypes = {p.dtype for p in model.parameters() if p.is_floating_point()}
    return max([RTOL.get(d, 1e-4) for d in dtypes] or [RTOL[torch.float32]])


@contextlib.contextmanager
def _untouched(*models: nn.Module) -> Iterator[Any]:
    """Eval mode, no_grad; afterwards every module's train flag, every buffer that a forward
    changed or replaced and the random state (CPU and the models' CUDA devices) are as they were.
    Yields ``rerun()``, which puts the random state back where the first forward found it."""
    modes = [(m, m.training) for model in models for m in model.modules()]
    buffers = [(m._buffers, key, b, b._version, b.detach().clone()) for model in models for m in model.modules()
               for key, b in m._buffers.items() if b is not None]
    devices = sorted({t.device.index or 0 for model in models for t in (*model.parameters(), *model.buffers())
                      if t.device.type == "cuda"})
    with torch.random.fork_rng(devices=devices), torch.no_grad():
        cpu_state = torch.get_rng_state()
        cuda_states = [torch.cuda.get_rng_state(d) for d in devices]

        def rerun() -> None:
            torch.set_rng_state(cpu_state)
            for device, state in zip(devices, cuda_states):
                torch.cuda.set_rng_state(state, device)

        for model in models:
            model.eval()
        try:
            yield rerun
        finally:
            for module, flag in modes:
                module.training = flag
            for store, key, buffer, version, value in buffers:  # a forward may write or replace a buffer
                store[key] = buffer
                if buffer._version != version:
                    buffer.copy_(value)


# -- comparing outputs ----------------------------------------------------------------------------
def compare_outputs(expected: Any, actual: Any, rtol: float = RTOL[torch.float32]) -> str | None:
    """None when ``actual`` matches ``expected`` (any pytree of tensors: tuples, dicts,
    ModelOutput objects), else what differs first. Tensors match when
    ``|a - b| <= rtol * max|a| + tiny`` (non-finite values must be equal); other leaves by ``==``."""
    exp_leaves, exp_spec = tree_flatten_with_path(expected)
    act_leaves, act_spec = tree_flatten_with_path(actual)
    if exp_spec != act_spec:
        return (f"the exported model returns {len(act_leaves)} outputs ({_kind(actual)}) where the masked "
                f"model returns {len(exp_leaves)} ({_kind(expected)})")
    for (path, a), (_, b) in zip(exp_leaves, act_leaves):
        problem = _compare_leaf(a, b, rtol)
        if problem is not None:
            where = f"output {keystr(path)}" if path else "the output"
            return f"{where} {problem}"
    return None


def _kind(tree: Any) -> str:
    return type(tree).__name__


def _compare_leaf(a: Any, b: Any, rtol: float) -> str | None:
    if not isinstance(a, torch.Tensor) or not isinstance(b, torch.Tensor):
        if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
            return f"is a {type(b).__name__} where the masked model gives a {type(a).__name__}"
        if type(a).__eq__ is object.__eq__:  # no value equality (an HF DynamicCache): not checked
            return None
        try:
            same = bool(a == b)
        except Exception:  # values that cannot be compared are not checked
            return None
        return None if same else f"is {b!r} where the masked model gives {a!r}"
    if a.shape != b.shape:
        return f"has shape {tuple(b.shape)} where the masked model's has {tuple(a.shape)}"
    if a.dtype != b.dtype:
        return f"has dtype {b.dtype} where the masked model's has {a.dtype}"
    if not a.is_floating_point() and not a.is_complex():
        return None if torch.equal(a, b) else "differs (exact values expected)"
    return _close(a.detach(), b.detach(), max(rtol, RTOL.get(a.dtype, rtol)))


def _close(a: torch.Tensor, b: torch.Tensor, rtol: float) -> str | None:
    """``|a - b| <= rtol * max|a| + tiny``, the scale taken over a's finite values."""
    if a.is_complex():
        a, b = torch.view_as_real(a), torch.view_as_real(b)
    wide = torch.float64 if a.dtype == torch.float64 else torch.float32
    a, b = a.to(wide), b.to(wide)
    finite = torch.isfinite(a)
    if not torch.equal(finite, torch.isfinite(b)) or not torch.equal(a[~finite].nan_to_num(), b[~finite].nan_to_num()):
        return "has non-finite values (nan or inf) where the masked model's has others"
    if a.numel() == 0 or not bool(finite.any()):
        return None
    scale = a[finite].abs().max().item()
    error = (a - b)[finite].abs().max().item()
    tolerance = rtol * scale + torch.finfo(wide).tiny
    if error <= tolerance:
        return None
    return f"differs by up to {error:.3g} (largest magnitude {scale:.3g}, tolerance {tolerance:.3g})"


# -- finding the first layer that differs ---------------------------------------------------------
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
                _call(model, inputs)
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
        return (f"holds {len(act_leaves)} values ({_kind(actual)}) where the masked model's holds "
                f"{len(exp_leaves)} ({_kind(expected)})"), []
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
        problem = _compare_leaf(a, b, rtol)
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
