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
