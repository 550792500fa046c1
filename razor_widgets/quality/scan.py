"""sensitivity_scan: each unit alone pruned to each ratio, every other unit full, through the masks.

A scan of one *layer* inside a coupled group either prunes nothing or breaks the shapes, so
coupled layers look robust; a unit is the whole coupled group, so this scan is faithful: each
score is exactly ``eval_fn`` of the model that choice exports. There is no export and no copy
of the model per step. It costs ``units x ratios + 1`` calls of ``eval_fn``.
"""
from __future__ import annotations

import concurrent.futures as cf
import math
import numbers
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from ..mutables.block_mutable import DROP, BlockMutable
from ..mutables.unit_choices import choice_for_fraction
from .evaluation import EvalFn, evaluation_error, restored_choices
from .executors import ScanPayload, WorkerState, in_process, run_task, shipped
from .sensitivity import Sensitivity

__all__ = ["DEFAULT_RATIOS", "ScanTask", "sensitivity_scan", "check_ratios"]

DEFAULT_RATIOS = (0.25, 0.5, 0.75)
Progress = bool | Callable[[int, int], Any]


@dataclass(frozen=True)
class ScanTask:
    """One evaluation: ``unit`` (None: the baseline) at ``ratio``, applied as ``choice``."""

    unit: Any
    ratio: float | None
    choice: Any
    kept: int | None = None


def check_ratios(ratios: Iterable[float]) -> tuple[float, ...]:
    """The ratios, ascending and without repeats; ValueError naming one outside (0, 1]."""
    if isinstance(ratios, (str, bytes)) or not isinstance(ratios, Iterable):
        raise TypeError(f"ratios must be a list of numbers in (0, 1], got {ratios!r}")
    out = []
    for ratio in ratios:
        if isinstance(ratio, bool) or not isinstance(ratio, numbers.Real):
            raise TypeError(f"ratio {ratio!r} is not a number; ratios are kept fractions in (0, 1]")
        if not (math.isfinite(float(ratio)) and 0.0 < float(ratio) <= 1.0):
            raise ValueError(f"ratio {ratio!r} is outside (0, 1] (a ratio is the kept fraction of a unit's channels)")
        out.append(float(ratio))
    if not out:
        raise ValueError("give at least one ratio in (0, 1]")
    return tuple(sorted(set(out)))


def _check_units(mutator: Any, units: Iterable[Any] | None) -> list[Any]:
    if getattr(mutator, "model", None) is None:
        raise RuntimeError("call prepare_from_supernet(model) before scanning")
    if units is None:  # every unit, and every block that can be dropped (its one "ratio": dropped)
        return [*mutator.mutable_units, *getattr(mutator, "removable_blocks", [])]
    if isinstance(units, (str, bytes)):
        units = [units]
    is_block = getattr(mutator, "is_block_key", lambda name: False)
    return [mutator.block(name) if is_block(name) else mutator.unit(name) for name in units]  # KeyError if unknown


def _plan(mutator: Any, units: list[Any], ratios: tuple[float, ...]) -> list[ScanTask]:
    """The baseline and every (unit, ratio), with the choice and the channels it keeps."""
    tasks = [ScanTask(None, None, None)]
    with restored_choices(mutator):
        for unit in units:
            if isinstance(unit, BlockMutable):  # a block has one "ratio": dropped (0 kept)
                tasks.append(ScanTask(unit.name, 0.0, DROP, 0))
                continue
            for ratio in ratios:
                choice = choice_for_fraction(unit, ratio)
                unit.set_valid_choice(choice)
                tasks.append(ScanTask(unit.name, ratio, choice, unit.activated_channels))
    return tasks


