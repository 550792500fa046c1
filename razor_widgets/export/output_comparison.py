"""Comparing what two models return: any pytree of tensors (tuples, dicts, ModelOutput objects),
tensors within a tolerance relative to the output's largest magnitude, other leaves by ``==``."""
from __future__ import annotations

from typing import Any

import torch
from torch.utils._pytree import keystr, tree_flatten_with_path

# error allowed, as a fraction of the largest magnitude of an output tensor
RTOL = {torch.float64: 1e-7, torch.float32: 1e-4, torch.float16: 1e-2, torch.bfloat16: 5e-2}


def compare_outputs(expected: Any, actual: Any, rtol: float = RTOL[torch.float32]) -> str | None:
    """None when ``actual`` matches ``expected`` (any pytree of tensors: tuples, dicts,
    ModelOutput objects), else what differs first. Tensors match when
    ``|a - b| <= rtol * max|a| + tiny`` (non-finite values must be equal); other leaves by ``==``."""
    exp_leaves, exp_spec = tree_flatten_with_path(expected)
    act_leaves, act_spec = tree_flatten_with_path(actual)
    if exp_spec != act_spec:
        return (f"the exported model returns {len(act_leaves)} outputs ({structure_kind(actual)}) where the masked "
                f"model returns {len(exp_leaves)} ({structure_kind(expected)})")
    for (path, a), (_, b) in zip(exp_leaves, act_leaves):
        problem = compare_leaf(a, b, rtol)
        if problem is not None:
            where = f"output {keystr(path)}" if path else "the output"
            return f"{where} {problem}"
    return None


def structure_kind(tree: Any) -> str:
    """What a model output is, for messages: ``tuple``, ``dict``, ``Tensor``..."""
    return type(tree).__name__


def compare_leaf(a: Any, b: Any, rtol: float) -> str | None:
    """None when two output leaves match (tensors within ``rtol``, others by ``==``), else what differs."""
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
