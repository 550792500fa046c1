"""Models built on the meta device (``with torch.device("meta")``): shapes without data.

Such a model prepares like a real one (the analysis and the counts read shapes only), so a
model too big to load can be explored and a plan saved; exporting needs the real weights.
"""
from __future__ import annotations

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


