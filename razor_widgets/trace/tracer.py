"""Record one concrete forward pass as a graph of ops on tensors.

Leaf modules (the layer types that have a channel rule) are recorded as one node each; every
other torch function call is recorded through a ``TorchFunctionMode``. The trace runs on a
real forward, so Python control flow, tuple/dict outputs and modules called several times all
work. Buffers and the RNG state are restored afterwards: tracing never changes the model.
"""
from __future__ import annotations

import gc
from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from torch.overrides import TorchFunctionMode
from torch.utils.weak import WeakIdKeyDictionary

from .graph import ModuleCall, Node, TensorRef, TracedGraph, leaves
from .structured_values import held_tensors, output_leaves
from .trace_hints import with_hint
from .traced_size import AttrRef, Source, TracedSize


class _Recorder(TorchFunctionMode):
    def __init__(self, tracer: Tracer) -> None:
        super().__init__()
        self.tracer = tracer

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        tracer = self.tracer
        name = getattr(func, "__name__", str(func))
        if not tracer.leaf_depth and (name == "size" or (
                name == "__get__" and getattr(getattr(func, "__self__", None), "__name__", "") == "shape")):
            return tracer.traced_size(args[0], func(*args, **kwargs), args[1] if len(args) > 1 else kwargs.get("dim"))
        if name == "__get__" and getattr(getattr(func, "__self__", None), "__name__", "") in _TRANSPOSED_VIEWS:
            name = func.__self__.__name__  # ``w.T``: a movement op like ``w.t()``, not metadata
        if tracer.leaf_depth or name in _METADATA:
            if name in _VALUE_READS and not tracer.leaf_depth:
                tracer.value_read(name, args[0])
            return func(*args, **kwargs)
        in_args, in_kwargs = tracer.refs(args), tracer.refs(kwargs)
        out = func(*args, **kwargs)
        if out is None and name != "__setitem__":
            return out
        if name != "__setitem__" and not any(isinstance(x, torch.Tensor) for x in leaves(out)):
            return out
        tracer.record("function", func, name, in_args, in_kwargs, out)
        return out


_TRANSPOSED_VIEWS = {"T", "mT"}
_VALUE_READS = {"__bool__", "item", "tolist", "__int__", "__float__", "__index__"}
_METADATA = {"__get__", "size", "dim", "numel", "__len__", "is_floating_point", "is_complex",
             "__bool__", "item", "tolist", "__format__", "__repr__", "stride", "data_ptr",
             "element_size", "nelement", "ndimension", "is_contiguous", "__index__", "__int__",
             "__float__", "get_device", "__hash__"}


