"""The tensors and plain values inside a nested value, each with its path.

The export check compares what two models' modules return. Modules return tensors, but also
tuples, named tuples, dicts, dataclasses and plain objects that hold tensors (torchvision's
``ImageList``): such objects have no value equality, so they are compared by what they hold.
"""
from __future__ import annotations

import dataclasses
from typing import Any

import torch
from torch import nn
from torch.utils import _pytree

MAX_DEPTH = 8
_PLAIN = (bool, int, float, complex, str, bytes, torch.dtype, torch.device, type(None))


def structural_leaves(value: Any, path: str = "", depth: int = 0) -> list[tuple[str, Any]]:
    """The tensors and plain values inside ``value`` with their paths, looking into tuples
    (named tuples by field), lists, dicts, dataclasses and objects with a ``__dict__`` (an
    ``ImageList``), so that objects are compared by what they hold, not by identity. Modules,
    classes and objects nested deeper than ``MAX_DEPTH`` are leaves (compared by ``==`` if they define it)."""
    if isinstance(value, (torch.Tensor, torch.Size, nn.Module, type, *_PLAIN)) or depth > MAX_DEPTH:
        return [(path, value)]
    if isinstance(value, dict):
        items = [(f"[{k!r}]", v) for k, v in value.items()]
    elif isinstance(value, tuple) and hasattr(value, "_fields"):
        items = [(f".{k}", getattr(value, k)) for k in value._fields]
    elif isinstance(value, (list, tuple)):
        items = [(f"[{i}]", v) for i, v in enumerate(value)]
    elif dataclasses.is_dataclass(value):
        items = [(f".{f.name}", getattr(value, f.name)) for f in dataclasses.fields(value)]
    elif hasattr(value, "__dict__"):
        items = [(f".{k}", v) for k, v in vars(value).items()]
    else:
        return [(path, value)]
    return [leaf for key, item in items for leaf in structural_leaves(item, path + key, depth + 1)]


OutputPath = tuple  # keys from the output's root: str for dict keys and fields, int for positions


def output_leaves(tree: Any, path: OutputPath = ()) -> list[tuple[OutputPath, Any]]:
    """Every leaf of a model output with its path, in the order the tracer records them:
    tuples and lists by position, dicts (``ModelOutput``) by key, dataclasses by field, other
    registered pytree nodes by the position of their children."""
    if isinstance(tree, (list, tuple)):
        return [leaf for i, x in enumerate(tree) for leaf in output_leaves(x, (*path, i))]
    if isinstance(tree, dict):
        return [leaf for k, x in tree.items() for leaf in output_leaves(x, (*path, k))]
    if dataclasses.is_dataclass(tree) and not isinstance(tree, type):
        return [leaf for f in dataclasses.fields(tree)
                for leaf in output_leaves(getattr(tree, f.name), (*path, f.name))]
    node = _pytree.SUPPORTED_NODES.get(type(tree))
    if node is not None:  # a registered pytree node (with or without key functions): its children by position
        children, _ = node.flatten_fn(tree)
        return [leaf for i, x in enumerate(children) for leaf in output_leaves(x, (*path, i))]
    return [(path, tree)]


def held_tensors(tree: Any) -> list[tuple[OutputPath, torch.Tensor]]:
    """The tensors that objects the output walk cannot enter (no value equality, not registered:
    an HF ``DynamicCache``) hold in their attributes, with paths that go on into them: ``".name"``
    for an attribute, an int for a list position, a key for a dict entry."""
    found = []
    for path, leaf in output_leaves(tree):
        if not isinstance(leaf, (torch.Tensor, *_PLAIN)) and hasattr(leaf, "__dict__"):
            found += [((*path, *inner), t) for inner, t in _attribute_tensors(leaf, (), 0)]
    return found


def _attribute_tensors(value: Any, path: OutputPath, depth: int) -> list[tuple[OutputPath, torch.Tensor]]:
    if isinstance(value, torch.Tensor):
        return [(path, value)]
    if depth > MAX_DEPTH or isinstance(value, (nn.Module, type, *_PLAIN)):
        return []
    if isinstance(value, (list, tuple)):
        items = list(enumerate(value))
    elif isinstance(value, dict):
        items = list(value.items())
    elif hasattr(value, "__dict__"):
        items = [(f".{k}", v) for k, v in vars(value).items()]
    else:
        return []
    return [leaf for key, item in items for leaf in _attribute_tensors(item, (*path, key), depth + 1)]


def output_name(path: OutputPath) -> str:
    """``logits``, ``hidden_states[2]``, ``[0]``; ``output`` for a bare tensor."""
    if not path:
        return "output"
    head = path[0] if isinstance(path[0], str) else f"[{path[0]}]"
    return head + "".join(k if isinstance(k, str) and k.startswith(".") else f"[{k!r}]" if isinstance(k, str)
                          else f"[{k}]" for k in path[1:])
