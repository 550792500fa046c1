"""Differentiable module mutables: candidates mixed by softmax architecture weights (DARTS)."""
from __future__ import annotations

from abc import abstractmethod
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..registry import MODELS
from .mutable_module import CandidateOpsMixin, MutableModule, build_candidates


class DiffMutableModule(MutableModule):
    """A module mutable whose forward weighs its candidates by an architecture parameter.

    The parameter belongs to the mutator (``DiffModuleMutator``), which hands it to every
    mutable of a search group with ``set_forward_args``; without one, forward runs every
    candidate (``forward_all``), and once fixed only the chosen ones (``forward_fixed``).
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.__dict__["_arch_param"] = None  # not a submodule parameter: the mutator owns it

    @abstractmethod
    def forward_fixed(self, x: Any) -> Any:
        """Forward once ``fix_chosen`` has been called."""

    @abstractmethod
    def forward_arch_param(self, x: Any, arch_param: nn.Parameter) -> Any:
        """Forward with candidates weighted by ``softmax(arch_param)``."""

    @abstractmethod
    def forward_all(self, x: Any) -> Any:
        """Forward every candidate."""

    @abstractmethod
    def sample_choice(self, arch_param: torch.Tensor) -> Any:
        """The choice that ``arch_param`` prefers."""

    def set_forward_args(self, arch_param: nn.Parameter | None) -> None:
        """Use ``arch_param`` whenever forward is called without one."""
        self.__dict__["_arch_param"] = arch_param

    @property
    def arch_param(self) -> nn.Parameter | None:
        """The architecture parameter the mutator handed over with ``set_forward_args`` (None before)."""
        return self.__dict__["_arch_param"]

    def compute_arch_probs(self, arch_param: torch.Tensor) -> torch.Tensor:
        """The candidates' weights: ``softmax(arch_param)`` over the last dim."""
        return F.softmax(arch_param, -1)

    def forward(self, x: Any, arch_param: nn.Parameter | None = None) -> Any:
        """Run the fixed choice, else the candidates weighted by ``arch_param`` (given or held), else all."""
        if self.is_fixed:
            return self.forward_fixed(x)
        arch_param = self.arch_param if arch_param is None else arch_param
        if arch_param is None:
            return self.forward_all(x)
        return self.forward_arch_param(x, arch_param=arch_param)


@MODELS.register_module()
class DiffMutableOP(CandidateOpsMixin, DiffMutableModule):
    """Runs every candidate and sums the outputs weighted by ``softmax(arch_param)``.

    The choice is a candidate name (``fix_chosen`` also takes a list of names, whose
    outputs are then summed, as MMRazor does).
    """

    def __init__(self, candidates: dict[str, Any] | nn.ModuleDict,
                 module_kwargs: dict[str, Any] | None = None, alias: str | None = None,
                 init_cfg: dict | None = None) -> None:
        super().__init__(module_kwargs=module_kwargs, alias=alias, init_cfg=init_cfg)
        self._candidates = build_candidates(candidates, module_kwargs)
        self._chosen: list[str] | None = None

    def validate_choice(self, choice: Any) -> None:
        """Raise ValueError unless ``choice`` is a candidate name or None."""
        if self.is_fixed and choice is not None and [choice] != self._chosen:
            raise ValueError(f"{type(self).__name__} is fixed at {self._chosen!r}; cannot choose {choice!r}")
        if choice is not None and choice not in self._candidates:
            raise ValueError(f"{choice!r} is not a candidate; the candidates are {self.choices}")

    def fix_chosen(self, chosen: str | list[str] | None = None) -> None:
        """Keep only the chosen candidate(s) (the current choice when None) and fix them."""
        if self.is_fixed:
            raise AttributeError("The mode of current MUTABLE is `fixed`. "
                                 "Please do not call `fix_chosen` function again.")
        if chosen is None:
            chosen = self.current_choice
        if chosen is None and self.arch_param is not None:
            chosen = self.sample_choice(self.arch_param)
        if chosen is None:
            raise ValueError("no choice to fix: set current_choice or pass chosen")
        names = [chosen] if isinstance(chosen, str) else list(chosen)
        unknown = [n for n in names if n not in self._candidates]
        if unknown or not names:
            raise ValueError(f"{unknown or names!r} are not candidates; the candidates are {self.choices}")
        for name in self.choices:
            if name not in names:
                self._candidates.pop(name)
        self._chosen = names
        self._current_choice = names[0] if len(names) == 1 else None
        self.is_fixed = True

    def dump_chosen(self) -> str | list[str]:
        """The fixed candidate name(s), else the current choice, else the argmax of ``arch_param``."""
        if self.is_fixed:
            return self._chosen[0] if len(self._chosen) == 1 else list(self._chosen)
        if self.current_choice is not None:
            return self.current_choice
        if self.arch_param is not None:
            return self.sample_choice(self.arch_param)
        raise ValueError("no candidate is chosen and there are no architecture weights")

    def sample_choice(self, arch_param: torch.Tensor) -> str:
        """The candidate with the largest architecture weight."""
        return self.choices[int(torch.argmax(arch_param.detach()).item())]

    def chosen_module(self) -> nn.Module:
        """The one candidate an exported model keeps: the current choice, else the argmax."""
        chosen = self.dump_chosen()
        if isinstance(chosen, list):
            raise ValueError(f"fixed at several candidates {chosen}; an export keeps one op")
        return self._candidates[chosen]

    def forward_fixed(self, x: Any) -> Any:
        """The sum of the fixed candidates' outputs."""
        return sum(self._candidates[name](x) for name in self._chosen)

    def forward_arch_param(self, x: Any, arch_param: nn.Parameter) -> Any:
        """The candidates' outputs summed, weighted by ``softmax(arch_param)``."""
        probs = self.compute_arch_probs(arch_param)
        return sum(op(x) * p for op, p in zip(self._candidates.values(), probs))

    def forward_all(self, x: Any) -> Any:
        """The plain sum of every candidate's output."""
        return sum(op(x) for op in self._candidates.values())
