"""PruningSession: a model being pruned, as one object that scripts, the CLI and the explorer share.

It holds a ``ChannelMutator`` and, for a model with searchable ops (``OneShotMutableOP``), a
``OneShotModuleMutator``. Both kinds of choice live in one dict (``choices``): unit names map to
channel choices and ``ModuleGroup(g)`` keys to the candidate of search group ``g``. Counting
(``resources``), ``export`` and plan files cover both, with no widget library imported.

The channels of a searchable model are traced with every candidate running (an op with no
choice sums its candidates), so the units hold the channels of every candidate and stay valid
whichever are chosen; ``ChosenPathCounter`` then counts the model ``export()`` returns.
"""
from __future__ import annotations

import contextlib
import os
import random
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from torch import nn

from .counting.module_counter import ChosenPathCounter
from .counting.resources import Resources
from .export.plans import apply_plan_data, parse_plan, plan_json, plan_of, read_json_plan, write_plan
from .mutables import OneShotMutableModule
from .mutators import ChannelMutator, OneShotModuleMutator

__all__ = ["ModuleGroup", "PruningSession", "every_candidate", "has_module_mutables"]


@dataclass(frozen=True)
class ModuleGroup:
    """The key of a search group's choice in ``PruningSession.choices`` (never a unit name)."""

    group: int


def has_module_mutables(model: nn.Module) -> bool:
    """Whether ``model`` holds one-shot module mutables (searchable ops)."""
    return any(isinstance(m, OneShotMutableModule) for m in model.modules())


@contextlib.contextmanager
def every_candidate(module_mutator: OneShotModuleMutator) -> Iterator[None]:
    """Run every candidate of every (unfixed) mutable, as the supernet does; restore after."""
    mutables = [m for m in module_mutator.name2mutable.values() if not m.is_fixed]
    saved = [m.current_choice for m in mutables]
    try:
        for mutable in mutables:
            mutable.current_choice = None
        yield
    finally:
        for mutable, choice in zip(mutables, saved):
            mutable.current_choice = choice


