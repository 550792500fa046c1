"""Module mutables: a searchable block that runs one of several candidate ops (reference 002)."""
from __future__ import annotations

import random
from abc import ABCMeta, abstractmethod
from typing import Any

from torch import nn

from ..registry import MODELS
from .base import BaseMutable


class MutableModule(BaseMutable, metaclass=ABCMeta):
    """A mutable whose choices are operations; ``module_kwargs`` go to every candidate.

    Abstract: subclasses implement ``choices`` and ``forward`` (and the one-shot or
    differentiable methods of their family).
    """

    def __init__(self, module_kwargs: dict[str, Any] | None = None, alias: str | None = None,
                 init_cfg: dict | None = None) -> None:
        super().__init__(alias=alias, init_cfg=init_cfg)
        self.module_kwargs = module_kwargs

    @property
    @abstractmethod
    def choices(self) -> list[Any]:
        """All choices."""

    @abstractmethod
    def forward(self, x: Any) -> Any:
        """Forward computation."""

    @property
    def num_choices(self) -> int:
        """How many candidates there are."""
        return len(self.choices)


class OneShotMutableModule(MutableModule):
    """A module mutable for one-shot search: forward runs the fixed op, the current choice, or,
    while no choice is set, every candidate (``forward_all``)."""

    @abstractmethod
    def sample_choice(self) -> Any:
        """A random choice."""

    @abstractmethod
    def forward_fixed(self, x: Any) -> Any:
        """Forward once ``fix_chosen`` has been called."""

    @abstractmethod
    def forward_choice(self, x: Any, choice: Any) -> Any:
        """Forward with the candidate ``choice``."""

    @abstractmethod
    def forward_all(self, x: Any) -> Any:
        """Forward every candidate (the supernet before any choice)."""

    def forward(self, x: Any) -> Any:
        """Run the fixed op, else the current choice, else every candidate (``forward_all``)."""
        if self.is_fixed:
            return self.forward_fixed(x)
        if self.current_choice is None:
            return self.forward_all(x)
        return self.forward_choice(x, choice=self.current_choice)


def build_candidates(candidates: dict[str, Any] | nn.ModuleDict,
                     module_kwargs: dict[str, Any] | None = None) -> nn.ModuleDict:
    """Candidate ops from a ``nn.ModuleDict`` (used as is) or a dict of modules or configs.

    A config is ``{'type': registered name, **args}``; ``module_kwargs`` (for example the
    block's ``in_channels``, ``out_channels`` and ``stride``) are added to every config.
    """
    if isinstance(candidates, nn.ModuleDict):
        return candidates
    if not isinstance(candidates, dict) or not candidates:
        raise ValueError(f"candidates must be a non-empty dict or nn.ModuleDict, got {candidates!r}")
    ops = nn.ModuleDict()
    for name, op_cfg in candidates.items():
        if isinstance(op_cfg, nn.Module):
            ops[name] = op_cfg
        elif isinstance(op_cfg, dict):
            ops[name] = MODELS.build({**op_cfg, **(module_kwargs or {})})
        else:
            raise TypeError(f"candidate {name!r} must be a config dict or a module, got {type(op_cfg).__name__}")
    return ops


class CandidateOpsMixin:
    """What every searchable op shares: named candidate modules (``self._candidates``) and a
    current choice checked by the op's own ``validate_choice``."""

    _build_ops = staticmethod(build_candidates)

    @property
    def choices(self) -> list[str]:
        """The candidate names, in order."""
        return list(self._candidates.keys())

    @property
    def candidates(self) -> nn.ModuleDict:
        """The candidate modules by name."""
        return self._candidates

    @property
    def current_choice(self) -> str | None:
        """The chosen candidate's name, or None when none is chosen (the supernet's forward)."""
        return self._current_choice

    @current_choice.setter
    def current_choice(self, choice: str | None) -> None:
        """A candidate name, or None for every candidate (the supernet's forward)."""
        self.validate_choice(choice)
        self._current_choice = choice


@MODELS.register_module()
class OneShotMutableOP(CandidateOpsMixin, OneShotMutableModule):
    """Chooses one op among named candidates; the choice is the candidate's name.

    Example::

        op = OneShotMutableOP(candidates=dict(
            conv3x3=dict(type='Conv2d', kernel_size=3, padding=1),
            conv5x5=dict(type='Conv2d', kernel_size=5, padding=2)),
            module_kwargs=dict(in_channels=8, out_channels=8))
        op.current_choice = 'conv5x5'
    """

    def __init__(self, candidates: dict[str, Any] | nn.ModuleDict,
                 module_kwargs: dict[str, Any] | None = None, alias: str | None = None,
                 init_cfg: dict | None = None) -> None:
        super().__init__(module_kwargs=module_kwargs, alias=alias, init_cfg=init_cfg)
        self._candidates = build_candidates(candidates, module_kwargs)
        self._chosen: str | None = None

    def validate_choice(self, choice: Any) -> None:
        """Raise ValueError unless ``choice`` can be set (None means every candidate)."""
        if self.is_fixed and choice != self._chosen:
            raise ValueError(f"{type(self).__name__} is fixed at {self._chosen!r}; cannot choose {choice!r}")
        if choice is not None and choice not in self._candidates:
            raise ValueError(f"{choice!r} is not a candidate; the candidates are {self.choices}")

    def fix_chosen(self, chosen: str | None = None) -> None:
        """Keep only the ``chosen`` candidate (the current choice when None) and fix it."""
        if self.is_fixed:
            raise AttributeError("The mode of current MUTABLE is `fixed`. "
                                 "Please do not call `fix_chosen` function again.")
        chosen = self.current_choice if chosen is None else chosen
        if chosen is None:
            raise ValueError("no choice to fix: set current_choice or pass chosen")
        self.validate_choice(chosen)
        for name in self.choices:
            if name != chosen:
                self._candidates.pop(name)
        self._chosen = chosen
        self._current_choice = chosen
        self.is_fixed = True

    def dump_chosen(self) -> str:
        """The current candidate name; ``ValueError`` when none is chosen."""
        if self.current_choice is None:
            raise ValueError("no candidate is chosen: the op runs every candidate")
        return self.current_choice

    def sample_choice(self) -> str:
        """Uniform sampling."""
        return random.choice(self.choices)

    def chosen_module(self) -> nn.Module:
        """The candidate op that forward runs: what an exported model keeps in this place."""
        choice = self._chosen if self.is_fixed else self.current_choice
        if choice is None:
            raise ValueError("no candidate is chosen: the op sums every candidate; set a choice first")
        return self._candidates[choice]

    def forward_fixed(self, x: Any) -> Any:
        """The fixed candidate's output."""
        return self._candidates[self._chosen](x)

    def forward_choice(self, x: Any, choice: str) -> Any:
        """The output of candidate ``choice``; ``ValueError`` for an unknown name."""
        if choice not in self._candidates:
            raise ValueError(f"{choice!r} is not a candidate; the candidates are {self.choices}")
        return self._candidates[choice](x)

    def forward_all(self, x: Any) -> Any:
        """The sum of every candidate's output (the supernet before any choice)."""
        return sum(op(x) for op in self._candidates.values())

    def extra_repr(self) -> str:
        """The alias, when there is one, for ``repr``."""
        return f"alias={self.alias}" if self.alias is not None else ""
