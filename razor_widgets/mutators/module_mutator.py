"""Module mutators: search groups of module mutables, their choices and export (reference 003).

What a UI needs, after ``prepare_from_supernet(model, example_inputs)``: ``search_groups``,
``group_names`` and ``group_label(g)`` (what each group is), ``search_space`` (its candidate
names), ``current_choices`` (None: every candidate runs, as in the supernet), atomic
``set_choices({g: name})``, ``resources()`` / ``resources({g: name})`` and
``candidate_resources(g)`` (params and MACs, no forward), and ``to_static(model=None)``.
"""
from __future__ import annotations

import copy
from abc import ABCMeta, abstractmethod
from collections import Counter
from typing import Any

import torch
from torch import nn

from ..counting.module_counter import CandidateCounter
from ..counting.resources import Resources
from ..layers.dynamic_ops import set_submodule
from ..mutables.diff_mutable_module import DiffMutableModule
from ..mutables.mutable_module import MutableModule, OneShotMutableModule
from ..registry import MODELS
from .base import BaseMutator


class ModuleMutator(BaseMutator, metaclass=ABCMeta):
    """Finds the mutables of ``mutable_class_type`` in a supernet and groups them.

    ``custom_group`` lists groups by module name or alias (``[['op1', 'op2'], ['op3']]``);
    mutables sharing an alias form a group; every other mutable is a group of its own.
    The mutables of one group share one choice.
    """

    def __init__(self, custom_group: list[list[str]] | None = None, init_cfg: dict | None = None) -> None:
        super().__init__(init_cfg=init_cfg)
        self._custom_group = [list(group) for group in (custom_group or [])]
        self._search_groups: dict[int, list[MutableModule]] | None = None
        self._group_names: dict[int, list[str]] = {}
        self._counter: CandidateCounter | None = None
        object.__setattr__(self, "_model", None)  # not a submodule: the mutator does not own it

    @property
    @abstractmethod
    def mutable_class_type(self) -> type[MutableModule]:
        """The mutables this mutator manages."""

    # -- preparing ------------------------------------------------------------------------
    def prepare_from_supernet(self, supernet: nn.Module, example_inputs: Any = None) -> None:
        """Group the mutables of ``supernet``; with ``example_inputs``, also measure the MACs
        of every candidate (one forward), so that ``resources()`` can count them."""
        if self._model is not None:
            raise RuntimeError("this mutator is already prepared; make a new one for another model")
        groups, names = self._build_search_groups(supernet)
        self._search_groups, self._group_names = groups, names
        object.__setattr__(self, "_model", supernet)
        self._counter = CandidateCounter(supernet, self._mutable_names())
        if example_inputs is not None:
            self.measure(example_inputs)

    def _mutable_names(self) -> dict[str, MutableModule]:
        return {name: m for gid in self.search_groups
                for name, m in zip(self._group_names[gid], self._search_groups[gid])}

    @property
    def name2mutable(self) -> dict[str, MutableModule]:
        """Every grouped mutable by module name."""
        return self._mutable_names()

    def _build_search_groups(self, supernet: nn.Module) -> tuple[dict[int, list], dict[int, list[str]]]:
        name2mutable = {name: m for name, m in supernet.named_modules() if isinstance(m, self.mutable_class_type)}
        alias2names: dict[str, list[str]] = {}
        for name, mutable in name2mutable.items():
            if mutable.alias is not None:
                alias2names.setdefault(mutable.alias, []).append(name)
        self._check_valid_groups(alias2names, name2mutable)
        groups: list[list[str]] = []
        for group in self._custom_group:
            members: list[str] = []
            for key in group:
                members.extend(alias2names.get(key, [key]))
            groups.append(members)
        grouped = [name for group in groups for name in group]
        duplicates = [name for name, count in Counter(grouped).items() if count > 1]
        if duplicates:
            raise ValueError(f"Repeated grouping of mutables. Duplicate keys: {duplicates}")
        used_aliases = {key for group in self._custom_group for key in group if key in alias2names}
        for alias, names in alias2names.items():
            rest = [n for n in names if n not in grouped]
            if alias not in used_aliases and rest:
                groups.append(rest)
                grouped.extend(rest)
        groups.extend([name] for name in name2mutable if name not in grouped)
        for members in groups:
            choices = [name2mutable[n].choices for n in members]
            if any(c != choices[0] for c in choices):
                raise ValueError(f"the mutables of a group must have the same choices: {members} have "
                                 f"{choices}")
        return ({i: [name2mutable[n] for n in members] for i, members in enumerate(groups)},
                dict(enumerate(groups)))

    def _check_valid_groups(self, alias2names: dict[str, list[str]], name2mutable: dict[str, Any]) -> None:
        keys = [key for group in self._custom_group for key in group]
        legal = [*alias2names, *name2mutable]
        for key in keys:
            if key not in legal:
                raise ValueError(f"The key: {key} in `custom_group` is not legal! Legal keys are: {legal}. "
                                 "Make sure that the keys are either alias or mutable name")
        for alias in (k for k in keys if k in alias2names):
            for name in alias2names[alias]:
                if name in keys:
                    raise ValueError(f"When a mutable is set alias attribute :{alias},the corresponding "
                                     f"module name {name} should not be used in `custom_group` "
                                     f"{self._custom_group}.")

    # -- groups and choices ---------------------------------------------------------------
    @property
    def search_groups(self) -> dict[int, list[MutableModule]]:
        """The mutables of each search group by group id; ``RuntimeError`` before ``prepare_from_supernet``."""
        if self._search_groups is None:
            raise RuntimeError("Call `prepare_from_supernet` first to get the search space.")
        return self._search_groups

    @property
    def group_names(self) -> dict[int, list[str]]:
        """Module names of the mutables of each group."""
        self.search_groups  # noqa: B018 - raises before preparing
        return {gid: list(names) for gid, names in self._group_names.items()}

    def group_label(self, group_id: int) -> str:
        """A name for a group: its alias when its mutables share one, else its module names."""
        mutables = self.search_groups[group_id]
        aliases = {m.alias for m in mutables}
        if len(aliases) == 1 and None not in aliases:
            return str(aliases.pop())
        return ", ".join(self._group_names[group_id])

    @property
    def search_space(self) -> dict[int, list[Any]]:
        """The choices of each group."""
        return {gid: list(mutables[0].choices) for gid, mutables in self.search_groups.items()}

    @property
    def current_choices(self) -> dict[int, Any]:
        """The choice of each group (its first mutable's)."""
        return {gid: mutables[0].current_choice for gid, mutables in self.search_groups.items()}

    def _group_id(self, key: Any) -> int:
        groups = self.search_groups
        if isinstance(key, str) and key.isdigit():  # JSON keys are strings
            key = int(key)
        if isinstance(key, bool) or key not in groups:
            raise KeyError(f"no search group {key!r}; the groups are {list(groups)}")
        return key

    def validate_choices(self, choices: dict[Any, Any]) -> dict[int, Any]:
        """``choices`` with group ids resolved; raises (naming the group) on any bad entry."""
        if not isinstance(choices, dict):
            raise TypeError(f"choices must be a dict of group id to choice, got {type(choices).__name__}")
        resolved = {}
        for key, choice in choices.items():
            gid = self._group_id(key)
            for mutable in self.search_groups[gid]:
                try:
                    self._validate(mutable, choice)
                except ValueError as error:
                    raise ValueError(f"group {gid} ({self.group_label(gid)}): {error}") from None
            resolved[gid] = choice
        return resolved

    def _validate(self, mutable: MutableModule, choice: Any) -> None:
        if hasattr(mutable, "validate_choice"):
            mutable.validate_choice(choice)
        elif choice is not None and choice not in mutable.choices:
            raise ValueError(f"{choice!r} is not one of {mutable.choices}")

    def set_choices(self, choices: dict[Any, Any]) -> None:
        """Set the choice of the groups in ``choices`` (the others keep theirs); all entries are
        checked first, so a bad one changes nothing."""
        for gid, choice in self.validate_choices(choices).items():
            for mutable in self.search_groups[gid]:
                mutable.current_choice = choice

    def sample_choices(self) -> dict[int, Any]:
        """A random choice per group (the first mutable's sample)."""
        return {gid: mutables[0].sample_choice() for gid, mutables in self.search_groups.items()}

    # -- counting and export --------------------------------------------------------------
    def measure(self, example_inputs: Any) -> None:
        """Count every candidate's MACs with one forward of ``example_inputs``."""
        self._require_prepared()
        self._counter.measure(example_inputs)

    def resources(self, choices: dict[Any, Any] | None = None) -> Resources:
        """Params and MACs of the model that ``to_static()`` would export (a what-if at
        ``choices`` for the groups given). A group without a choice counts every candidate,
        as the supernet runs them all; the originals are those of the whole supernet."""
        self._require_prepared()
        current = self.current_choices
        if choices is not None:
            current.update(self.validate_choices(choices))
        by_name = {name: current[gid] for gid, names in self._group_names.items() for name in names}
        return self._counter.resources(by_name)

    def candidate_resources(self, group_id: Any) -> dict[Any, Resources]:
        """Params and MACs of each candidate of a group (summed over its mutables)."""
        self._require_prepared()
        gid = self._group_id(group_id)
        return {choice: sum(self._counter.candidate(name, choice) for name in self._group_names[gid])
                for choice in self.search_space[gid]}

    def to_static(self, model: nn.Module | None = None) -> nn.Module:
        """A copy of the model (or of ``model``, for example a channel mutator's export of it)
        in which each mutable is replaced by the one candidate it runs."""
        self._require_prepared()
        static = copy.deepcopy(self._model if model is None else model)
        for name in sorted(self._mutable_names(), key=lambda n: -n.count(".")):
            mutable = static.get_submodule(name)
            if not isinstance(mutable, MutableModule):
                raise TypeError(f"{name!r} is a {type(mutable).__name__}, not a mutable of this mutator")
            try:
                chosen = mutable.chosen_module()
            except ValueError as error:
                raise ValueError(f"{name}: {error}") from None
            set_submodule(static, name, chosen)
        return static

    def _require_prepared(self) -> None:
        if self._model is None:
            raise RuntimeError("call prepare_from_supernet(model) before using the mutator")

    @property
    def model(self) -> nn.Module | None:
        """The supernet given to ``prepare_from_supernet`` (None before); the mutator does not own it."""
        return self._model


