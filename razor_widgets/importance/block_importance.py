"""Block importance: how much a block changes the residual stream on calibration data.

The block-influence score of ShortGPT (Men et al., 2024): ``1 - cos(x, y)`` between the stream
before (``x``) and after (``y``) the block, averaged over the calibration samples (each sample's
stream compared as one vector, so it holds for any layout: tokens, NCHW, NHWC). A block that
barely turns the stream scores near 0 and is the first to drop. Measured at full choices (every
channel and block kept), in eval mode, without gradients; the choices are put back after.
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from ..mutables.block_mutable import tensor_leaves
from .calibration import calibration_batches
from .criteria import _call, _eval_mode, _full_choices

__all__ = ["block_importance"]


def block_importance(mutator: Any, calibration: Any, blocks: list[Any] | None = None) -> dict[str, float]:
    """``{block name: 1 - mean cosine of the stream before and after}`` for the removable blocks
    (or ``blocks``, names or ``BlockMutable``s) on ``calibration`` (batches as for the data criteria)."""
    model = mutator.model
    if model is None:
        raise RuntimeError("call prepare_from_supernet(model) before measuring block importance")
    chosen = mutator.removable_blocks if blocks is None else [
        b if not isinstance(b, str) else mutator.block(b) for b in blocks]
    sums = {b.name: 0.0 for b in chosen}
    counts = dict.fromkeys(sums, 0)
    modules = dict(model.named_modules())
    hooks = [modules[b.path].register_forward_hook(_measure(b, sums, counts), with_kwargs=True) for b in chosen]
    saved = [(b, b.current_choice) for b in mutator.removable_blocks]
    try:
        for block, _ in saved:
            block.current_choice = "keep"
        with _full_choices(mutator.mutable_units), _eval_mode(model), torch.no_grad():
            for batch in calibration_batches(calibration):
                _call(model, batch.inputs)
    finally:
        for hook in hooks:
            hook.remove()
        for block, choice in saved:
            block.current_choice = choice
    return {name: sums[name] / counts[name] if counts[name] else 0.0 for name in sums}


def _measure(block: Any, sums: dict[str, float], counts: dict[str, int]) -> Any:
    def hook(module: Any, args: tuple, kwargs: dict, out: Any) -> None:
        x = tensor_leaves((args, kwargs))[block.input_index]
        y = tensor_leaves(out)[block.output_index]
        if getattr(block, "kind", "block") == "branch":  # the parent adds the branch: the stream after is x + f(x)
            y = x + y
        cos = F.cosine_similarity(x.reshape(len(x), -1).double(), y.reshape(len(y), -1).double(), dim=1)
        sums[block.name] += float((1.0 - cos).sum())
        counts[block.name] += len(x)
    return hook
