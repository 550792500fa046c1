"""Block units: module calls that add residual branches onto a stream, found from the trace.

A call is a *block* when one of its outputs is reached from one of its inputs of the same shape
through residual adds (``x + f(x)``, the branch computed inside the call) and stream ops (norms,
activations, dropout): removing it leaves ``y = x``. A block is *removable* when nothing it
computes but ``y`` is used outside it and it does not change its input in place; a call whose
residual add's shortcut is not the identity (a projection) is listed with the reason; calls
that are only a sequence of smaller blocks (stages) are not blocks. A *branch* is a module whose
parent adds its output to its input inline (``x = x + self.f(x)``). No model names are known here.
"""
from __future__ import annotations

import bisect
from collections.abc import Callable
from dataclasses import dataclass, field

from torch import nn

from ..layers import kind_of
from ..trace.graph import ModuleCall, Node, TensorRef, TracedGraph
from .module_blocks import CONTAINERS

ADDS = frozenset({"add", "__add__", "__radd__", "add_", "__iadd__"})
STREAM_FUNCTIONS = frozenset({"relu", "relu_", "dropout", "layer_norm", "rms_norm", "group_norm", "batch_norm",
                              "contiguous", "clone", "to", "float", "type_as", "native_dropout"})
QUIET_OPS = frozenset({"contiguous", "clone", "to", "float", "type_as"})  # not named in a block's form
IN_PLACE_EXTRA = frozenset({"__setitem__", "__iadd__", "__isub__", "__imul__", "__itruediv__"})


@dataclass
class BlockSpec:
    """One block the analysis found: the module at ``path`` (its call adds ``adds`` residual
    branches), which of the call's tensor inputs is the stream (``input_index``) and which output
    (``output_index``); ``reasons`` say why it must stay (empty: it can be dropped)."""

    path: str
    input_index: int
    output_index: int
    adds: int
    form: str  # in words: "y = x + f(x)" or with post-norm / trailing ops
    output_is_tensor: bool = True
    reasons: list[str] = field(default_factory=list)
    add_nodes: list[int] = field(default_factory=list, repr=False)  # the residual adds (node indices)
    n_inputs: int = 1  # tensor inputs of the call
    kind: str = "block"  # "block" (the call adds onto its stream) or "branch" (its parent adds it: branch_blocks.py)

    @property
    def removable(self) -> bool:
        """Whether dropping the block is allowed."""
        return not self.reasons


@dataclass
class _Walk:
    """Where walking back from an output along the stream ended."""

    adds: list[int] = field(default_factory=list)  # residual add nodes on the stream
    stream_ops: list[str] = field(default_factory=list)
    reached: int | None = None  # index of the call input reached
    failed_at: Node | None = None


class _Versions:
    """Which node wrote each tensor handle last before a given node (in-place ops write again)."""

    def __init__(self, nodes: list[Node]) -> None:
        self.writers: dict[int, list[int]] = {}
        for node in nodes:
            for ref in node.output_refs():
                self.writers.setdefault(ref.handle, []).append(node.index)

    def writer(self, handle: int, before: int) -> int | None:
        """The index of the last node before ``before`` that output ``handle``."""
        indices = self.writers.get(handle, [])
        k = bisect.bisect_left(indices, before)
        return indices[k - 1] if k else None


def find_blocks(graph: TracedGraph, modules: dict[str, nn.Module] | None = None) -> list[BlockSpec]:
    """The blocks of a traced model (see the module docstring), removable or not, in call order."""
    modules = graph.modules if modules is None else modules
    versions = _Versions(graph.nodes)
    consumers = _last_uses(graph)
    counts: dict[str, int] = {}
    for call in graph.calls:
        counts[call.path] = counts.get(call.path, 0) + 1
    found: list[tuple[ModuleCall, BlockSpec]] = []
    for call in graph.calls:
        if not call.path or call.end <= call.start or any(s.path == call.path for _, s in found):
            continue  # a module called several times is listed once
        spec = _block_of(graph, call, versions)
        if spec is None:
            continue
        if counts[call.path] > 1:
            spec.reasons.append(f"the module is called {counts[call.path]} times")
        spec.reasons += _leaks(graph, call, spec, versions, consumers)
        found.append((call, spec))
    blocks = _outermost(_not_composite(found))
    removable_parents = {_parent(b.path) for b in blocks if b.removable and is_container_child(modules, b.path)}
    removable_types = {type(modules.get(b.path)) for b in blocks if b.removable}
    listed = {b.path for b in blocks}
    stay = [s for c in graph.calls if c.path and c.path not in listed and counts[c.path] == 1
            and (_parent(c.path) in removable_parents or type(modules.get(c.path)) in removable_types)
            and not any(c.path.startswith(p + ".") for p in listed)
            for s in [_projection(graph, c, versions, modules)] if s is not None]
    for block in blocks:
        shared = _shared_parameter(modules, block.path) if block.removable else None
        if shared is not None:
            block.reasons.append(f"its parameters are shared outside it ({shared!r})")
        if block.removable and not is_container_child(modules, block.path) and \
                not (block.output_is_tensor and block.n_inputs == 1):
            block.reasons.append("it sits outside a ModuleList, Sequential or ModuleDict and takes or returns "
                                 "more than one tensor: the export could not take it out")
    branches = find_branches(graph, modules, blocks + stay,
                             lambda call, spec: _leaks(graph, call, spec, versions, consumers))
    starts = {c.path: c.start for c in reversed([*graph.calls, *_leaf_calls(graph)])}  # each path's first call
    return sorted(blocks + stay + branches, key=lambda b: starts[b.path])


