"""Searchable ops in the explorer: one dropdown per search group of a ``OneShotModuleMutator``.

The channel mutator is traced through the supernet with every candidate running (a
``OneShotMutableOP`` without a choice sums its candidates), so its units hold the channels of
every candidate and stay valid whichever candidates are chosen. The model that
``export()`` returns keeps only the chosen candidates, so its counts are the channel
mutator's per-layer counts less the layers of the candidates that are not chosen:
:class:`ChosenPathCounter` does that sum, with no forward pass.
"""
from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import ipywidgets as widgets
from torch import nn

from .. import OneShotModuleMutator, OneShotMutableModule, PlanError, Resources
from ..plans import apply_plan, channel_plan, read_json_plan
from .quiet_panel import QuietPanel

SUPERNET = "every candidate (supernet)"


@dataclass(frozen=True)
class ModuleGroup:
    """The key of a search group's choice in the explorer's undo history (never a unit name)."""

    group: int


def has_module_mutables(model: nn.Module) -> bool:
    """Whether ``model`` holds one-shot module mutables (searchable ops)."""
    return any(isinstance(m, OneShotMutableModule) for m in model.modules())


@contextlib.contextmanager
def every_candidate(module_mutator: OneShotModuleMutator):
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


def _candidate_prefixes(name: str, mutable: nn.Module) -> dict[Any, str]:
    """``{candidate name: module path of that candidate op}`` for the mutable at ``name``."""
    ops = getattr(mutable, "candidates", None)
    if not isinstance(ops, nn.ModuleDict):
        raise TypeError(f"{name}: {type(mutable).__name__} has no candidate ops (a `candidates` ModuleDict)")
    paths = {id(m): rel for rel, m in mutable.named_modules(remove_duplicate=False)}
    return {choice: f"{name}.{paths[id(op)]}" for choice, op in ops.items()}


def _inside(layer: str, prefix: str) -> bool:
    return layer == prefix or layer.startswith(prefix + ".")


class ChosenPathCounter:
    """Params and MACs of the exported model (chosen candidates, channels pruned).

    ``channel_mutator`` must be traced with every candidate running; ``resources(choices)``
    takes channel choices as ``ChannelMutator.resources`` does (a what-if; ``fit_budget``
    uses it through ``mutable_units`` and ``resources``). The originals are those of the chosen
    candidates at full width (the whole supernet while a group has no choice).
    """

    def __init__(self, channel_mutator: Any, module_mutator: OneShotModuleMutator) -> None:
        self.channel_mutator = channel_mutator
        self.module_mutator = module_mutator
        layers = list(channel_mutator.resources(by_layer=True))
        # {group: {candidate: [counted layers inside it, over the group's mutables]}}
        self.layers: dict[int, dict[Any, list[str]]] = {}
        for gid, names in module_mutator.group_names.items():
            per: dict[Any, list[str]] = {}
            for name in names:
                for choice, prefix in _candidate_prefixes(name, module_mutator.name2mutable[name]).items():
                    per.setdefault(choice, []).extend(n for n in layers if _inside(n, prefix))
            self.layers[gid] = per

    @property
    def mutable_units(self) -> list:
        return self.channel_mutator.mutable_units

    def dropped_layers(self, module_choices: dict[int, Any] | None = None) -> set[str]:
        """The counted layers that the export leaves out: those of the unchosen candidates."""
        current = self.module_mutator.current_choices
        current.update(module_choices or {})
        dropped: set[str] = set()
        for gid, per in self.layers.items():
            choice = current[gid]
            if choice is not None and len(per) > 1:
                for other, names in per.items():
                    if other != choice:
                        dropped.update(names)
        return dropped

    def resources(self, choices: dict[Any, Any] | None = None,
                  module_choices: dict[int, Any] | None = None) -> Resources:
        """Exact params and MACs of ``export()`` at the current (or the given) choices."""
        dropped = self.dropped_layers(module_choices)
        if not dropped:  # the supernet (or one candidate per op): the channel mutator's own count
            return self.channel_mutator.resources(choices=choices)
        layers = self.channel_mutator.resources(choices=choices, by_layer=True)
        kept = [r for name, r in layers.items() if name not in dropped]
        return Resources(sum(r.params for r in kept), sum(r.macs for r in kept),
                         sum(r.original_params for r in kept), sum(r.original_macs for r in kept))

    def candidate_resources(self, group: int) -> dict[Any, Resources]:
        """Params and MACs of each candidate of ``group`` at full width, over its mutables."""
        layers = self.channel_mutator.resources(by_layer=True)
        return {choice: Resources(sum(layers[n].original_params for n in names),
                                  sum(layers[n].original_macs for n in names))
                for choice, names in self.layers[group].items()}


def _short(n: int) -> str:
    for size, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(n) >= size:
            return f"{n / size:.3g} {suffix}"
    return str(n)


