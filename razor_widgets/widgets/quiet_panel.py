"""A panel of widgets whose changes report to the explorer, except while it moves them itself."""
from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any


class QuietPanel:
    """A change of a watched widget calls ``on_change(key, value)``, except inside ``quiet()``."""

    def __init__(self, on_change: Callable[[Any, Any], None]) -> None:
        self._on_change = on_change
        self._quiet = False

    def _observer(self, key: Any) -> Callable[[dict], None]:
        def observe(change: dict) -> None:
            if not self._quiet:
                self._on_change(key, change["new"])
        return observe

    @contextlib.contextmanager
    def quiet(self) -> Iterator[None]:
        """Set widget values without calling ``on_change``."""
        previous, self._quiet = self._quiet, True
        try:
            yield
        finally:
            self._quiet = previous
