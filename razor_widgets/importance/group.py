"""Group importance: a channel scored over every parameter slice its unit moves.

The writers' output slices, the readers' input slices (every repeat and expanded copy), the
norms' scales and biases: what each layer offers is its kind's ``output_channel_weights`` and
``input_channel_weights`` (``layers/``). Magnitude: ``sum |w|^p`` per slice; Taylor: the same
with ``p=1`` on ``w * dL/dw`` from calibration batches. Slices are combined by ``reduction`` and
the result normalised by ``normalize``. Formulas and choices: docs/importance.md.
"""
from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

from .criteria import fold

__all__ = ["REDUCTIONS", "NORMALIZERS", "group_slices", "group_magnitude_scores", "normalize_scores",
           "taylor_products"]

REDUCTIONS = ("sum", "mean", "max")
NORMALIZERS = (None, "mean", "max", "gaussian")


def group_slices(unit: Any) -> Iterator[tuple[Any, torch.Tensor]]:
    """``(channel range, tensor)`` for every parameter slice the unit moves: the tensor's dim 0
    holds the range's channels (``start:end``). A tensor two ranges of one side share (a norm
    that both writes and reads the unit) is given once."""
    seen: set[tuple] = set()
    for channel in unit.output_related + unit.input_related:
        kind = getattr(channel.module, "layer_kind", None)
        if kind is None or channel.param_dim is not None:
            continue
        side = kind.output_channel_weights if channel.is_output_channel else kind.input_channel_weights
        for tensor in side(channel.module).values():
            key = (tensor.data_ptr(), tensor.stride(), channel.start, channel.end)
            if key in seen or tensor.dim() < 1 or tensor.shape[0] < channel.end:
                continue
            seen.add(key)
            yield channel, tensor


def _per_slice(unit: Any, p: int, tensors: Any = None) -> list[torch.Tensor]:
    """One score per unit position for each slice: ``sum |w|^p`` over the slice, folded."""
    found = []
    for channel, tensor in group_slices(unit) if tensors is None else tensors:
        w = tensor.detach()[channel.start:channel.end].to(torch.float64)
        w = w.reshape(w.shape[0], -1).abs()
        found.append(fold(unit, channel, (w if p == 1 else w.pow(p)).sum(1)))
    return found


def group_magnitude_scores(unit: Any, p: int = 2, reduction: str = "sum", normalize: str | None = None,
                           tensors: Any = None) -> torch.Tensor:
    """The group magnitude of each position of ``unit``: ``sum |w|^p`` of each slice, combined over
    the slices by ``reduction``, then normalised (zeros where the unit moves no parameter)."""
    slices = _per_slice(unit, p, tensors)
    if not slices:
        return torch.zeros(unit.base_channels, dtype=torch.float64)
    stacked = torch.stack(slices)
    if reduction == "sum":
        scores = stacked.sum(0)
    elif reduction == "mean":
        scores = stacked.mean(0)
    else:
        scores = stacked.max(0).values
    return normalize_scores(scores, normalize)


def normalize_scores(scores: torch.Tensor, normalize: str | None) -> torch.Tensor:
    """Scores divided by their mean or max, or standardised (``gaussian``); unchanged for None.
    A ranking within the unit is the same either way; it matters where units are compared."""
    if normalize is None or not len(scores):
        return scores
    if normalize == "gaussian":
        std = scores.std() if len(scores) > 1 else scores.new_tensor(0.0)
        return (scores - scores.mean()) / (std if std > 0 else 1.0)
    scale = scores.mean() if normalize == "mean" else scores.max()
    return scores / scale if scale > 0 else torch.ones_like(scores)


def check_group_args(p: int, reduction: str, normalize: str | None) -> None:
    """ValueError naming a bad ``p``, ``reduction`` or ``normalize``."""
    if isinstance(p, bool) or p not in (1, 2):
        raise ValueError(f"p must be 1 or 2, got {p!r}")
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {', '.join(REDUCTIONS)}, got {reduction!r}")
    if normalize not in NORMALIZERS:
        raise ValueError(f"normalize must be one of None, 'mean', 'max', 'gaussian', got {normalize!r}")


# -- first-order Taylor over the same slices ----------------------------------------------------
def taylor_products(unit: Any, grads: dict[int, torch.Tensor]) -> list[tuple[Any, torch.Tensor]]:
    """The unit's slices with every parameter replaced by ``w * dL/dw`` (``grads`` by id of the
    raw parameter): the layer kind picks and lays out the product as it lays out the weight."""
    modules = {id(c.module): c.module for c in unit.output_related + unit.input_related
               if c.module is not None and c.param_dim is None}
    with _products(list(modules.values()), grads):
        return [(channel, tensor.clone()) for channel, tensor in group_slices(unit)]


@contextlib.contextmanager
def _products(modules: list[nn.Module], grads: dict[int, torch.Tensor]) -> Iterator[None]:
    """Every parameter of ``modules`` (and their children) replaced by ``w * grad`` while inside
    (a parameter two of them hold is replaced once: its slices stay one tensor)."""
    swapped, done = [], set()
    for module in modules:
        for sub in module.modules():
            params = sub.__dict__.get("_parameters", {})
            for name, param in list(params.items()):
                if param is None or (id(sub), name) in done:
                    continue
                done.add((id(sub), name))
                grad = grads.get(id(param))
                swapped.append((params, name, param))
                params[name] = param.detach() * grad if grad is not None else torch.zeros_like(param)
    try:
        yield
    finally:
        for params, name, param in reversed(swapped):
            params[name] = param