def option_label(choice: Any, res: Resources) -> str:
    """``'shuffle_5x5 (12.3 k params, 4.56 M MACs)'``."""
    name = SUPERNET if choice is None else str(choice)
    return f"{name} ({_short(res.params)} params, {_short(res.macs)} MACs)"


class ModuleChoices(QuietPanel):
    """One dropdown per search group (label: alias or module names; options: candidates with
    their params and MACs at full width). A change calls ``on_change(group, choice)``, except
    while ``quiet()`` is on."""

    def __init__(self, module_mutator: OneShotModuleMutator, counter: ChosenPathCounter,
                 on_change: Callable[[int, Any], None]) -> None:
        super().__init__(on_change)
        self.dropdowns: dict[int, widgets.Dropdown] = {}
        current = module_mutator.current_choices
        for gid, space in module_mutator.search_space.items():
            per = counter.candidate_resources(gid)
            options = [(option_label(c, per[c]), c) for c in space]
            options.append((option_label(None, sum(per.values())), None))
            names = module_mutator.group_names[gid]
            dropdown = widgets.Dropdown(
                options=options, value=current[gid], description=module_mutator.group_label(gid),
                tooltip=f"{', '.join(names)}: params and MACs of each candidate at full width",
                style={"description_width": "150px"}, layout=widgets.Layout(width="520px"))
            dropdown.observe(self._observer(gid), "value")
            self.dropdowns[gid] = dropdown
        self.widget = widgets.VBox(list(self.dropdowns.values()),
                                   layout=widgets.Layout(max_height="480px", overflow="auto"))

    def show(self, choices: dict[int, Any]) -> None:
        """Move the dropdowns to ``choices`` (one sync per changed dropdown)."""
        changed = [g for g, v in choices.items() if self.dropdowns[g].value != v]
        with self.quiet(), contextlib.ExitStack() as stack:
            for gid in changed:
                stack.enter_context(self.dropdowns[gid].hold_sync())
            for gid in changed:
                self.dropdowns[gid].value = choices[gid]


# -- plans with module choices ---------------------------------------------------------------------
def module_plan(module_mutator: OneShotModuleMutator) -> dict[str, Any]:
    """``{mutable module name: candidate name}`` (MMRazor's subnet form; None: every candidate)."""
    current = module_mutator.current_choices
    return {name: current[gid] for gid, names in module_mutator.group_names.items() for name in names}


def save_plan(channel_mutator: Any, module_mutator: OneShotModuleMutator, path: str | os.PathLike) -> None:
    """Write ``{unit_name: choice, ..., mutable_name: candidate, ...}`` as JSON."""
    plan = {str(name): choice for name, choice in channel_mutator.current_choices.items()}
    plan.update(module_plan(module_mutator))
    with open(path, "w", encoding="utf-8") as f:
        json.dump(plan, f, indent=2)
        f.write("\n")


def _module_choices(module_mutator: OneShotModuleMutator, entries: dict[str, Any],
                    source: str) -> dict[int, Any]:
    """Group choices from ``{mutable name: candidate}``; every mutable must be named, and the
    mutables of one group must agree. Raises PlanError; changes nothing."""
    def fail(message: str) -> PlanError:
        return PlanError(f"the plan {source!r} does not fit this model: {message}")

    choices: dict[int, Any] = {}
    for gid, names in module_mutator.group_names.items():
        missing = [n for n in names if n not in entries]
        if missing:
            raise fail(f"it leaves out the searchable op {missing[0]!r}")
        values = []
        for name in names:
            value = entries[name]
            if isinstance(value, dict):
                if "chosen" not in value and "choice" not in value:
                    raise fail(f"op {name!r}: an object choice needs a 'chosen' or 'choice' key")
                value = value.get("chosen", value.get("choice"))
            if value is not None and not isinstance(value, str):
                raise fail(f"op {name!r}: a candidate is a name (or null for every candidate), got {value!r}")
            values.append(value)
        if any(v != values[0] for v in values):
            raise fail(f"the ops {names} share one choice (one search group) but the plan gives {values}")
        choices[gid] = values[0]
    try:
        return module_mutator.validate_choices(choices)
    except (KeyError, ValueError, TypeError) as exc:
        raise fail(str(exc.args[0] if isinstance(exc, KeyError) and exc.args else exc)) from exc


def load_plan(channel_mutator: Any, module_mutator: OneShotModuleMutator,
              path: str | os.PathLike) -> tuple[dict[Any, Any], dict[int, Any]]:
    """Apply a plan written by :func:`save_plan` (channel entries as in ``load_choices``);
    returns (channel choices, group choices). On any problem raises PlanError, changing nothing."""
    source = os.fspath(path)
    data = read_json_plan(path)
    names = module_mutator.name2mutable
    modules = _module_choices(module_mutator, {k: v for k, v in data.items() if k in names}, source)
    channels = channel_plan({k: v for k, v in data.items() if k not in names})
    applied = apply_plan(channel_mutator, channels, source)  # atomic; modules are already checked
    module_mutator.set_choices(modules)
    return applied, modules