def _parent(path: str) -> str:
    return path.rpartition(".")[0]


def _last_uses(graph: TracedGraph) -> dict[int, int]:
    """The index of the last node that reads each handle (model outputs: past the last node)."""
    last: dict[int, int] = {}
    for node in graph.nodes:
        for ref in node.input_refs():
            last[ref.handle] = node.index
    for ref in graph.outputs:
        last[ref.handle] = len(graph.nodes)
    return last


def _is_stream_op(node: Node) -> bool:
    if node.kind == "module":
        kind = kind_of(node.target)
        return kind is not None and not kind.has_macs and len(node.output_refs()) == 1
    return node.name in STREAM_FUNCTIONS


def _walk(graph: TracedGraph, call: ModuleCall, versions: _Versions, ref: TensorRef, at: int,
          depth: int = 0) -> _Walk:
    """Walk back from tensor ``ref`` as it was before node ``at``, along stream ops and adds."""
    walk = _Walk()
    while True:
        index = versions.writer(ref.handle, at)
        if index is None or index < call.start:
            inputs = [i for i, x in enumerate(call.inputs) if x.handle == ref.handle]
            walk.reached = inputs[0] if inputs else None
            return walk
        node = graph.nodes[index]
        operands = [x for x in node.input_refs() if x.is_float]
        if node.name in ADDS and len(operands) == 2 and depth < 64:
            for k, operand in enumerate(operands):
                branch = operands[1 - k]
                branch_at = versions.writer(branch.handle, index)
                if branch_at is None or branch_at < call.start:
                    continue  # the other operand must be computed inside the call (the branch)
                inner = _walk(graph, call, versions, operand, index, depth + 1)
                if inner.reached is not None:
                    inner.adds = [*walk.adds, index, *inner.adds]
                    inner.stream_ops = walk.stream_ops + inner.stream_ops
                    return inner
            walk.failed_at = node
            return walk
        if _is_stream_op(node) and operands and operands[0].shape == node.output_refs()[0].shape:
            walk.stream_ops.append(node.name if node.kind == "function" else type(node.target).__name__)
            ref, at = operands[0], index
            continue
        walk.failed_at = node
        return walk


def _block_of(graph: TracedGraph, call: ModuleCall, versions: _Versions) -> BlockSpec | None:
    for j, out in enumerate(call.outputs):
        if not out.is_float:
            continue
        walk = _walk(graph, call, versions, out, call.end)
        if walk.reached is None or not walk.adds:
            continue
        x = call.inputs[walk.reached]
        if x.shape != out.shape or not x.is_float:
            continue
        if not all(_branch_reads(graph, call, versions, a, x.handle) for a in walk.adds):
            continue  # a branch computed from other inputs only: the stream is added to, not a block
        ops = [op for op in dict.fromkeys(walk.stream_ops) if op not in QUIET_OPS]
        form = "y = x + f(x)" if len(walk.adds) == 1 else f"y = x + {len(walk.adds)} residual branches"
        form += f", with {', '.join(ops)} on the stream" if ops else ""
        return BlockSpec(call.path, walk.reached, j, len(walk.adds), form, call.output_is_tensor,
                         add_nodes=list(walk.adds), n_inputs=len(call.inputs))
    return None


def _branch_reads(graph: TracedGraph, call: ModuleCall, versions: _Versions, add: int, stream: int) -> bool:
    """Whether both operands of the residual add at node ``add`` were computed from the call's
    input ``stream`` (the branch reads the stream)."""
    for operand in graph.nodes[add].input_refs():
        seen, todo, found = set(), [(operand.handle, add)], False
        while todo and not found:
            handle, before = todo.pop()
            index = versions.writer(handle, before)
            if index is None or index < call.start:
                found = handle == stream
                continue
            if index not in seen:
                seen.add(index)
                todo += [(x.handle, index) for x in graph.nodes[index].input_refs()]
        if not found:
            return False
    return True