def sensitivity_scan(mutator: Any, eval_fn: EvalFn, ratios: Iterable[float] = DEFAULT_RATIOS,
                     units: Iterable[Any] | None = None, executor: cf.Executor | None = None,
                     progress: Progress = True) -> Sensitivity:
    """Score every unit alone at every ratio (the kept fraction of its channels), every other
    unit full: ``table[unit][ratio] = eval_fn(model)`` with that choice, ``baseline`` the full
    model's score. ``eval_fn(model) -> float``, higher is better.

    ``units``: names (default: every mutable unit). ``executor``: any
    ``concurrent.futures.Executor`` (threads, processes, ``dask.distributed.Client(...)
    .get_executor()``); each worker evaluates its own copy, results equal the serial scan.
    ``progress``: a ``tqdm.auto`` bar (True), none (False), or ``callback(done, total)``.
    The mutator's choices are as they were afterwards, also when ``eval_fn`` raises (an
    ``EvaluationError`` naming the unit and ratio) and on KeyboardInterrupt.
    """
    if not callable(eval_fn):
        raise TypeError(f"eval_fn must be callable (model -> float), got {type(eval_fn).__name__}")
    ratios = check_ratios(ratios)
    chosen = _check_units(mutator, units)
    if executor is not None and not callable(getattr(executor, "submit", None)):
        raise TypeError(f"executor must be a concurrent.futures.Executor, got {type(executor).__name__}")
    tasks = _plan(mutator, chosen, ratios)
    bar = _progress_bar(progress, len(tasks))
    try:
        if executor is None:
            scores = _run_serial(mutator, eval_fn, tasks, bar)
        else:
            scores = _run_parallel(mutator, eval_fn, tasks, executor, bar)
    finally:
        bar.close()
    return _sensitivity(chosen, tasks, scores)


def _sensitivity(units: list[Any], tasks: list[ScanTask], scores: dict[ScanTask, float]) -> Sensitivity:
    table: dict[Any, dict[float, float]] = {u.name: {} for u in units}
    kept: dict[Any, dict[float, int]] = {u.name: {} for u in units}
    for task in tasks[1:]:
        table[task.unit][task.ratio] = scores[task]
        kept[task.unit][task.ratio] = task.kept
    return Sensitivity(scores[tasks[0]], table, kept, {u.name: u.num_channels for u in units})


def _run_serial(mutator: Any, eval_fn: EvalFn, tasks: list[ScanTask], bar: Any) -> dict[ScanTask, float]:
    scores = {}
    with restored_choices(mutator):
        mutator.set_max_choices()
        state = WorkerState(mutator.model, {u.name: u for u in _units_and_blocks(mutator)}, eval_fn)
        for task in tasks:
            try:
                scores[task] = state.evaluate(task.unit, task.choice)
            except Exception as exc:
                raise evaluation_error(exc, task.unit, task.ratio) from exc
            bar.update(1)
    return scores


def _run_parallel(mutator: Any, eval_fn: EvalFn, tasks: list[ScanTask], executor: cf.Executor,
                  bar: Any) -> dict[ScanTask, float]:
    with restored_choices(mutator):
        mutator.set_max_choices()
        payload = ScanPayload(mutator, eval_fn, in_process(executor))  # the model at full choices, pickled once
    scores = {}
    with shipped(executor, payload) as source:
        futures: dict[cf.Future, ScanTask] = {}
        try:
            for task in tasks:
                futures[executor.submit(run_task, source, payload.token, task.unit, task.choice)] = task
            for future in cf.as_completed(futures):
                task = futures[future]
                try:
                    scores[task] = future.result()
                except Exception as exc:
                    raise evaluation_error(exc, task.unit, task.ratio) from exc
                bar.update(1)
        finally:
            for future in futures:
                future.cancel()
    return scores


def _units_and_blocks(mutator: Any) -> list[Any]:
    return [*mutator.mutable_units, *getattr(mutator, "removable_blocks", [])]


class _Callback:
    def __init__(self, callback: Callable[[int, int], Any], total: int) -> None:
        self.callback, self.total, self.done = callback, total, 0
        callback(0, total)

    def update(self, n: int) -> None:
        self.done += n
        self.callback(self.done, self.total)

    def close(self) -> None:
        pass


def _progress_bar(progress: Progress, total: int) -> Any:
    if callable(progress):
        return _Callback(progress, total)
    from tqdm.auto import tqdm
    return tqdm(total=total, desc="sensitivity scan", unit="eval", disable=not progress, leave=True)