class Tracer:
    """Trace a model with concrete inputs; ``is_leaf(module)`` decides which modules are nodes."""

    def __init__(self, is_leaf: Callable[[nn.Module], bool]) -> None:
        self.is_leaf = is_leaf
        self._handles: WeakIdKeyDictionary = WeakIdKeyDictionary()
        self._count = 0  # handles handed out; a dead tensor's entry leaves the weak dict with it
        self._param_names: dict[int, str] = {}
        self.values: dict[int, torch.Tensor] = {}
        self.nodes: list[Node] = []
        self.leaf_depth = 0
        self._scope: list[str] = [""]
        self._called: set[str] = set()
        self.size_uses: list[tuple[tuple[Source, ...], str, int]] = []
        self.value_reads: list[str] = []
        self._in_forward = False
        self.calls: list[ModuleCall] = []
        self._open_calls: list[ModuleCall] = []

    # -- tensor handles -------------------------------------------------------------------
    def ref(self, tensor: torch.Tensor) -> TensorRef:
        """The :class:`TensorRef` of a tensor: one handle per tensor object for the whole trace
        (integer tensors' values are kept for the rules)."""
        handle = self._handles.get(tensor)
        if handle is None:
            handle = self._count
            self._count += 1
            self._handles[tensor] = handle
            if not (tensor.is_floating_point() or tensor.is_complex()):
                self.values[handle] = tensor  # indices and masks: rules need their values
        return TensorRef(
            handle, tuple(tensor.shape), self._param_names.get(id(tensor)),
            tensor.is_floating_point() or tensor.is_complex(),
        )

    def refs(self, tree: Any) -> Any:
        """``tree`` with every tensor in it replaced by its :class:`TensorRef`."""
        return _map_tensors(self.ref, tree)

    def traced_size(self, tensor: torch.Tensor, out: Any, dim: int | None) -> Any:
        """``tensor.shape`` / ``tensor.size(dim)`` as sizes that remember their tensor dim."""
        if not isinstance(tensor, torch.Tensor):
            return out
        ref = self.ref(tensor)
        if isinstance(out, int):
            return TracedSize(out, ((ref, dim % tensor.dim()),), self._size_used)
        return torch.Size([TracedSize(n, ((ref, d),), self._size_used) for d, n in enumerate(out)])

    def _size_used(self, sources: tuple[Source, ...], what: str, value: int) -> None:
        if not self._in_forward:  # the rules compare recorded sizes too: those are no uses
            return
        scope = self._scope[-1] or "the model"
        self.size_uses.append((sources, f"its channel count is used as a number ({what}) in {scope!r}", value))

    def _traced_attributes(self, modules: dict[str, nn.Module], model: nn.Module) -> list[tuple]:
        """Replace the int attributes of the modules whose code is traced by traced sizes;
        returns what to put back."""
        swapped = []
        for name, module in modules.items():
            if module is not model and self.is_leaf(module):
                continue
            for attr, value in list(module.__dict__.items()):
                if type(value) is int and value > 1 and not attr.startswith("_"):
                    size = TracedSize(value, ((AttrRef(name, attr, value), -1),), self._size_used)
                    module.__dict__[attr] = size
                    swapped.append((module, attr, value, size))
        return swapped

    def value_read(self, how: str, tensor: Any) -> None:
        """The forward read a computed tensor's value (``if x.sum() > 0``): the path taken may
        depend on the input, which ``check_path_is_static`` then probes."""
        if isinstance(tensor, torch.Tensor) and id(tensor) not in self._param_names:
            self.value_reads.append(f"{how}() in {self._scope[-1] or 'the model'!r}")

    def record(self, kind: str, target: Any, name: str, args: Any, kwargs: Any, out: Any) -> None:
        """Append one call (a leaf module or a torch function) as a :class:`Node` in the current
        module scope."""
        outputs = self.refs(out)
        self.nodes.append(
            Node(len(self.nodes), kind, target, name, self._scope[-1], args, kwargs, outputs)
        )

    # -- the trace ------------------------------------------------------------------------
    def trace(self, model: nn.Module, example_inputs: Any) -> TracedGraph:
        """Run ``model`` once on ``example_inputs`` (under ``no_grad``) and return the recorded graph;
        the model's buffers, int attributes and hooks are put back as they were."""
        modules = dict(model.named_modules())
        for qualname, tensor in [*model.named_parameters(), *model.named_buffers()]:
            self._param_names[id(tensor)] = qualname
        hooks, bar = self._hook_modules(model, modules)
        state = {k: v.detach().clone() for k, v in model.state_dict(keep_vars=True).items()
                 if not isinstance(v, nn.Parameter)}
        args, kwargs = split_inputs(example_inputs)
        collecting = gc.isenabled()
        gc.disable()  # the trace allocates many small objects: collections would cost more than it
        swapped = self._traced_attributes(modules, model)
        try:
            with torch.random.fork_rng(devices=[]), torch.no_grad(), _Recorder(self):
                inputs = self.refs((args, kwargs))
                self._in_forward = True
                out = model(*args, **kwargs)
        except Exception as exc:
            raise TraceError(with_hint(f"the forward of {type(model).__name__} failed on the example input "
                                       f"{describe_inputs(example_inputs)}: {type(exc).__name__}: {exc}",
                                       exc, model)) from exc
        finally:
            self._in_forward = False
            if collecting:
                gc.enable()
            if bar is not None:
                bar.close()
            _restore_model(model, modules, swapped, hooks, state)
        return self._graph(modules, inputs, out)

    def _hook_modules(self, model: nn.Module, modules: dict[str, nn.Module]) -> tuple[list, Any]:
        """Hooks that record leaf modules as nodes and keep the scope of the others; returns
        the hook handles and the progress bar (or None)."""
        names = {id(m): n for n, m in modules.items()}
        pending: dict[int, list] = {}

        def pre_hook(module, args, kwargs):
            name = names[id(module)]
            self._called.add(name)
            leaf = not self.leaf_depth and self.is_leaf(module) and module is not model
            if leaf:
                pending.setdefault(id(module), []).append((self.refs(args), self.refs(kwargs)))
                self.leaf_depth += 1
            elif self.leaf_depth:
                self.leaf_depth += 1
            else:
                self._scope.append(name)
                self._open_call(name, args, kwargs)
            module._rw_trace_leaf = leaf  # noqa: SLF001 (removed after the trace)

        leaves = sum(1 for m in modules.values() if m is not model and self.is_leaf(m))
        bar = _progress(f"tracing {type(model).__name__}", leaves)

        def post_hook(module, args, kwargs, out):
            if self.leaf_depth:
                self.leaf_depth -= 1
                if module.__dict__.get("_rw_trace_leaf"):
                    in_args, in_kwargs = pending[id(module)].pop()
                    self.record("module", module, names[id(module)], in_args, in_kwargs, out)
                    if bar is not None:
                        bar.update()
            else:
                self._scope.pop()
                self._close_call(out)
            return None

        hooks = []
        for module in modules.values():
            hooks.append(module.register_forward_pre_hook(pre_hook, with_kwargs=True))
            hooks.append(module.register_forward_hook(post_hook, with_kwargs=True))
        return hooks, bar

    def _open_call(self, name: str, args: Any, kwargs: Any) -> None:
        refs = [x for x in leaves(self.refs((args, kwargs))) if isinstance(x, TensorRef)]
        call = ModuleCall(name, len(self.nodes), refs)
        self.calls.append(call)
        self._open_calls.append(call)

    def _close_call(self, out: Any) -> None:
        call = self._open_calls.pop()
        call.end = len(self.nodes)
        call.outputs = [x for x in leaves(self.refs(out)) if isinstance(x, TensorRef)]
        call.output_is_tensor = isinstance(out, torch.Tensor)

    def _graph(self, modules: dict[str, nn.Module], inputs: Any, out: Any) -> TracedGraph:
        input_refs = [x for x in leaves(inputs) if isinstance(x, TensorRef)]
        named = [(path, self.ref(x)) for path, x in output_leaves(out) if isinstance(x, torch.Tensor)]
        output_refs = [ref for _, ref in named]
        if not output_refs:
            raise TypeError(
                f"the model's output holds no tensor ({type(out).__name__}); "
                "expected a tensor or a tuple, list or dict of tensors"
            )
        unreached = [n for n in modules if n and n not in self._called
                     and not any(n.startswith(c + ".") for c in self._called if self.is_leaf(modules[c]))]
        held = [(path, self.ref(t)) for path, t in held_tensors(out)]
        return TracedGraph(self.nodes, input_refs, output_refs, modules, unreached, self.values, self.size_uses,
                           self.value_reads, [path for path, _ in named], self.calls, held)


