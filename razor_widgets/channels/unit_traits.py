"""What the analysis saw a unit's channels do, beyond which layers read and write them: the
facts that say what a unit *is* (``unit_labels.py`` turns them into roles and labels).

Two facts, recorded by the rules while they run and handed to each unit after the union-find:
``attention`` (the channels are the heads of an attention op, or positions in its heads) and
``sum_scopes`` (the modules whose forward adds them to other channels: a residual join). What
each means: docs/channel-analysis.md.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

SUM_OPS = frozenset({"add", "add_", "sub", "sub_", "rsub", "__add__", "__radd__", "__iadd__",
                     "__sub__", "__rsub__", "__isub__"})


@dataclass(frozen=True)
class UnitTraits:
    """Facts about a unit's channels from the analysis (see the module docstring)."""

    attention: bool = False
    sum_scopes: tuple[str, ...] = ()


def record_sum(ctx: Any, node: Any, refs: list, ids: list[torch.Tensor], out: torch.Tensor) -> None:
    """An add (or subtract) of two or more computed tensors with channels: a residual join in
    ``node.scope``: the operands carry different channels, which the add makes one.
    Parameters added to data (a position embedding, a bias) and an elementwise function of one
    tensor (``x + 0.044715 * x ** 3`` in a GELU) are no join."""
    if node.name not in SUM_OPS:
        return
    carriers = [i for r, i in zip(refs, ids) if r.param is None and bool((i >= 0).any())]
    if len(carriers) < 2:
        return
    shape = torch.broadcast_shapes(*[tuple(c.shape) for c in carriers])
    first = carriers[0].expand(shape)
    if any(not torch.equal(first, c.expand(shape)) for c in carriers[1:]):  # not ``x + f(x)`` of one x
        ctx.sums.append((out, node.scope))


def assign_traits(units: list, roots: np.ndarray, head_ids: list[torch.Tensor],
                  sums: list[tuple[torch.Tensor, str]]) -> None:
    """Give every unit spec (``analysis.UnitSpec``) its traits, from the elements the rules
    marked (``roots``: element -> its root; a unit's ``roots`` are the roots it holds)."""
    owner: dict[int, int] = {}
    for index, spec in enumerate(units):
        for root in spec.roots:
            owner[int(root)] = index

    def units_of(ids: torch.Tensor) -> set[int]:
        valid = ids.reshape(-1)
        valid = valid[valid >= 0]
        if not valid.numel():
            return set()
        found = {owner.get(int(r)) for r in np.unique(roots[valid.numpy()]).tolist()}
        return found - {None}

    attention: set[int] = set()
    for ids in head_ids:
        attention |= units_of(ids)
    scopes: dict[int, list[str]] = {}
    for ids, scope in sums:
        for index in units_of(ids):
            if scope not in scopes.setdefault(index, []):
                scopes[index].append(scope)
    for index, spec in enumerate(units):
        spec.traits = UnitTraits(index in attention, tuple(scopes.get(index, ())))
