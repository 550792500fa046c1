"""Pruning plans: a mutator's choices as a JSON file ``{unit_name: choice}``.

The same form as MMRazor's channel choice files (``mutator.current_choices`` dumped to JSON).
A plan is data: it is parsed as JSON and never executed. Loading checks the whole plan against
the model first and applies it in one atomic ``set_choices``: a plan that does not fit raises
:class:`PlanError` and leaves every choice as it was.
"""
from __future__ import annotations

import json
import math
import os
from typing import Any

__all__ = ["HISTORY_KEY", "PlanError", "apply_plan", "apply_plan_data", "channel_plan", "load_choices", "module_plan",
           "parse_plan", "plan_json", "plan_of", "read_json_plan", "read_plan", "save_choices", "write_plan"]


class PlanError(ValueError):
    """A plan file that cannot be read, or that does not fit the model."""


# the key under which the explorer saves the plans a person tried beside the choices; a loader
# of choices skips it ('#' starts no module path, so no unit is named so)
HISTORY_KEY = "#history"


def save_choices(mutator: Any, path: str | os.PathLike) -> None:
    """Write the mutator's current choices to ``path`` as JSON ``{unit_name: choice}``."""
    write_plan(plan_of(mutator), path)


def plan_of(channel_mutator: Any, module_mutator: Any = None) -> dict[str, Any]:
    """The plan of the current choices: ``{unit_name: choice}`` and, with a module mutator,
    ``{mutable module name: candidate name}`` beside them (MMRazor's subnet form)."""
    plan = {str(name): choice for name, choice in channel_mutator.current_choices.items()}
    if module_mutator is not None:
        plan.update(module_plan(module_mutator))
    return plan


def plan_json(plan: dict[str, Any]) -> str:
    """The text of a plan file (indented JSON, one trailing newline)."""
    return json.dumps(plan, indent=2) + "\n"


def write_plan(plan: dict[str, Any], path: str | os.PathLike) -> None:
    """Write ``plan`` (``plan_of``) to ``path`` as JSON."""
    with open(path, "w", encoding="utf-8") as f:
        f.write(plan_json(plan))


def read_json_plan(path: str | os.PathLike) -> dict[str, Any]:
    """The JSON object in ``path``, as read (raises PlanError if it is not one)."""
    try:
        with open(path, "rb") as f:
            text = f.read()
    except OSError as exc:
        raise PlanError(f"cannot read the plan {os.fspath(path)!r}: {exc.strerror or exc}") from exc
    return parse_plan(text, os.fspath(path))


def parse_plan(text: str | bytes, source: str) -> dict[str, Any]:
    """The JSON object in ``text`` (a plan file's content, e.g. an upload, named ``source``);
    raises PlanError if it is not UTF-8 JSON holding one object."""
    try:
        data = json.loads(text, parse_constant=_no_constant)
    except ValueError as exc:  # UnicodeDecodeError and JSONDecodeError alike
        raise PlanError(f"the plan {source!r} is not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise PlanError(f"the plan {source!r} must be a JSON object of unit name to choice, "
                        f"not a {type(data).__name__}")
    return data


def channel_plan(data: dict[str, Any]) -> dict[str, Any]:
    """``{unit_name: number}`` from a JSON object whose values are numbers or, as in config
    templates and MMRazor's dumped choices, ``{"choice": x}`` / ``{"chosen": x}``."""
    plan = {}
    for name, value in data.items():
        if name == HISTORY_KEY:  # the explorer's plan history, not a choice
            continue
        if isinstance(value, dict):
            keys = [k for k in ("choice", "chosen") if k in value]
            if not keys:
                raise PlanError(f"unit {name!r}: an object choice needs a 'choice' or 'chosen' key")
            value = value[keys[0]]
        if name.startswith("block:") and value in ("keep", "drop"):  # a block's depth choice
            plan[name] = value
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise PlanError(f"unit {name!r}: a choice is a number, got {value!r}")
        plan[name] = value
    return plan


