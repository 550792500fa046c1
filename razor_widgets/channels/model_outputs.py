"""Which of a model's outputs keep their shape, and which follow the pruned model.

In an output with a prediction (a field named ``logits`` or ``*_logits``), the fields that merely
expose internal activations (:data:`ACTIVATION_FIELD`) follow the pruned model and every other
field keeps its shape; any other output keeps the shape of every tensor; the user can name the
outputs that keep their shape (``parse_cfg={"fixed_outputs": [...]}``). The policy:
docs/model-outputs.md.
"""
from __future__ import annotations

import copy
import dataclasses
import re
from collections.abc import Iterable
from typing import Any

import torch
from torch.utils import _pytree

from ..trace.structured_values import OutputPath, output_name
from .channel_space import varying_dims

PREDICTION_FIELD = re.compile(r"(^|_)logits$")
ACTIVATION_FIELD = re.compile(r"(^|_)(hidden_states?|attentions|past_key_values)$")

def pinned_outputs(paths: list[OutputPath], fixed_outputs: Iterable[str | int] | str | int | None = None
                   ) -> list[bool]:
    """For each output path: does it keep its shape? (the policy in the module docstring).
    ``fixed_outputs`` names the top-level outputs that do (None: decide by the fields' names);
    a name the output does not have raises ValueError listing those it has."""
    tops = [p[0] if p else None for p in paths]
    if fixed_outputs is None:
        names = [t for t in tops if isinstance(t, str)]
        if not any(PREDICTION_FIELD.search(n) for n in names):
            return [True] * len(paths)
        return [not (isinstance(t, str) and ACTIVATION_FIELD.search(t)) for t in tops]
    wanted = [fixed_outputs] if isinstance(fixed_outputs, (str, int)) else list(fixed_outputs)
    if not all(isinstance(w, (str, int)) for w in wanted):
        raise TypeError(f"fixed_outputs takes output names (str) or positions (int), got {fixed_outputs!r}")
    known = list(dict.fromkeys(t for t in tops if t is not None))
    unknown = [w for w in wanted if w not in known]
    if unknown:
        raise ValueError(f"fixed_outputs names {', '.join(map(repr, unknown))}, which the model's output does "
                         f"not have; it has {', '.join(map(repr, known)) or 'a single tensor (no names)'}")
    return [t in wanted for t in tops]


def output_paths(graph: Any) -> list[OutputPath]:
    """The paths of a traced graph's outputs; a graph recorded without them: every output
    unnamed (so every one keeps its shape)."""
    paths = list(getattr(graph, "output_paths", None) or [])
    return paths if len(paths) == len(graph.outputs) else [()] * len(graph.outputs)


def pin_outputs(ctx: Any, fixed_outputs: Any = None) -> dict[OutputPath, dict[int, torch.Tensor]]:
    """Fix the channels of the outputs that keep their shape; return, for every other output,
    the element ids along each dim in which they vary (one dim: a free output is cut along it)."""
    graph = ctx.graph
    paths = output_paths(graph)
    free: dict[OutputPath, dict[int, torch.Tensor]] = {}
    for ref, path, pinned in zip(graph.outputs, paths, pinned_outputs(paths, fixed_outputs)):
        ids = ctx.get(ref)
        dims = varying_dims(ids)
        if not pinned and len(dims) <= 1:
            free[path] = {d: ids.movedim(d, 0).reshape(ids.shape[d], -1)[:, 0].clone() for d in dims}
        else:
            reason = "model output" + (f" {output_name(path)!r}" if path else "")
            ctx.fix(ids, reason if pinned else f"{reason} (its channels vary along several dims)")
    return free


@dataclasses.dataclass(frozen=True)
class NotNarrowed:
    """Stands, in a narrowed output, for a tensor that could not be cut to the export's channels."""

    shape: tuple[int, ...] | None  # None: not a tensor (a whole object left out, e.g. a cache)
    reason: str = "its channels vary along several dims: it cannot be cut to the export's"


def held_roots(kept: dict[OutputPath, Any]) -> list[OutputPath]:
    """The output paths of the objects that hold tensors in attributes (an HF cache): each path
    of ``kept`` cut before its first attribute step (``".name"``)."""
    roots = []
    for path in kept:
        step = next((i for i, k in enumerate(path) if isinstance(k, str) and k.startswith(".")), None)
        if step is not None and path[:step] not in roots:
            roots.append(path[:step])
    return roots


