"""The evaluation contract: ``eval_fn(model) -> float`` (higher is better) and calibration data.

``eval_fn`` gets the masked model (pruned channels exactly zero, as exported), must not change
its weights, and returns one finite number; anything else, or an exception, raises
:class:`EvaluationError` naming the unit and ratio. Calibration data (``importance/calibration.py``,
re-exported here) is a tensor batch, a list of batches or a ``DataLoader``. In full: docs/evaluation.md.
"""
from __future__ import annotations

import contextlib
import math
import numbers
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import nn

from ..importance.calibration import Batch, calibration_batches, split_batch

__all__ = ["EvalFn", "EvaluationError", "Batch", "calibration_batches", "split_batch", "to_score",
           "describe", "restored_choices"]

EvalFn = Callable[[nn.Module], float]


class EvaluationError(RuntimeError):
    """``eval_fn`` failed (raised, or returned no finite number) for one unit and ratio."""

    def __init__(self, message: str, unit: Any = None, ratio: float | None = None) -> None:
        super().__init__(message)
        self.unit = unit
        self.ratio = ratio


def describe(unit: Any, ratio: float | None) -> str:
    """What is being evaluated, in words: 'unit 'x' at ratio 0.5' or 'the full model (baseline)'."""
    if unit is None:
        return "the full model (baseline)"
    return f"unit {unit!r} at ratio {ratio:g}"


def to_score(value: Any) -> float:
    """``value`` as a float score; ValueError when it is not one finite number."""
    if isinstance(value, torch.Tensor):
        if value.numel() != 1:
            raise ValueError(f"eval_fn returned a tensor of shape {tuple(value.shape)}, not one number")
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"eval_fn returned {value!r} ({type(value).__name__}), not a number")
    score = float(value)
    if not math.isfinite(score):
        raise ValueError(f"eval_fn returned {score!r}, not a finite number")
    return score


def evaluation_error(exc: BaseException, unit: Any, ratio: float | None) -> EvaluationError:
    """The error to raise for ``exc`` met while evaluating ``unit`` at ``ratio``."""
    if isinstance(exc, EvaluationError):
        return exc
    what = describe(unit, ratio)
    if isinstance(exc, ValueError) and str(exc).startswith("eval_fn returned"):
        return EvaluationError(f"evaluating {what}: {exc}", unit, ratio)
    return EvaluationError(f"evaluating {what}: {type(exc).__name__}: {exc}", unit, ratio)


@contextlib.contextmanager
def restored_choices(mutator: Any) -> Iterator[None]:
    """Every unit's state is put back on leaving, also after an error or KeyboardInterrupt.

    States are the units' masks (for ``L1``-style units the exact channels kept), so nothing
    is recomputed on the way back."""
    units = [*mutator.mutable_units, *getattr(mutator, "removable_blocks", [])]  # blocks' choices too
    saved = [(u.mutable_channel, u.mutable_channel.snapshot()) for u in units]
    try:
        yield
    finally:
        for mutable, state in saved:
            mutable.restore(state)
