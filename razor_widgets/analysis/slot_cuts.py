"""Fused layers sliced into parts (``qkv[..., :q]``, ``qkv[..., q:q + kv]``): the pieces of a side.

A slice that takes a contiguous run of a channel dim marks where the run starts and ends
(``record_cuts``, called by the movement rules). Before units are formed, every layer side holding
those channels is cut there (``cut_slots``): the q, k and v parts of a fused projection are then
separate ranges, each with its own channels per head, so a KV group owns its query heads, its key
and its value in three ranges of one layer, as it owns three layers in an unfused model.
"""
from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from ..channels.channel_space import compress, varying_dims

if TYPE_CHECKING:
    from ..channels.context import AnalysisContext


def record_cuts(ctx: AnalysisContext, source: torch.Tensor, parts: list[torch.Tensor]) -> None:
    """Add to ``ctx.cuts`` the elements where a part that is a contiguous run of ``source``'s
    channels along a dim starts and ends (``source`` and ``parts``: id tensors of a slice op)."""
    source = compress(source)
    for dim in varying_dims(source):
        line = source.movedim(dim, -1).reshape(-1, source.shape[dim])[0]
        for part in parts:
            part = compress(part)
            if part.dim() != source.dim() or not 1 < part.shape[dim] < len(line):
                continue
            run = part.movedim(dim, -1).reshape(-1, part.shape[dim])[0]
            for start in (line == run[0]).nonzero().flatten().tolist():
                end = start + len(run)
                if end <= len(line) and torch.equal(line[start:end], run):
                    ctx.cuts.update(line[[i for i in (start, end) if i < len(line)]].tolist())
                    break


def cut_slots(slots: list[Any], cuts: set[int], roots: np.ndarray) -> list[Any]:
    """Slots split into pieces where a cut element starts a new run (``offset``: where a piece
    starts in its side). A slot whose channels come in runs of one length (``split`` into equal
    parts of the same channels) stays whole: its unit keeps one range with repeats."""
    if not cuts:
        return slots
    cut_ids = torch.tensor(sorted(cuts), dtype=torch.long)
    pieces = []
    for slot in slots:
        ids = slot.ids
        if _uniform_runs(roots[ids.numpy()]):
            pieces.append(slot)
            continue
        at = torch.isin(ids, cut_ids)
        at[0] = False
        at[1:] &= ids[1:] != ids[:-1]
        bounds = [0, *at.nonzero().flatten().tolist(), len(ids)]
        pieces += [slot] if len(bounds) == 2 else [
            dataclasses.replace(slot, ids=ids[a:b], offset=slot.offset + a) for a, b in zip(bounds, bounds[1:])]
    return pieces


def _uniform_runs(line: np.ndarray) -> bool:
    """Whether consecutive equal roots come in runs of one length."""
    starts = np.concatenate([[0], np.flatnonzero(np.diff(line)) + 1, [len(line)]])
    return len(set(np.diff(starts).tolist())) == 1