def _leaks(graph: TracedGraph, call: ModuleCall, spec: BlockSpec, versions: _Versions,
           consumers: dict[int, int]) -> list[str]:
    """Why the block cannot be dropped: what it computes is used outside it, or it writes its input."""
    reasons = []
    y, inputs = call.outputs[spec.output_index], {x.handle for x in call.inputs}
    for node in graph.nodes[call.start:call.end]:
        for ref in node.output_refs():
            if ref.handle in inputs and (node.name.endswith("_") and not node.name.endswith("__")
                                         or node.name in IN_PLACE_EXTRA):
                reasons.append(f"it changes its input in place ({node.name} in {node.scope or 'the model'!r})")
            elif ref.handle != y.handle and ref.handle not in inputs and consumers.get(ref.handle, -1) >= call.end:
                user = consumers[ref.handle]
                where = "the model's output" if user >= len(graph.nodes) else \
                    f"{graph.nodes[user].name} in {graph.nodes[user].scope or 'the model'!r}"
                reasons.append(f"what it computes in {node.scope or 'the model'!r} ({node.name}) "
                               f"also feeds {where}, outside the block")
    return list(dict.fromkeys(reasons))[:3]


def _inside(inner: ModuleCall, outer: ModuleCall) -> bool:
    return outer.start <= inner.start and inner.end <= outer.end and inner is not outer


def _not_composite(found: list[tuple[ModuleCall, BlockSpec]]) -> list[tuple[ModuleCall, BlockSpec]]:
    """Drop the calls whose residual adds all lie inside smaller blocks (stages, encoders)."""
    kept = []
    for call, spec in found:
        inner = [c for c, _ in found if _inside(c, call)]
        if inner and all(any(c.start <= a < c.end for c in inner) for a in spec.add_nodes):
            continue
        kept.append((call, spec))
    return kept


def _outermost(found: list[tuple[ModuleCall, BlockSpec]]) -> list[BlockSpec]:
    """The blocks not inside another block."""
    return [spec for call, spec in found if not any(_inside(call, other) for other, _ in found)]


def _projection(graph: TracedGraph, call: ModuleCall, versions: _Versions,
                modules: dict[str, nn.Module]) -> BlockSpec | None:
    """A call beside removable blocks whose output is a residual add whose shortcut is not the
    identity: listed, with the layers on its shortcut, as a block that must stay."""
    for j, out in enumerate(call.outputs):
        walk = _walk(graph, call, versions, out, call.end)
        node = walk.failed_at
        if node is None or node.name not in ADDS or len(node.input_refs()) != 2:
            continue
        inputs = {x.handle for x in call.inputs}
        paths = [_path_to_input(graph, call, versions, operand, node.index, inputs) for operand in node.input_refs()]
        paths = [p for p in paths if p is not None]
        if not paths:
            continue
        shortcut = min(paths, key=len)
        layers = [f"{n.name!r} ({type(n.target).__name__})" for n in shortcut if n.kind == "module"]
        names = ", ".join(layers) or ", ".join(n.name for n in shortcut)
        return BlockSpec(call.path, 0, j, 1, "y = s(x) + f(x)", call.output_is_tensor,
                         [f"its shortcut is not the identity: it goes through {names}"])
    return None


def _path_to_input(graph: TracedGraph, call: ModuleCall, versions: _Versions, ref: TensorRef, at: int,
                   inputs: set[int], limit: int = 6) -> list[Node] | None:
    """The shortest chain of nodes (up to ``limit``) from a call input to ``ref`` before node ``at``."""
    frontier: list[tuple[TensorRef, int, list[Node]]] = [(ref, at, [])]
    for _ in range(limit + 1):
        step = []
        for tensor, before, chain in frontier:
            index = versions.writer(tensor.handle, before)
            if index is None or index < call.start:
                if tensor.handle in inputs and chain:
                    return chain
                continue
            node = graph.nodes[index]
            step += [(x, index, [node, *chain]) for x in node.input_refs() if x.is_float]
        frontier = step
    return None


def _shared_parameter(modules: dict[str, nn.Module], path: str) -> str | None:
    """The name, outside the block at ``path``, of a parameter the block holds too (tied), if any."""
    inside = {id(p) for p in modules[path].parameters()}
    root = modules.get("")
    for name, param in (root.named_parameters(remove_duplicate=False) if root is not None else ()):
        if id(param) in inside and not name.startswith(path + "."):
            return name
    return None


