"""BaseMutable: the searchable part of a model, with a current choice that can be fixed."""
from __future__ import annotations

from abc import abstractmethod
from typing import Any

from torch import nn


class BaseMutable(nn.Module):
    """A module-level switch: ``current_choice`` selects what it does; ``fix_chosen`` freezes it."""

    def __init__(self, alias: str | None = None, init_cfg: dict | None = None) -> None:
        super().__init__()
        # plain attributes straight into __dict__: nn.Module.__setattr__ is slow, and a model
        # holds hundreds of mutables
        self.__dict__.update(alias=alias, init_cfg=init_cfg, _is_fixed=False, _current_choice=None)

    @property
    def current_choice(self) -> Any:
        """What the mutable is set to now (its meaning is the subclass's: a mask, a count, an op name)."""
        return self._current_choice

    @current_choice.setter
    def current_choice(self, choice: Any) -> None:
        self._current_choice = choice

    @property
    def is_fixed(self) -> bool:
        """Whether ``fix_chosen`` has frozen the choice; once True it cannot be set back to False."""
        return self._is_fixed

    @is_fixed.setter
    def is_fixed(self, is_fixed: bool) -> None:
        if self._is_fixed and not is_fixed:
            raise AttributeError(f"{type(self).__name__} is fixed and cannot be unfixed")
        self._is_fixed = is_fixed

    def fix_chosen(self, chosen: Any = None) -> None:
        """Freeze the mutable at ``chosen`` (at its current choice when None)."""
        if chosen is not None:
            self.current_choice = chosen
        self.is_fixed = True

    def dump_chosen(self) -> Any:
        """What ``fix_chosen`` needs to rebuild the current state."""
        return self.current_choice

    @property
    @abstractmethod
    def num_choices(self) -> int:
        """How many choices there are."""
