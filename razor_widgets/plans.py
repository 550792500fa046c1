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

__all__ = ["PlanError", "apply_plan", "channel_plan", "load_choices", "read_json_plan", "read_plan", "save_choices"]


class PlanError(ValueError):
    """A plan file that cannot be read, or that does not fit the model."""


def save_choices(mutator: Any, path: str | os.PathLike) -> None:
    """Write the mutator's current choices to ``path`` as JSON ``{unit_name: choice}``."""
    choices = {str(name): choice for name, choice in mutator.current_choices.items()}
    with open(path, "w", encoding="utf-8") as f:
        json.dump(choices, f, indent=2)
        f.write("\n")


def read_json_plan(path: str | os.PathLike) -> dict[str, Any]:
    """The JSON object in ``path``, as read (raises PlanError if it is not one)."""
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f, parse_constant=_no_constant)
    except OSError as exc:
        raise PlanError(f"cannot read the plan {os.fspath(path)!r}: {exc.strerror or exc}") from exc
    except ValueError as exc:
        raise PlanError(f"the plan {os.fspath(path)!r} is not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise PlanError(f"the plan {os.fspath(path)!r} must be a JSON object of unit name to choice, "
                        f"not a {type(data).__name__}")
    return data


def channel_plan(data: dict[str, Any]) -> dict[str, Any]:
    """``{unit_name: number}`` from a JSON object whose values are numbers or, as in config
    templates and MMRazor's dumped choices, ``{"choice": x}`` / ``{"chosen": x}``."""
    plan = {}
    for name, value in data.items():
        if isinstance(value, dict):
            keys = [k for k in ("choice", "chosen") if k in value]
            if not keys:
                raise PlanError(f"unit {name!r}: an object choice needs a 'choice' or 'chosen' key")
            value = value[keys[0]]
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
    problems = []
    unknown = [n for n in plan if n not in by_name and n not in fixed]
    if unknown:
        problems.append(f"names units this model does not have: {_few(unknown)}")
    not_prunable = [n for n in plan if n in fixed]
    if not_prunable:
        problems.append(f"sets units that are not prunable: {_few(not_prunable)}")
    missing = [n for n in by_name if n not in plan]
    if missing:
        problems.append(f"leaves out {len(missing)} of the model's {len(by_name)} units: {_few(missing)}")
    if problems:
        raise PlanError(f"the plan {source!r} does not fit this model: it " + "; it ".join(problems))
    choices = {by_name[n]: v for n, v in plan.items()}
    try:
        mutator.set_choices(choices)
    except (KeyError, ValueError, TypeError) as exc:
        message = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        raise PlanError(f"the plan {source!r} does not fit this model: {message}") from exc
    return choices


def _few(names: list[str], limit: int = 3) -> str:
    shown = ", ".join(repr(n) for n in names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number a plan may hold")
