"""Models built on the meta device (``with torch.device("meta")``): shapes without data.

Such a model prepares like a real one (the analysis and the counts read shapes only), so a
model too big to load can be explored and a plan saved; exporting needs the real weights.
"""
from __future__ import annotations

import torch
from torch import nn


class MetaDeviceError(RuntimeError):
    """An operation that needs tensor data was asked of a model on the meta device."""


def is_meta_model(model: nn.Module | None) -> bool:
    """Whether any parameter or buffer of ``model`` is on the meta device (holds no data)."""
    if model is None:
        return False
    return any(t.is_meta for t in (*model.parameters(), *model.buffers()))


def require_real_weights(model: nn.Module | None, action: str) -> None:
    """Raise :class:`MetaDeviceError` saying what to do when ``model`` lives on the meta device."""
    if is_meta_model(model):
        raise MetaDeviceError(
            f"{action} needs real weights, but the model is on the meta device (it has shapes, no "
            "data). Build the same architecture with real weights, prepare it, load the plan "
            "made on the meta model (load_choices(mutator, path)) and call to_static() there."
        )


def half_precision_hint(model: nn.Module, error: BaseException) -> str:
    """A sentence for a forward that failed because a kernel runs only in bfloat16/float16
    (``torch._grouped_mm``, the MoE experts of transformers 5, also on the meta device) while the
    model is in another dtype; empty otherwise."""
    message = str(error).lower()
    if "bfloat16" not in message and "float16" not in message:
        return ""
    dtypes = {p.dtype for p in model.parameters() if p.is_floating_point()}
    if not dtypes or dtypes & {torch.bfloat16, torch.float16}:
        return ""
    where = " on the meta device" if is_meta_model(model) else ""
    return (f" (a kernel of this model runs only in bfloat16 or float16, and the model is in "
            f"{', '.join(sorted(str(d).removeprefix('torch.') for d in dtypes))}{where}: build it in bfloat16, "
            "e.g. model.to(torch.bfloat16) or from_config(config, dtype=torch.bfloat16))")