def left_out(tree: Any, path: OutputPath, reason: str) -> Any:
    """A copy of the output ``tree`` (containers only) with the value at ``path`` replaced by a
    :class:`NotNarrowed` saying ``reason``; ``tree`` itself where the path is not found."""
    if not path:
        return NotNarrowed(None, reason)
    key, rest = path[0], path[1:]
    if isinstance(tree, dict) and key in tree:
        new = copy.copy(tree)
        new[key] = left_out(tree[key], rest, reason)
        return new
    if isinstance(tree, (list, tuple)) and isinstance(key, int) and 0 <= key < len(tree):
        items = list(tree)
        items[key] = left_out(tree[key], rest, reason)
        if isinstance(tree, list):
            return items
        return type(tree)(*items) if hasattr(tree, "_fields") else tuple(items)
    return tree


def held_outputs(ctx: Any) -> dict[OutputPath, dict[int, torch.Tensor] | None]:
    """The tensors held inside output objects that are no containers (an HF cache's keys and
    values: ``TracedGraph.held``): they never pin channels; like free outputs, the check cuts them
    along the one dim their channels vary along (None where they vary along several)."""
    free: dict[OutputPath, dict[int, torch.Tensor] | None] = {}
    for path, ref in getattr(ctx.graph, "held", []):
        ids = ctx.ids.get(ref.handle)
        dims = [] if ids is None else varying_dims(ids)
        if ids is not None and ids.dim() == len(ref.shape) and len(dims) <= 1:
            free[path] = {d: ids.movedim(d, 0).reshape(ids.shape[d], -1)[:, 0].clone() for d in dims}
        elif ids is not None:
            free[path] = None
    return free


def narrowed_outputs(tree: Any, kept: dict[OutputPath, dict[int, torch.Tensor] | None],
                     path: OutputPath = ()) -> Any:
    """A copy of the output ``tree`` (containers only, no tensor copied) in which the leaf at
    each path of ``kept`` holds only the positions ``kept[path][dim]`` along each dim: the
    masked model's free outputs cut to what the export returns (also inside objects that hold
    them in attributes, ``".name"`` in a path; ``None``: a :class:`NotNarrowed` in its place)."""
    if not any(p[:len(path)] == path for p in kept):
        return tree
    if path in kept and isinstance(tree, torch.Tensor):
        if kept[path] is None:
            return NotNarrowed(tuple(tree.shape))
        for dim, index in kept[path].items():
            tree = tree.index_select(dim, index.to(tree.device))
        return tree
    if isinstance(tree, (list, tuple)):
        items = [narrowed_outputs(x, kept, (*path, i)) for i, x in enumerate(tree)]
        if isinstance(tree, list):
            return items
        return type(tree)(*items) if hasattr(tree, "_fields") else tuple(items)
    if isinstance(tree, dict):
        new = copy.copy(tree)  # a ModelOutput stays one (its item and attribute are set together)
        for k, x in tree.items():
            new[k] = narrowed_outputs(x, kept, (*path, k))
        return new
    if dataclasses.is_dataclass(tree) and not isinstance(tree, type):
        new = copy.copy(tree)
        for f in dataclasses.fields(tree):
            object.__setattr__(new, f.name, narrowed_outputs(getattr(tree, f.name), kept, (*path, f.name)))
        return new
    node = _pytree.SUPPORTED_NODES.get(type(tree))
    if node is not None:  # a registered pytree node: rebuilt from its narrowed children
        children, context = node.flatten_fn(tree)
        return node.unflatten_fn([narrowed_outputs(x, kept, (*path, i)) for i, x in enumerate(children)], context)
    if hasattr(tree, "__dict__"):  # an object holding them in attributes (an HF cache): a shallow copy
        new = copy.copy(tree)
        for k, x in vars(tree).items():
            object.__setattr__(new, k, narrowed_outputs(x, kept, (*path, f".{k}")))
        return new
    return tree


def dataclasses_as_dicts(tree: Any) -> Any:
    """The output with every dataclass that is not a dict turned into a dict of its fields, so
    that a comparison sees their tensors (a ``ModelOutput`` is a dict already)."""
    if isinstance(tree, (list, tuple)):
        items = [dataclasses_as_dicts(x) for x in tree]
        if isinstance(tree, list):
            return items
        return type(tree)(*items) if hasattr(tree, "_fields") else tuple(items)
    if isinstance(tree, dict):
        if not any(isinstance(x, (list, tuple, dict)) or dataclasses.is_dataclass(x) for x in tree.values()):
            return tree
        new = copy.copy(tree)
        for k, x in tree.items():
            new[k] = dataclasses_as_dicts(x)
        return new
    if dataclasses.is_dataclass(tree) and not isinstance(tree, (type, NotNarrowed)):
        return {f.name: dataclasses_as_dicts(getattr(tree, f.name)) for f in dataclasses.fields(tree)}
    return tree
