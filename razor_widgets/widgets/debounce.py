"""Run an expensive callback once, a short while after the last of a burst of requests."""
from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from typing import Any


class Debouncer:
    """``schedule()`` asks for ``callback()``; it runs once ``delay`` seconds after the last request.

    In a Jupyter kernel the call is placed on the kernel's event loop (so it runs on the main
    thread, between messages); elsewhere a timer thread makes it. ``delay=0`` runs it at once.
    ``flush()`` runs a pending call now; ``runs`` counts the calls made.
    """

    def __init__(self, callback: Callable[[], Any], delay: float = 0.15) -> None:
        self.callback = callback
        self.delay = float(delay)
        self.runs = 0
        self._due: float | None = None
        self._handle: Any = None
        self._lock = threading.Lock()

    @property
    def pending(self) -> bool:
        """Whether a call has been asked for and not yet made."""
        return self._due is not None

    def schedule(self) -> None:
        """Ask for a call: it runs ``delay`` seconds after the last request (at once when ``delay`` is 0)."""
        if self.delay <= 0:
            self._run()
            return
        with self._lock:
            self._due = time.monotonic() + self.delay
            if self._handle is None:
                self._arm(self.delay)

    def _arm(self, wait: float) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            timer = threading.Timer(wait, self._fire)
            timer.daemon = True
            timer.start()
            self._handle = timer
        else:
            self._handle = loop.call_later(wait, self._fire)

    def _fire(self) -> None:
        with self._lock:
            if self._due is None:
                self._handle = None
                return
            wait = self._due - time.monotonic()
            if wait > 0.001:  # asked again meanwhile: wait for the quiet period
                self._arm(wait)
                return
            self._handle = None
        self._run()

    def flush(self) -> None:
        """Run the pending call now (nothing happens when none is pending)."""
        if self.pending:
            self._run()

    def cancel(self) -> None:
        """Drop the pending call, if any, and stop its timer."""
        with self._lock:
            self._due = None
            handle, self._handle = self._handle, None
        if handle is not None:
            handle.cancel()

    def _run(self) -> None:
        with self._lock:
            self._due = None
        self.runs += 1
        self.callback()
