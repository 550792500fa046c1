"""Evaluating whole sets of choices through the masks, here or on any ``concurrent.futures.Executor``.

Serially, each set of choices is applied to the mutator, ``eval_fn(model)`` is called and every
unit is put back. With an executor, the prepared model, its units and ``eval_fn`` are pickled once
(cloudpickle); the bytes travel with every task (fine for the small models a measured budget
evaluates many times) and are unpacked once per worker thread, which sets each task's choices
on its own copy (threads never share masks).
"""
from __future__ import annotations

import concurrent.futures as cf
import math
import os
import threading
import uuid
from typing import Any

import torch

__all__ = ["evaluate_all", "evaluate_choices"]

_STATES: dict[tuple[int, str], Any] = {}  # (thread id, payload token) -> (model, units, eval_fn)
_LOCK = threading.Lock()


def _score(value: Any) -> float:
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(float(value)):
        raise ValueError(f"eval_fn returned {value!r}, not one finite number")
    return float(value)


def evaluate_choices(model: Any, units: dict[Any, Any], eval_fn: Any, choices: dict[Any, Any]) -> float:
    """``eval_fn(model)`` with ``choices`` set on ``units`` (by name); every unit put back after."""
    saved = [(u.mutable_channel, u.mutable_channel.snapshot()) for u in units.values()]
    try:
        for name, choice in choices.items():
            units[name].set_valid_choice(choice)
        try:
            return _score(eval_fn(model))
        except Exception as exc:  # any failure of the user's eval_fn, named as such
            raise RuntimeError(f"evaluating a candidate of the measured budget: {type(exc).__name__}: {exc}") from exc
    finally:
        for mutable, state in saved:
            mutable.restore(state)


def evaluate_all(mutator: Any, eval_fn: Any, candidates: list[dict[Any, Any]], executor: Any, bar: Any
                 ) -> list[float]:
    """The score of every set of choices in ``candidates``, in order."""
    mutator = _channel_mutator(mutator)
    units = {u.name: u for u in [*mutator.mutable_units, *getattr(mutator, "block_units", [])]}  # blocks too
    if executor is None:
        scores = []
        for choices in candidates:
            scores.append(evaluate_choices(mutator.model, units, eval_fn, choices))
            bar.update(1)
        return scores
    if not callable(getattr(executor, "submit", None)):
        raise TypeError(f"executor must be a concurrent.futures.Executor, got {type(executor).__name__}")
    import cloudpickle  # parallel evaluation only (the [distributed] extra)

    token = uuid.uuid4().hex
    blob = cloudpickle.dumps({"model": mutator.model, "units": units, "eval_fn": eval_fn, "pid": os.getpid()})
    futures = [executor.submit(_run, blob, token, choices) for choices in candidates]
    try:
        for future in cf.as_completed(futures):
            future.result()
            bar.update(1)
        return [f.result() for f in futures]
    finally:
        for future in futures:
            future.cancel()
        with _LOCK:
            for key in [k for k in _STATES if k[1] == token]:
                del _STATES[key]


def _channel_mutator(counter: Any) -> Any:
    """The ``ChannelMutator`` behind what counts (itself, a session's, a path counter's)."""
    for attr in ("channel_mutator", "mutator"):
        inner = getattr(counter, attr, None)
        if inner is not None and getattr(inner, "model", None) is not None:
            return _channel_mutator(inner)
    return counter


def _run(blob: bytes, token: str, choices: dict[Any, Any]) -> float:
    """What a worker runs: unpack the payload once per thread, then evaluate ``choices``."""
    key = (threading.get_ident(), token)
    with _LOCK:
        state = _STATES.get(key)
    if state is None:
        import cloudpickle

        state = cloudpickle.loads(blob)
        if state["pid"] != os.getpid():
            torch.set_num_threads(1)
        with _LOCK:
            _STATES[key] = state
    return evaluate_choices(state["model"], state["units"], state["eval_fn"], choices)
