"""Live scores: evaluate the current choices in a background thread, the newest move winning.

A slider must never wait for ``eval_fn``. Each request snapshots the units' masks (cheap:
masks are replaced, never changed in place) and hands them to one worker thread, which
evaluates them on its own copy of the prepared model (made once, and again only when the
weights change), with the user's ``eval_fn`` itself (it must be thread-safe). A request made
while an older one waits cancels it; the result of an older one that was already running is
dropped: only the newest is reported.
"""
from __future__ import annotations

import concurrent.futures as cf
import copy
import threading
from collections.abc import Callable
from typing import Any

from ..quality.executors import WorkerState


def weights_signature(model: Any) -> tuple:
    """Changes whenever a parameter or buffer of ``model`` is written or replaced: their
    version counters and storage addresses (no tensor element is read)."""
    tensors = [*model.parameters(), *model.buffers()]
    return tuple((t._version, t.data_ptr()) for t in tensors)


class LiveScore:
    """``request()`` evaluates the current choices off the main thread; ``on_result(choices,
    score, error)`` hears about the newest only. ``wait()`` blocks until the newest is done."""

    def __init__(self, mutator: Any, eval_fn: Callable, on_result: Callable[[dict, float | None, str | None], Any]
                 ) -> None:
        self.mutator = mutator
        self.eval_fn = eval_fn
        self.on_result = on_result
        self.generation = 0
        self.dropped = 0  # results that a newer request made stale
        self._pool = cf.ThreadPoolExecutor(1, thread_name_prefix="razor-live-score")
        self._future: cf.Future | None = None
        self._copy: tuple[tuple, WorkerState] | None = None
        self._lock = threading.Lock()

    def request(self) -> cf.Future:
        """Evaluate the choices as they are now; an older request still waiting is cancelled."""
        units = [*self.mutator.mutable_units, *getattr(self.mutator, "removable_blocks", [])]  # blocks: keep/drop
        masks = {u.name: u.mutable_channel.snapshot() for u in units}
        choices = self.mutator.current_choices
        signature = weights_signature(self.mutator.model)
        with self._lock:
            self.generation += 1
            generation = self.generation
            if self._future is not None:
                self._future.cancel()
            self._future = self._pool.submit(self._evaluate, generation, signature, masks, choices)
            return self._future

    def _evaluate(self, generation: int, signature: tuple, masks: dict, choices: dict) -> float | None:
        if generation != self.generation:
            self.dropped += 1
            return None
        state = self._state(signature)
        for name, mask in masks.items():
            state.units[name].mutable_channel.restore(mask)
        score, error = None, None
        try:
            score = state.evaluate(None, None)
        except Exception as exc:  # shown in the panel, never raised into a slider
            error = f"{type(exc).__name__}: {exc}"
        if generation != self.generation:
            self.dropped += 1
            return None
        self.on_result(choices, score, error)
        return score

    def _state(self, signature: tuple) -> WorkerState:
        if self._copy is None or self._copy[0] != signature:
            units = {u.name: u for u in [*self.mutator.mutable_units, *getattr(self.mutator, "removable_blocks", [])]}
            model, units = copy.deepcopy((self.mutator.model, units))  # one copy: units keep their layers
            self._copy = (signature, WorkerState(model, units, self.eval_fn))
        return self._copy[1]

    def wait(self, timeout: float | None = None) -> float | None:
        """The newest request's score (None if it was dropped or failed)."""
        future = self._future
        return None if future is None or future.cancelled() else future.result(timeout)

    def close(self) -> None:
        """Stop the scoring thread without waiting; a queued request is cancelled."""
        self._pool.shutdown(wait=False, cancel_futures=True)
