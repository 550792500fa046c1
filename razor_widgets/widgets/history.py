"""Undo and redo over whole choice sets, with a drag of one slider kept as one step."""
from __future__ import annotations

from typing import Any


class ChoiceHistory:
    """A list of choice sets and a position in it.

    ``record(choices, key)`` adds a step; a record with the same ``key`` as the step just
    recorded (moves of one slider, one after another) replaces that step instead, so one undo
    takes a whole drag back. ``key=None`` always adds a step; undo and redo end a drag.
    """

    def __init__(self, initial: dict[Any, Any], limit: int = 500) -> None:
        self.limit = int(limit)
        self._states: list[dict[Any, Any]] = [dict(initial)]
        self._index = 0
        self._open_key: Any = None  # the key of the last step while it may still grow
        self.plans: list[Any] = []  # the plans evaluated, fitted or exported: PlanEntry records (plan_entries.py)

    @property
    def current(self) -> dict[Any, Any]:
        """A copy of the choice set at the current position."""
        return dict(self._states[self._index])

    @property
    def can_undo(self) -> bool:
        """Whether there is a step to go back to."""
        return self._index > 0

    @property
    def can_redo(self) -> bool:
        """Whether an undone step can be taken again."""
        return self._index < len(self._states) - 1

    def __len__(self) -> int:
        return len(self._states)

    def record(self, choices: dict[Any, Any], key: Any = None) -> None:
        """Add ``choices`` as a new step (or replace the last one: see the class docstring)."""
        if key is not None and key == self._open_key:
            self._states[self._index] = dict(choices)
            return
        del self._states[self._index + 1:]
        self._states.append(dict(choices))
        if len(self._states) > self.limit:
            del self._states[0]
        self._index = len(self._states) - 1
        self._open_key = key

    def record_one(self, name: Any, choice: Any, key: Any) -> None:
        """Record a change of one unit: cheap while the last step carries ``key``."""
        if key is not None and key == self._open_key:
            self._states[self._index][name] = choice
            return
        self.record({**self._states[self._index], name: choice}, key)

    def undo(self) -> dict[Any, Any]:
        """The choice set one step back (the position moves there)."""
        if not self.can_undo:
            raise IndexError("nothing to undo")
        self._index -= 1
        self._open_key = None
        return self.current

    def redo(self) -> dict[Any, Any]:
        """The choice set one step forward (the position moves there)."""
        if not self.can_redo:
            raise IndexError("nothing to redo")
        self._index += 1
        self._open_key = None
        return self.current
