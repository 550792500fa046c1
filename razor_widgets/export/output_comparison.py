"""Comparing what two models return, walked node by node: tensors within a tolerance relative to
the output's largest magnitude, other leaves by ``==``; tuples, named tuples, lists, dicts
(``ModelOutput``), dataclasses and registered pytree nodes (with or without key functions) by what
they hold. A value it cannot walk is never an error: it is listed as not compared, by type."""
from __future__ import annotations

import dataclasses
from typing import Any

import torch
from torch.utils import _pytree

from ..channels.model_outputs import NotNarrowed
from ..trace.structured_values import held_tensors

# error allowed, as a fraction of the largest magnitude of an output tensor
RTOL = {torch.float64: 1e-7, torch.float32: 1e-4, torch.float16: 1e-2, torch.bfloat16: 5e-2}
MAX_DEPTH = 32


def compare_outputs(expected: Any, actual: Any, rtol: float = RTOL[torch.float32],
                    unchecked: list[str] | None = None) -> str | None:
    """None when ``actual`` matches ``expected``, else what differs first. Tensors match when
    ``|a - b| <= rtol * max|a| + tiny`` (non-finite values must be equal); other leaves by ``==``.
    Containers (tuples, named tuples, lists, dicts, dataclasses, registered pytree nodes) are
    compared by what they hold. Values that cannot be compared (no value equality, ``==`` raising,
    nested deeper than ``MAX_DEPTH``) are appended to ``unchecked`` as ``"<where> (<type>)"``."""
    skipped = unchecked if unchecked is not None else []
    return _compare(expected, actual, "", rtol, skipped, 0)


def structure_kind(tree: Any) -> str:
    """What a model output is, for messages: ``tuple``, ``dict``, ``Tensor``..."""
    return type(tree).__name__


def _where(path: str) -> str:
    return f"output {path}" if path else "the output"


def _compare(a: Any, b: Any, path: str, rtol: float, skipped: list[str], depth: int) -> str | None:
    if isinstance(a, NotNarrowed):
        what = "a tensor of shape " + str(a.shape) + ": " if a.shape is not None else ""
        skipped.append(f"{_where(path)} ({what}{a.reason})")
        return None
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        problem = compare_leaf(a, b, rtol)
        return None if problem is None else f"{_where(path)} {problem}"
    if type(a) is not type(b):
        return f"{_where(path)} is a {type(b).__name__} where the masked model gives a {type(a).__name__}"
    if depth > MAX_DEPTH:
        skipped.append(f"{_where(path)} ({type(a).__name__}, nested deeper than {MAX_DEPTH})")
        return None
    children = _children(a, b)
    if children is None:
        return _compare_plain(a, b, path, skipped)
    if isinstance(children, str):
        return f"{_where(path)} ({type(a).__name__}) {children}"
    for key, x, y in children:
        problem = _compare(x, y, path + key, rtol, skipped, depth + 1)
        if problem is not None:
            return problem
    return None


def _children(a: Any, b: Any) -> list[tuple[str, Any, Any]] | str | None:
    """The pairs of children of two containers of one type with their keys; a str where their
    structures differ; None where ``a`` is no container this walk knows."""
    if isinstance(a, tuple) and hasattr(a, "_fields"):
        return [(f".{k}", getattr(a, k), getattr(b, k)) for k in a._fields]
    if isinstance(a, (list, tuple)):
        if len(a) != len(b):
            return f"has {len(b)} items where the masked model's has {len(a)}"
        return [(f"[{i}]", x, y) for i, (x, y) in enumerate(zip(a, b))]
    if isinstance(a, dict):
        if list(a) != list(b):
            return f"has keys {list(b)!r} where the masked model's has {list(a)!r}"
        return [(f"[{k!r}]", a[k], b[k]) for k in a]
    if dataclasses.is_dataclass(a) and not isinstance(a, type):
        return [(f".{f.name}", getattr(a, f.name), getattr(b, f.name)) for f in dataclasses.fields(a)]
    node = _pytree.SUPPORTED_NODES.get(type(a))
    if node is None:
        return _attributes(a, b)
    (xs, context_a), (ys, context_b) = node.flatten_fn(a), node.flatten_fn(b)
    if len(xs) != len(ys) or not _same_context(context_a, context_b):
        return (f"holds {len(ys)} values (context {context_b!r}) where the masked model's holds "
                f"{len(xs)} ({context_a!r})")
    return [(f".<{type(a).__name__} child {i}>", x, y) for i, (x, y) in enumerate(zip(xs, ys))]


def _attributes(a: Any, b: Any) -> list[tuple[str, Any, Any]] | str | None:
    """An object without value equality that holds tensors in its attributes (an HF cache): compared
    by its attributes; None for any other object (compared by ``==``, or reported)."""
    if type(a).__eq__ is not object.__eq__ or not hasattr(a, "__dict__") or not hasattr(b, "__dict__") \
            or not held_tensors({"": b}):  # the export's: the masked one's may hold NotNarrowed instead
        return None
    if list(vars(a)) != list(vars(b)):
        return f"has attributes {list(vars(b))!r} where the masked model's has {list(vars(a))!r}"
    return [(f".{k}", x, vars(b)[k]) for k, x in vars(a).items()]


def _same_context(a: Any, b: Any) -> bool:
    try:
        return bool(a == b)
    except Exception:  # a context without a truth value (tensors): the children say what differs
        return True


def _compare_plain(a: Any, b: Any, path: str, skipped: list[str]) -> str | None:
    if type(a).__eq__ is object.__eq__ and a is not b:  # no value equality (an HF DynamicCache)
        skipped.append(f"{_where(path)} ({type(a).__name__}: no value equality, not a container the check walks)")
        return None
    try:
        same = bool(a == b)
    except Exception as error:  # values whose == raises or has no truth value
        skipped.append(f"{_where(path)} ({type(a).__name__}: == raised {type(error).__name__})")
        return None
    return None if same else f"{_where(path)} is {b!r} where the masked model gives {a!r}"


def compare_leaf(a: Any, b: Any, rtol: float) -> str | None:
    """None when two output leaves match (tensors within ``rtol``, others by ``==``), else what differs."""
    if not isinstance(a, torch.Tensor) or not isinstance(b, torch.Tensor):
        if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
            return f"is a {type(b).__name__} where the masked model gives a {type(a).__name__}"
        return _compare_plain(a, b, "", [])
    if a.shape != b.shape:
        return f"has shape {tuple(b.shape)} where the masked model's has {tuple(a.shape)}"
    if a.dtype != b.dtype:
        return f"has dtype {b.dtype} where the masked model's has {a.dtype}"
    if not a.is_floating_point() and not a.is_complex():
        return None if torch.equal(a, b) else "differs (exact values expected)"
    return compare_tensors(a.detach(), b.detach(), max(rtol, RTOL.get(a.dtype, rtol)))


def compare_tensors(a: torch.Tensor, b: torch.Tensor, rtol: float) -> str | None:
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