@MODELS.register_module()
class OneShotModuleMutator(ModuleMutator):
    """Manages one-shot module mutables: samples and sets one choice per search group."""

    @property
    def mutable_class_type(self) -> type[MutableModule]:
        """``OneShotMutableModule``: the mutables this mutator groups."""
        return OneShotMutableModule


@MODELS.register_module()
class DiffModuleMutator(ModuleMutator):
    """Manages differentiable module mutables: one architecture parameter per search group,
    shared by the group's mutables; ``sample_choices`` takes each group's argmax."""

    def __init__(self, custom_group: list[list[str]] | None = None, init_cfg: dict | None = None) -> None:
        super().__init__(custom_group=custom_group, init_cfg=init_cfg)
        self.arch_params = nn.ParameterDict()

    @property
    def mutable_class_type(self) -> type[MutableModule]:
        """``DiffMutableModule``: the mutables this mutator groups."""
        return DiffMutableModule

    def build_arch_param(self, num_choices: int) -> nn.Parameter:
        """A new architecture parameter of ``num_choices`` small random weights (scale 1e-3)."""
        return nn.Parameter(torch.randn(num_choices) * 1e-3)

    def prepare_from_supernet(self, supernet: nn.Module, example_inputs: Any = None) -> None:
        """Group the mutables, then give each group an architecture parameter shared by its mutables."""
        super().prepare_from_supernet(supernet, example_inputs)
        for gid, mutables in self.search_groups.items():
            self.arch_params[str(gid)] = self.build_arch_param(mutables[0].num_choices)
        self.modify_supernet_forward(self.arch_params)

    def modify_supernet_forward(self, arch_params: nn.ParameterDict) -> None:
        """Hand each group's architecture parameter to its mutables, which weigh their candidates by it."""
        for gid, mutables in self.search_groups.items():
            for mutable in mutables:
                mutable.set_forward_args(arch_param=arch_params[str(gid)])

    def sample_choices(self) -> dict[int, Any]:
        """Each group's candidate of largest architecture weight, by group id (nothing is set)."""
        return {gid: mutables[0].sample_choice(self.arch_params[str(gid)])
                for gid, mutables in self.search_groups.items()}