def _restore_model(model: nn.Module, modules: dict[str, nn.Module], swapped: list, hooks: list,
                   state: dict[str, torch.Tensor]) -> None:
    """Undo what tracing did: int attributes, hooks, leaf marks, buffers."""
    for module, attr, value, size in swapped:
        if module.__dict__.get(attr) is size:  # unless the forward set a new value
            module.__dict__[attr] = value
    for module in modules.values():  # sizes the forward stored (self.n += 1, self.c = x.shape[1])
        for attr, stored in list(module.__dict__.items()):
            if isinstance(stored, TracedSize):
                module.__dict__[attr] = int(stored)
    for h in hooks:
        h.remove()
    for module in modules.values():
        module.__dict__.pop("_rw_trace_leaf", None)
    with torch.no_grad():
        for key, value in model.state_dict(keep_vars=True).items():
            if key in state:
                value.copy_(state[key])


PROGRESS_MIN_LAYERS = 300  # a model with this many layers takes long enough to show a progress bar


def _progress(what: str, layers: int) -> Any:
    """A ``tqdm.auto`` bar over the layers a large model calls (shown after half a second)."""
    if layers < PROGRESS_MIN_LAYERS:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=layers, desc=what, unit="layer", leave=False, delay=0.5)


class TraceError(RuntimeError):
    """The model's forward raised while being traced on the example input, or the path it takes
    depends on the input's values."""