def read_plan(path: str | os.PathLike) -> dict[str, Any]:
    """The plan in ``path`` as ``{unit_name: choice}``. Values may be numbers or, as in config
    templates and MMRazor's dumped choices, ``{"choice": x}`` / ``{"chosen": x}``."""
    return channel_plan(read_json_plan(path))


def load_choices(mutator: Any, path: str | os.PathLike) -> dict[Any, Any]:
    """Apply the plan in ``path`` to the mutator and return the choices it set.

    Every mutable unit must be named, and nothing else; on any problem :class:`PlanError`
    says what does not fit and no choice changes.
    """
    return apply_plan(mutator, read_plan(path), os.fspath(path))


def apply_plan(mutator: Any, plan: dict[str, Any], source: str) -> dict[Any, Any]:
    """Check ``plan`` (``{unit_name: choice}``, read from ``source``) against the mutator and
    apply it in one atomic ``set_choices``; raises PlanError, changing nothing, if it does not fit."""
    by_name = {str(u.name): u.name for u in mutator.mutable_units}
    fixed = {str(u.name): u for u in mutator.units if not u.is_mutable}
    blocks = getattr(mutator, "block_units", [])  # depth choices: removable blocks are named too
    by_name.update({b.name: b.name for b in blocks if b.is_mutable})
    fixed.update({b.name: b for b in blocks if not b.is_mutable})
    problems = []
    unknown = [n for n in plan if n not in by_name and n not in fixed]
    if unknown:
        problems.append(f"names units this model does not have: {_few(unknown)}")
    not_prunable = [n for n in plan if n in fixed]
    if not_prunable:
        problems.append(f"sets units that are not prunable: {_few(not_prunable)}")
    missing = [n for n in by_name if n not in plan and not n.startswith("block:")]
    if missing:
        problems.append(f"leaves out {len(missing)} of the model's {len(by_name)} units: {_few(missing)}")
    if problems:
        raise PlanError(f"the plan {source!r} does not fit this model: it " + "; it ".join(problems))
    choices = {by_name[n]: v for n, v in plan.items()}
    choices.update({b.name: "keep" for b in blocks if b.is_mutable and b.name not in plan})  # older plans: depth kept
    try:
        mutator.set_choices(choices)
    except (KeyError, ValueError, TypeError) as exc:
        message = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        raise PlanError(f"the plan {source!r} does not fit this model: {message}") from exc
    return choices


# -- plans with module choices (searchable ops) ---------------------------------------------------
def module_plan(module_mutator: Any) -> dict[str, Any]:
    """``{mutable module name: candidate name}`` (MMRazor's subnet form; None: every candidate)."""
    current = module_mutator.current_choices
    return {name: current[gid] for gid, names in module_mutator.group_names.items() for name in names}


def _group_choices(module_mutator: Any, entries: dict[str, Any], source: str) -> dict[int, Any]:
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


def apply_plan_data(channel_mutator: Any, module_mutator: Any, data: dict[str, Any],
                    source: str) -> tuple[dict[Any, Any], dict[int, Any]]:
    """Apply a plan object (``plan_of``'s form, read from ``source``) to the channel mutator
    and, if given, the module mutator; returns (channel choices, group choices). On any problem
    raises PlanError, changing nothing."""
    if module_mutator is None:
        return apply_plan(channel_mutator, channel_plan(data), source), {}
    names = module_mutator.name2mutable
    modules = _group_choices(module_mutator, {k: v for k, v in data.items() if k in names}, source)
    channels = channel_plan({k: v for k, v in data.items() if k not in names})
    applied = apply_plan(channel_mutator, channels, source)  # atomic; modules are already checked
    module_mutator.set_choices(modules)
    return applied, modules


def _few(names: list[str], limit: int = 3) -> str:
    shown = ", ".join(repr(n) for n in names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number a plan may hold")
