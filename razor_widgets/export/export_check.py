"""The export checks itself: the exported model must compute what the masked model computes.

:func:`verify_export` runs the masked supernet and the export on the example input and compares
every output; when they differ, it finds the first layer whose output differs and
:class:`ExportError` names it and its units. A detector's selection outside modules (top-k, NMS)
only warns (:class:`ExportCheckWarning`). The check changes nothing (flags, buffers, random
state, choices). The policy: docs/export-check.md.
"""
from __future__ import annotations

import warnings
from typing import Any

from torch import nn

from ..channels.model_outputs import dataclasses_as_dicts, held_roots, left_out, narrowed_outputs
from .difference_locator import locate_difference, units_touching
from .model_runs import call_model, model_rtol, on_model_device, untouched
from .output_comparison import compare_outputs

MAX_UNITS_NAMED = 6


class ExportError(RuntimeError):
    """The exported model does not compute what the masked model computes (or fails to run).

    ``layer`` is the qualified name of the first module whose output differs (or in which the
    export raised; None where no single module was found), ``units`` the names of the mutable
    units that touch it.
    """

    def __init__(self, message: str, layer: str | None = None, units: list[Any] | None = None) -> None:
        super().__init__(message)
        self.layer = layer
        self.units = list(units or [])


class UncheckedExportWarning(UserWarning):
    """``to_static()`` returned a model it could not check (no example input, meta tensors)."""


class ExportCheckWarning(UserWarning):
    """``to_static()``'s final outputs differ from the masked model's only after selection outside
    modules (top-k, NMS, thresholds) while every module's output matches: the export is returned."""


def verify_export(mutator: Any, static: nn.Module, example_inputs: Any = None) -> nn.Module:
    """Return ``static`` when it computes what ``mutator.model`` (masked) computes on the
    example input (``example_inputs``, else the one the mutator was prepared with); raise
    :class:`ExportError` when it does not. Without an input, warn
    (:class:`UncheckedExportWarning`) that nothing was checked. (A model on the meta device never
    gets here: ``to_static`` refuses it first, with :class:`MetaDeviceError`.)"""
    model = mutator.model
    inputs = example_inputs if example_inputs is not None else getattr(mutator, "example_inputs", None)
    if inputs is None:
        return _unchecked(static, "the mutator has no example input (give one to prepare_from_supernet "
                                  "or to_static(example_inputs=...))")
    inputs = on_model_device(inputs, model)
    rtol = model_rtol(model)
    with untouched(model, static) as rerun:
        try:
            masked = call_model(model, inputs)
        except Exception as error:  # the masked model itself fails: there is nothing to compare with
            return _unchecked(static, f"the masked model failed on the example input: {_line(error)}")
        rerun()
        if hasattr(mutator, "kept_output_channels"):  # outputs that follow the pruned model: its kept channels
            masked = narrowed_outputs(masked, mutator.kept_output_channels())
            masked = _without_caches_of_dropped_blocks(mutator, masked)
        unchecked: list[str] = []
        try:
            exported = call_model(static, inputs)
        except Exception as error:
            problem = f"the exported model raised {_line(error)}"
        else:  # the comparison walks any structure and never raises (what it cannot walk: unchecked)
            problem = compare_outputs(dataclasses_as_dicts(masked), dataclasses_as_dicts(exported), rtol, unchecked)
        if problem is None:
            if unchecked:
                _unchecked_parts(unchecked)
            return static
        del masked
        rerun()
        found = locate_difference(mutator, model, static, inputs, rtol, rerun)
    if found.layer is None and found.same_modules and found.selection is not None:
        return _selected_differently(static, problem, found.selection)
    units = units_touching(mutator, found.layer)
    raise ExportError(_message(problem, found.layer, found.detail, static, units), found.layer, units)


def _without_caches_of_dropped_blocks(mutator: Any, masked: Any) -> Any:
    """While blocks are dropped, the masked model's caches (objects holding tensors in attributes)
    still hold the dropped blocks' entries, the export's only the kept ones': which entry belongs
    to which block is not recorded, so they are left out of the comparison and reported as such."""
    dropped = getattr(mutator, "dropped_paths", lambda: [])()
    if not dropped:
        return masked
    reason = (f"a cache: the masked model's holds the entries of the {len(dropped)} dropped "
              "block(s) too, so it is not compared while blocks are dropped")
    for root in held_roots(mutator.kept_output_channels()):
        masked = left_out(masked, root, reason)
    return masked


def _selected_differently(static: nn.Module, problem: str, where: str) -> nn.Module:
    kind = type(static.get_submodule(where)).__name__
    warnings.warn(f"to_static(): the final outputs differ ({problem}), but every layer's output matches "
                  f"the masked model's within tolerance, in the same order; the difference is born in "
                  f"{where or 'the model'!r} ({kind}), which owns no weights, gets the same inputs and "
                  "selects (top-k, NMS, a threshold) outside its modules: rounding picks differently. "
                  "The export is returned.", ExportCheckWarning, stacklevel=4)
    return static


def _unchecked_parts(parts: list[str]) -> None:
    more = f" and {len(parts) - MAX_UNITS_NAMED} more" if len(parts) > MAX_UNITS_NAMED else ""
    warnings.warn("to_static() checked the export, but could not compare these parts of the output: "
                  f"{'; '.join(parts[:MAX_UNITS_NAMED])}{more}. Every other part matches the masked model.",
                  UncheckedExportWarning, stacklevel=4)


def _unchecked(static: nn.Module, why: str) -> nn.Module:
    warnings.warn(f"to_static() did not check the export: {why}", UncheckedExportWarning, stacklevel=4)
    return static


def _line(error: BaseException) -> str:
    text = " ".join(str(error).split())
    return f"{type(error).__name__}: {text[:300]}" if text else type(error).__name__


def _message(problem: str, layer: str | None, detail: str, static: nn.Module, units: list[Any]) -> str:
    text = f"the exported model does not compute what the masked model computes: {problem}."
    if layer is None:
        text += " No single layer was found to differ first."
    else:
        kind = type(static.get_submodule(layer)).__name__ if layer else type(static).__name__
        text += f" First layer that differs: {layer or 'the model'!r} ({kind}): {detail}."
        named = ", ".join(map(str, units[:MAX_UNITS_NAMED]))
        more = f" and {len(units) - MAX_UNITS_NAMED} more" if len(units) > MAX_UNITS_NAMED else ""
        text += f" Units that touch it: {named}{more}." if units else " No mutable unit touches it."
    return text + " The mutator and the supernet are unchanged; to_static(check=False) skips this check."