def check_path_is_static(tracer: Tracer, model: nn.Module, example_inputs: Any, graph: TracedGraph) -> None:
    """When the forward read tensor values, trace it again on other values (the example input
    negated) and raise ``TraceError`` if it took another path: channel units found on one path
    would not hold on the other. The paths are compared once the first forward has run (ops a
    module runs only on its first call, filling a cache, are no other path)."""
    if not graph.value_reads:
        return
    other = _map_tensors(lambda t: -t if t.is_floating_point() else t, example_inputs)
    second = tracer.trace(model, other)
    ops = [(n.kind, n.name, n.scope) for n in graph.nodes]
    again = [(n.kind, n.name, n.scope) for n in second.nodes]
    if ops != again:  # the first forward may have filled a cache (torchvision's RoI pooling scales):
        ops = [(n.kind, n.name, n.scope) for n in Tracer(tracer.is_leaf).trace(model, example_inputs).nodes]
    if ops != again:
        k = next((i for i, (a, b) in enumerate(zip(ops, again)) if a != b), min(len(ops), len(again)))
        first = f"{ops[k][1]!r} in {ops[k][2] or 'the model'!r}" if k < len(ops) else "the end"
        then = f"{again[k][1]!r} in {again[k][2] or 'the model'!r}" if k < len(again) else "the end"
        raise TraceError(
            f"the path {type(model).__name__}'s forward takes depends on the input's values "
            f"({', '.join(dict.fromkeys(graph.value_reads))}): op {k} is {first} for the example input "
            f"and {then} for the same input negated; channel units cannot be found for every path")


def describe_inputs(tree: Any) -> str:
    """Shapes and dtypes of example inputs, for messages: ``(1, 3, 224, 224) float32``."""
    if isinstance(tree, torch.Tensor):
        return f"{tuple(tree.shape)} {str(tree.dtype).removeprefix('torch.')}"
    if isinstance(tree, (list, tuple)):
        return "(" + ", ".join(describe_inputs(x) for x in tree) + ")"
    if isinstance(tree, dict):
        return "{" + ", ".join(f"{k!r}: {describe_inputs(v)}" for k, v in tree.items()) + "}"
    return type(tree).__name__


def _map_tensors(fn: Callable[[torch.Tensor], Any], tree: Any) -> Any:
    """Apply ``fn`` to every tensor in nested tuples, lists and dicts (others kept as they are)."""
    if isinstance(tree, torch.Tensor):
        return fn(tree)
    if isinstance(tree, (list, tuple)):
        mapped = [_map_tensors(fn, x) for x in tree]
        if isinstance(tree, list):
            return mapped
        return type(tree)(*mapped) if hasattr(tree, "_fields") else tuple(mapped)
    if isinstance(tree, dict):
        return {k: _map_tensors(fn, v) for k, v in tree.items()}
    return tree


def split_inputs(example_inputs: Any) -> tuple[tuple, dict]:
    """Example inputs as ``(args, kwargs)``: a dict is keyword arguments, a tuple or list positional ones."""
    if isinstance(example_inputs, dict):
        return (), dict(example_inputs)
    if isinstance(example_inputs, (tuple, list)):
        return tuple(example_inputs), {}
    return (example_inputs,), {}


def make_example_inputs(demo_input: Any) -> Any:
    """Turn a shape such as ``(1, 3, 224, 224)`` into a random tensor; tensors pass through."""
    if isinstance(demo_input, torch.Tensor):
        return demo_input
    if isinstance(demo_input, dict) and "shape" in demo_input:
        return torch.randn(*demo_input["shape"])
    if isinstance(demo_input, (tuple, list)) and all(isinstance(d, int) for d in demo_input):
        return torch.randn(*demo_input)
    return demo_input
