"""Evaluating whole sets of choices through the masks, here or on any ``concurrent.futures.Executor``.

The same worker machinery as the sensitivity scan (``quality/executors.py``): serially, one
``WorkerState`` sets each candidate's choices, calls ``eval_fn(model)`` and puts every unit back;
with an executor, the prepared model, its units and ``eval_fn`` are pickled once and unpacked
once per worker thread, so threads never share masks.
"""
from __future__ import annotations

import concurrent.futures as cf
from typing import Any

from ..quality.executors import ScanPayload, WorkerState, in_process, run_choices_task, shipped

__all__ = ["evaluate_all"]


def _failed(exc: BaseException) -> RuntimeError:
    """Any failure of the user's ``eval_fn``, named as such."""
    return RuntimeError(f"evaluating a candidate of the measured budget: {type(exc).__name__}: {exc}")


def evaluate_all(mutator: Any, eval_fn: Any, candidates: list[dict[Any, Any]], executor: Any, bar: Any
                 ) -> list[float]:
    """The score of every set of choices in ``candidates``, in order."""
    mutator = _channel_mutator(mutator)
    if executor is None:
        units = {u.name: u for u in [*mutator.mutable_units, *getattr(mutator, "block_units", [])]}  # blocks too
        state = WorkerState(mutator.model, units, eval_fn)
        scores = []
        for choices in candidates:
            try:
                scores.append(state.evaluate_choices(choices))
            except Exception as exc:
                raise _failed(exc) from exc
            bar.update(1)
        return scores
    if not callable(getattr(executor, "submit", None)):
        raise TypeError(f"executor must be a concurrent.futures.Executor, got {type(executor).__name__}")
    payload = ScanPayload(mutator, eval_fn, in_process(executor))
    with shipped(executor, payload) as source:
        futures = [executor.submit(run_choices_task, source, payload.token, choices) for choices in candidates]
        try:
            for future in cf.as_completed(futures):
                try:
                    future.result()
                except Exception as exc:
                    raise _failed(exc) from exc
                bar.update(1)
            return [f.result() for f in futures]
        finally:
            for future in futures:
                future.cancel()


def _channel_mutator(counter: Any) -> Any:
    """The ``ChannelMutator`` behind what counts (itself, a session's, a path counter's)."""
    for attr in ("channel_mutator", "mutator"):
        inner = getattr(counter, attr, None)
        if inner is not None and getattr(inner, "model", None) is not None:
            return _channel_mutator(inner)
    return counter
