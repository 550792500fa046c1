"""Mutable values: a searchable parameter (a kernel size, an expand ratio) taken from a list."""
from __future__ import annotations

import random
from typing import Any

from ..registry import MODELS
from .base import BaseMutable
from .derived import DerivedMethodMixin, DerivedMutable, derive_expand_mutable, is_mutable


@MODELS.register_module()
class MutableValue(BaseMutable, DerivedMethodMixin):
    """One of ``value_list``; ``default_value`` (the last value when None) is chosen at first.

    ``value * 4``, ``value * other_mutable`` and ``value // 2`` derive mutables that follow it.
    """

    def __init__(self, value_list: list[Any], default_value: Any = None, alias: str | None = None,
                 init_cfg: dict | None = None) -> None:
        super().__init__(alias=alias, init_cfg=init_cfg)
        value_list = list(value_list)
        if not value_list:
            raise ValueError("value_list must not be empty")
        kinds = {type(v) for v in value_list}
        if len(kinds) > 1:
            raise TypeError(f"all values must have one type, got {sorted(k.__name__ for k in kinds)}")
        self.__dict__["_value_list"] = value_list
        self.current_choice = value_list[-1] if default_value is None else default_value

    @property
    def choices(self) -> list[Any]:
        """A copy of ``value_list``."""
        return list(self._value_list)

    @property
    def current_choice(self) -> Any:
        """The chosen value; a setting must be in ``value_list`` (and the fixed value once fixed)."""
        return self._current_choice

    @current_choice.setter
    def current_choice(self, choice: Any) -> None:
        if choice not in self._value_list:
            raise ValueError(f"Expected choice in: {self._value_list}, but got: {choice!r}")
        if self.is_fixed and choice != self._current_choice:
            raise ValueError(f"{type(self).__name__} is fixed at {self._current_choice!r}; cannot choose {choice!r}")
        self._current_choice = choice

    def fix_chosen(self, chosen: Any = None) -> None:
        """Fix the value at ``chosen`` (the current choice when None)."""
        if self.is_fixed:
            raise AttributeError("The mode of current MUTABLE is `fixed`. "
                                 "Please do not call `fix_chosen` function again.")
        if chosen is not None:
            self.current_choice = chosen
        self.is_fixed = True

    @property
    def num_choices(self) -> int:
        """How many values there are."""
        return len(self._value_list)

    def __mul__(self, other: Any) -> DerivedMutable:
        if isinstance(other, (int, float)) and not isinstance(other, bool):
            return derive_expand_mutable(self, other)
        if hasattr(other, "current_mask"):  # a channel mutable times this ratio
            return derive_expand_mutable(other, self)
        if is_mutable(other):
            return derive_expand_mutable(self, other)
        return NotImplemented

    __rmul__ = __mul__

    def __repr__(self) -> str:
        return f"{type(self).__name__}(value_list={self._value_list}, current_choice={self.current_choice})"


@MODELS.register_module()
class OneShotMutableValue(MutableValue):
    """A mutable value for one-shot search: values sorted, the largest chosen at first."""

    def __init__(self, value_list: list[Any], default_value: Any = None, alias: str | None = None,
                 init_cfg: dict | None = None) -> None:
        super().__init__(sorted(value_list), default_value, alias, init_cfg)

    def sample_choice(self) -> Any:
        """A value picked uniformly at random."""
        return random.choice(self._value_list)

    @property
    def max_choice(self) -> Any:
        """The largest value."""
        return self._value_list[-1]

    @property
    def min_choice(self) -> Any:
        """The smallest value."""
        return self._value_list[0]