class PruningSession:
    """Channel choices (and searchable-op choices) of one model, counted, exported and planned.

    ``model`` is prepared in place (its layers become dynamic ops); pass a prepared
    ``ChannelMutator`` instead to use it as it is (a model with searchable ops must be passed
    itself, so that its channels are traced with every candidate running). ``warnings`` holds
    what preparing warned about (channels that cannot be pruned, and why).
    """

    def __init__(self, model: nn.Module | ChannelMutator, example_inputs: Any = None, *,
                 channel_unit_cfg: dict | str | None = None) -> None:
        self.warnings: list[str] = []
        self.module_mutator: OneShotModuleMutator | None = None
        self.path_counter: ChosenPathCounter | None = None
        if isinstance(model, ChannelMutator):
            if model.model is None:
                raise ValueError("the ChannelMutator is not prepared: call prepare_from_supernet(model) first, "
                                 "or pass the model itself")
            if has_module_mutables(model.model):
                raise ValueError("the model has searchable ops (OneShotMutableOP): pass the model itself, so "
                                 "that its channels are traced with every candidate running")
            self.mutator = model
        elif isinstance(model, nn.Module):
            self.mutator = ChannelMutator(channel_unit_cfg=channel_unit_cfg)
            modules = None
            if has_module_mutables(model):
                modules = OneShotModuleMutator()
                modules.prepare_from_supernet(model)
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                with every_candidate(modules) if modules is not None else contextlib.nullcontext():
                    self.mutator.prepare_from_supernet(model, example_inputs=example_inputs)
            self.warnings = [str(w.message) for w in caught]
            if modules is not None:
                self.module_mutator = modules
                self.path_counter = ChosenPathCounter(self.mutator, modules)
        else:
            raise TypeError(f"a PruningSession takes an nn.Module or a prepared ChannelMutator, "
                            f"got {type(model).__name__}")

    # -- choices --------------------------------------------------------------------------
    @property
    def mutable_units(self) -> list:
        """The channel mutator's prunable units (``fit_budget`` reads them)."""
        return self.mutator.mutable_units

    @property
    def removable_blocks(self) -> list:
        """The channel mutator's blocks that can be dropped (budgets trade them against width)."""
        return self.mutator.removable_blocks

    @property
    def choices(self) -> dict[Any, Any]:
        """Unit name -> channel choice and ``ModuleGroup(g)`` -> candidate (None: every one)."""
        choices = self.mutator.current_choices
        if self.module_mutator is not None:
            choices.update({ModuleGroup(g): c for g, c in self.module_mutator.current_choices.items()})
        return choices

    @property
    def max_choices(self) -> dict[Any, Any]:
        """Every unit at all of its channels (search groups keep their candidates)."""
        return self.mutator.max_choices

    def set_choices(self, choices: dict[Any, Any]) -> None:
        """Set any subset of ``choices`` (both kinds of key). Atomic: on an invalid entry
        (ValueError, TypeError or KeyError) nothing changes."""
        units = {k: v for k, v in choices.items() if not isinstance(k, ModuleGroup)}
        groups = {k.group: v for k, v in choices.items() if isinstance(k, ModuleGroup)}
        if groups:
            if self.module_mutator is None:
                raise ValueError("this model has no searchable ops (OneShotMutableOP)")
            self.module_mutator.validate_choices(groups)  # before any change: all or nothing
        self.mutator.set_choices(units)
        if groups:
            self.module_mutator.set_choices(groups)

    def sample_choices(self, seed: int | None = None) -> dict[Any, Any]:
        """Random choices for every unit and a random candidate for every search group
        (``seed`` makes them repeatable without touching the global RNG's state); not applied."""
        state = random.getstate()
        if seed is not None:
            random.seed(seed)
        try:
            choices = self.mutator.sample_choices()
            if self.module_mutator is not None:
                choices.update({ModuleGroup(g): c for g, c in self.module_mutator.sample_choices().items()})
        finally:
            if seed is not None:
                random.setstate(state)
        return choices

    # -- counts and export ----------------------------------------------------------------
    def resources(self, choices: dict[Any, Any] | None = None) -> Resources:
        """Exact params and MACs of ``export()`` at the current choices, or with the unit
        choices in ``choices`` instead (a what-if: nothing changes)."""
        if self.path_counter is None:
            return self.mutator.resources(choices=choices)
        return self.path_counter.resources(choices)

    def latency(self, choices: dict[Any, Any] | None = None) -> Any:
        """Predicted latency of the units' choices (``mutator.latency``: needs ``profile_latency``);
        ``choices`` of units is a what-if. Searchable ops are not in the latency table."""
        return self.mutator.latency(choices)

    def dropped_layers(self) -> set[str]:
        """Counted layers that ``export()`` leaves out: those of candidates not chosen."""
        return self.path_counter.dropped_layers() if self.path_counter is not None else set()

    def open_groups(self) -> list[str]:
        """Labels of the search groups that still run every candidate (no choice yet)."""
        if self.module_mutator is None:
            return []
        return [self.module_mutator.group_label(g) for g, c in self.module_mutator.current_choices.items()
                if c is None]

    def export(self, check: bool = True) -> nn.Module:
        """The pruned model of plain torch layers (``mutator.to_static()``); with searchable ops,
        only the chosen candidates (every search group must have chosen one). ``check``: see
        ``ChannelMutator.to_static`` (``ExportError`` when the export differs from the masked model)."""
        if self.module_mutator is None:
            return self.mutator.to_static(check)
        open_groups = self.open_groups()
        if open_groups:
            raise ValueError(f"choose a candidate for every searchable op before exporting: "
                             f"{len(open_groups)} run every candidate ({', '.join(open_groups[:3])}"
                             f"{', ...' if len(open_groups) > 3 else ''})")
        return self.module_mutator.to_static(self.mutator.to_static(check))

    # -- plans ----------------------------------------------------------------------------
    def plan(self) -> dict[str, Any]:
        """The current choices as a JSON-able plan: ``{unit_name: choice}`` and, with searchable
        ops, ``{mutable module name: candidate}`` (MMRazor's choice and subnet forms)."""
        return plan_of(self.mutator, self.module_mutator)

    def plan_json(self) -> str:
        """The text of the plan file ``save_plan`` writes."""
        return plan_json(self.plan())

    def save_plan(self, path: str | os.PathLike) -> None:
        """Write the plan to ``path`` as JSON."""
        write_plan(self.plan(), path)

    def load_plan(self, path: str | os.PathLike) -> dict[Any, Any]:
        """Apply the plan in ``path``; one that does not fit raises ``PlanError`` and changes
        nothing. Returns the choices it set (``choices``' form)."""
        return self.apply_plan(read_json_plan(path), os.fspath(path))

    def load_plan_text(self, text: str | bytes, source: str = "<upload>") -> dict[Any, Any]:
        """Apply a plan given as the text of a plan file (an upload); as ``load_plan``."""
        return self.apply_plan(parse_plan(text, source), source)

    def apply_plan(self, data: dict[str, Any], source: str = "<plan>") -> dict[Any, Any]:
        """Apply a plan object (``plan()``'s form); PlanError, changing nothing, if it does not fit."""
        channels, groups = apply_plan_data(self.mutator, self.module_mutator, data, source)
        return {**channels, **{ModuleGroup(g): c for g, c in groups.items()}}
