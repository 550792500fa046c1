"""A panel of widgets whose changes report to the explorer, except those the explorer made itself.

A value the code sets must never come back as a user action. It can, in two ways: an observer
fires while the code sets it (``quiet()`` silences that), and the browser sends it back later
snapped to the slider's step grid (the kernel sets ``0.953125``, the page answers
``0.9531249999999999``). ``set_value`` remembers what it set, and a value that comes back within
half a step of it is taken for that echo and dropped, until the person moves the widget away.
"""
from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import ipywidgets as widgets

_UNSET = object()


def same_value(widget: widgets.ValueWidget, a: Any, b: Any) -> bool:
    """Whether ``a`` and ``b`` are one position of ``widget``: within half a step on a float
    slider, equal otherwise."""
    if isinstance(widget, (widgets.FloatSlider, widgets.BoundedFloatText)) and a is not None and b is not None:
        return abs(float(a) - float(b)) <= float(widget.step or 0) / 2 + 1e-12
    return a == b


class QuietPanel:
    """A change of a watched widget calls ``on_change(key, value)``, except inside ``quiet()``
    and except the echo of a value ``set_value`` put there."""

    def __init__(self, on_change: Callable[[Any, Any], None]) -> None:
        self._on_change = on_change
        self._quiet = False
        self._set_by_code: dict[Any, Any] = {}
        self.echoes = 0  # echoes dropped so far (what a browser sent back of our own values)

    def watch(self, key: Any, widget: widgets.ValueWidget) -> None:
        """Report changes of ``widget`` under ``key`` (its value now counts as set by the code)."""
        self._set_by_code[key] = widget.value
        widget.observe(self._observer(key, widget), "value")

    def _observer(self, key: Any, widget: widgets.ValueWidget) -> Callable[[dict], None]:
        def observe(change: dict) -> None:
            if self._quiet:
                return
            expected = self._set_by_code.get(key, _UNSET)
            if expected is not _UNSET and same_value(widget, change["new"], expected):
                self.echoes += 1
                return
            self._set_by_code.pop(key, None)  # the person moved it: their next value counts
            self._on_change(key, change["new"])
        return observe

    def set_value(self, key: Any, widget: widgets.ValueWidget, value: Any) -> None:
        """Show ``value`` without reporting it, now or when the browser echoes it."""
        with self.quiet():
            if not same_value(widget, widget.value, value):
                widget.value = value
            self._set_by_code[key] = widget.value

    @contextlib.contextmanager
    def quiet(self) -> Iterator[None]:
        """Set widget values without calling ``on_change``."""
        previous, self._quiet = self._quiet, True
        try:
            yield
        finally:
            self._quiet = previous