def is_container_child(modules: dict[str, nn.Module], path: str) -> bool:
    """Whether the module at ``path`` sits in a ``ModuleList``, ``Sequential`` or ``ModuleDict``."""
    return isinstance(modules.get(_parent(path)), CONTAINERS)


# -- inline residual branches: x = x + self.f(x) written in the parent's forward -----------------
BRANCH = "branch"


def _readers(graph: TracedGraph) -> dict[int, list[int]]:
    """Per tensor handle, the nodes that read it (model outputs as ``len(nodes)``)."""
    readers: dict[int, list[int]] = {}
    for node in graph.nodes:
        for ref in node.input_refs():
            readers.setdefault(ref.handle, []).append(node.index)
    for ref in graph.outputs:
        readers.setdefault(ref.handle, []).append(len(graph.nodes))
    return readers


def _leaf_calls(graph: TracedGraph) -> list[ModuleCall]:
    """Each leaf module's call as a ``ModuleCall`` of one node (the trace records only the others)."""
    return [ModuleCall(node.name, node.index, [r for r in node.input_refs() if r.param is None], node.index + 1,
                       node.output_refs(), isinstance(node.outputs, TensorRef))
            for node in graph.nodes if node.kind == "module" and node.name]


def _writes(graph: TracedGraph, handle: int, start: int, end: int) -> bool:
    """Whether a node in ``[start, end)`` writes ``handle`` (in place)."""
    return any(ref.handle == handle for node in graph.nodes[start:end] for ref in node.output_refs())


def _inline_add(graph: TracedGraph, call: ModuleCall, readers: dict[int, list[int]]) -> int | None:
    """The node of the add ``x + f(x)`` that is the only reader of the call's output, with ``x``
    the call's one tensor input, unchanged since the call; None if the call is no branch."""
    if len(call.inputs) != 1 or len(call.outputs) != 1 or not call.output_is_tensor:
        return None
    x, out = call.inputs[0], call.outputs[0]
    if not (x.is_float and out.is_float) or x.shape != out.shape or x.handle == out.handle:
        return None
    users = [i for i in readers.get(out.handle, []) if i >= call.end]
    if len(users) != 1 or users[0] >= len(graph.nodes):
        return None
    add = graph.nodes[users[0]]
    operands: list[TensorRef] = [r for r in add.input_refs() if r.is_float]
    if add.name not in ADDS or len(operands) != 2 or {r.handle for r in operands} != {x.handle, out.handle}:
        return None
    if _writes(graph, x.handle, call.start, add.index) or _writes(graph, out.handle, call.end, add.index):
        return None  # the stream or the branch changed in place before the add: not x + f(x)
    return add.index


def find_branches(graph: TracedGraph, modules: dict[str, nn.Module], blocks: list[BlockSpec],
                  leaks: Callable[[ModuleCall, BlockSpec], list[str]]) -> list[BlockSpec]:
    """The inline residual branches of a traced model: calls whose output only feeds an add with
    their input, outside every block in ``blocks`` and outside other branches. ``leaks(call,
    spec)`` gives the reasons a branch must stay (what it computes is used outside it, it writes
    its input), as for blocks."""
    readers = _readers(graph)
    calls = sorted([*graph.calls, *_leaf_calls(graph)], key=lambda c: (c.start, -c.end))
    counts: dict[str, int] = {}
    for call in calls:
        counts[call.path] = counts.get(call.path, 0) + 1
    spans = [(c.start, c.end) for b in blocks for c in graph.calls if c.path == b.path]
    found: list[tuple[ModuleCall, BlockSpec]] = []
    for call in calls:
        if not call.path or counts[call.path] > 1 or call.end <= call.start or call.path not in modules:
            continue
        if next(modules[call.path].parameters(), None) is None:
            continue  # nothing to save: a branch holds at least one parameter
        if any(s <= call.start and call.end <= e for s, e in spans):
            continue  # inside a block: the block is the unit
        add = _inline_add(graph, call, readers)
        if add is None or any(s <= add < e for s, e in spans):
            continue
        scope = graph.nodes[add].scope or "the model"
        spec = BlockSpec(call.path, 0, 0, 1, f"y = x + f(x), the add inline in {scope!r}", True,
                         add_nodes=[add], kind=BRANCH)
        spec.reasons += leaks(call, spec)
        found.append((call, spec))
    return [s for c, s in found if not any(o.start <= c.start and c.end <= o.end and o is not c for o, _ in found)]
