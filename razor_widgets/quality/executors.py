"""Scan tasks on any ``concurrent.futures.Executor``: threads, processes or a Dask cluster.

Each worker evaluates on its own copy of the prepared model, sent once as a cloudpickle payload
(how depends on the executor: in memory, a temporary file, a Dask scatter) and unpacked once per
worker thread; a task carries only a unit name and a choice. Details: docs/executors.md.
"""
from __future__ import annotations

import concurrent.futures as cf
import contextlib
import os
import tempfile
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from .evaluation import EvalFn, to_score

__all__ = ["WorkerState", "ScanPayload", "PayloadFile", "InProcess", "in_process", "run_task", "run_choices_task",
           "shipped"]

_STATES: dict[int, tuple[str, WorkerState]] = {}  # thread id -> (payload token, its state)
_STATES_LOCK = threading.Lock()


class WorkerState:
    """A prepared model, its units by name and ``eval_fn``: evaluates one unit at one choice."""

    def __init__(self, model: nn.Module, units: dict[Any, Any], eval_fn: EvalFn) -> None:
        self.model = model
        self.units = units
        self.eval_fn = eval_fn

    def evaluate(self, unit_name: Any, choice: Any) -> float:
        """``eval_fn`` with ``unit_name`` at ``choice`` (None: the model as it is), the unit
        put back afterwards; ValueError when the result is not a finite number."""
        return self.evaluate_choices({} if unit_name is None else {unit_name: choice})

    def evaluate_choices(self, choices: dict[Any, Any]) -> float:
        """``eval_fn`` with every unit named in ``choices`` set to its choice (a whole candidate
        of a budget, or one unit of a scan); each of them put back afterwards."""
        touched = [self.units[name] for name in choices]
        saved = [(u.mutable_channel, u.mutable_channel.snapshot()) for u in touched]
        try:
            for unit, choice in zip(touched, choices.values()):
                unit.set_valid_choice(choice)
            return to_score(self.eval_fn(self.model))
        finally:
            for mutable, state in reversed(saved):
                mutable.restore(state)


@dataclass(frozen=True)
class PayloadFile:
    """A payload written to a file that worker processes of this machine read once."""

    path: str


@dataclass(frozen=True)
class InProcess:
    """A payload for threads of this process: the model pickled, ``eval_fn`` itself (threads
    share it, so it need not pickle)."""

    blob: bytes
    eval_fn: EvalFn


class ScanPayload:
    """The prepared model (at the choices it has now) and its units, pickled once, with
    ``eval_fn`` (by cloudpickle) unless the workers are threads of this process."""

    def __init__(self, mutator: Any, eval_fn: EvalFn, in_process: bool = False) -> None:
        import cloudpickle  # only parallel scans need it (the [distributed] extra)

        self.token = uuid.uuid4().hex
        self.eval_fn = eval_fn if in_process else None
        units = {u.name: u for u in [*mutator.mutable_units, *getattr(mutator, "block_units", [])]}
        state = {"model": mutator.model, "units": units, "eval_fn": None if in_process else eval_fn,
                 "main_pid": os.getpid()}
        self.blob = cloudpickle.dumps(state)


def run_task(source: Any, token: str, unit_name: Any, choice: Any) -> float:
    """The function every worker runs: the score of ``unit_name`` at ``choice``."""
    return _state_for(source, token).evaluate(unit_name, choice)


def run_choices_task(source: Any, token: str, choices: dict[Any, Any]) -> float:
    """The function every worker runs for a whole set of choices: its score."""
    return _state_for(source, token).evaluate_choices(choices)


def _state_for(source: Any, token: str) -> WorkerState:
    thread = threading.get_ident()
    with _STATES_LOCK:
        held = _STATES.get(thread)
    if held is not None and held[0] == token:
        return held[1]
    import cloudpickle

    eval_fn = source.eval_fn if isinstance(source, InProcess) else None
    if isinstance(source, InProcess):
        source = source.blob
    elif isinstance(source, PayloadFile):
        with open(source.path, "rb") as f:
            source = f.read()
    data = cloudpickle.loads(source)
    if data["main_pid"] != os.getpid():
        torch.set_num_threads(1)
    state = WorkerState(data["model"], data["units"], eval_fn or data["eval_fn"])
    with _STATES_LOCK:
        _STATES[thread] = (token, state)  # one state per thread: a new scan replaces the last
    return state


def _forget(token: str) -> None:
    """Drop the states this process unpacked for ``token`` (thread pools of this process)."""
    with _STATES_LOCK:
        for thread in [t for t, (tok, _) in _STATES.items() if tok == token]:
            del _STATES[thread]


def _dask_client(executor: cf.Executor) -> Any:
    client = getattr(executor, "_client", None)
    return client if client is not None and hasattr(client, "scatter") else None


def in_process(executor: cf.Executor) -> bool:
    """Whether the executor's workers are threads of this process."""
    return isinstance(executor, cf.ThreadPoolExecutor)


@contextlib.contextmanager
def shipped(executor: cf.Executor, payload: ScanPayload) -> Iterator[Any]:
    """What to hand every task so that the payload reaches each worker once; cleaned up after."""
    client = _dask_client(executor)
    path = source = None
    try:
        if client is not None:
            source = client.scatter(payload.blob, broadcast=True, hash=False)
        elif isinstance(executor, cf.ProcessPoolExecutor):
            fd, path = tempfile.mkstemp(prefix="razor_widgets_scan_", suffix=".pkl")
            with os.fdopen(fd, "wb") as f:
                f.write(payload.blob)
            source = PayloadFile(path)
        elif payload.eval_fn is not None:
            source = InProcess(payload.blob, payload.eval_fn)
        else:
            source = payload.blob
        yield source
    finally:
        _forget(payload.token)
        if path is not None:
            with contextlib.suppress(OSError):
                os.unlink(path)
        if client is not None and source is not None:
            with contextlib.suppress(Exception):
                source.release()
