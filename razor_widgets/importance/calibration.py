"""Calibration data: what criteria that read activations (Taylor, activation) run the model on.

A tensor batch, a list of batches, or any iterable of batches such as a ``DataLoader``; a batch
is the model's input, or a tuple/list whose first item is the input and second the targets, or
a dict with an ``"inputs"``/``"input"``/``"x"`` key (and optionally ``"targets"``/``"target"``/``"y"``).
"""
from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import torch

__all__ = ["Batch", "calibration_batches", "split_batch"]


@dataclass(frozen=True)
class Batch:
    """One calibration batch: the model's input and, where the data has them, the targets."""

    inputs: Any
    targets: Any = None


def split_batch(batch: Any) -> Batch:
    """A batch of a DataLoader (or a list) as inputs and targets."""
    if isinstance(batch, Batch):
        return batch
    if isinstance(batch, dict):
        for key in ("inputs", "input", "x"):
            if key in batch:
                return Batch(batch[key], batch.get("targets", batch.get("target", batch.get("y"))))
        raise ValueError(f"a calibration batch dict needs an 'inputs', 'input' or 'x' key, got {list(batch)}")
    if isinstance(batch, (tuple, list)) and batch:
        return Batch(batch[0], batch[1] if len(batch) > 1 else None)
    return Batch(batch)


def calibration_batches(calibration: Any) -> Iterator[Batch]:
    """The batches of ``calibration``: a tensor (one batch), a list of batches, or any
    iterable of batches (a ``DataLoader``). Raises ValueError on None or no batch at all."""
    if calibration is None:
        raise ValueError("this needs calibration data: a tensor batch, a list of batches or a DataLoader")
    if isinstance(calibration, (torch.Tensor, Batch, dict)):
        yield split_batch(calibration)
        return
    if not isinstance(calibration, Iterable):
        raise TypeError(f"calibration data must be a tensor, a list of batches or a DataLoader, "
                        f"got {type(calibration).__name__}")
    count = 0
    for batch in calibration:
        count += 1
        yield split_batch(batch)
    if not count:
        raise ValueError("the calibration data holds no batch")
