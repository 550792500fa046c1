"""Channel elements: ids for every channel a tensor carries, a union-find over them, and fixes.

Every channel of every traced tensor is an integer *element*. A tensor's ids are an int64
tensor broadcastable to the tensor's shape (size 1 along dims where the ids do not vary), so a
feature map ``[N, C, H, W]`` has ids of shape ``[1, C, 1, 1]``. Two special values:

* ``NONE`` (-1): no channel structure (attention scores, say): never couples to anything;
* ``CONST`` (-2): data we cannot resize (model inputs, constants made in forward): an element
  that meets it becomes fixed (non-prunable).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

NONE = -1
CONST = -2


def compress(ids: torch.Tensor) -> torch.Tensor:
    """Shrink every dim along which the ids are constant to size 1.

    Broadcast dims (stride 0, as ``expand`` makes them) are constant by construction and are
    shrunk first without comparing; the other dims are then compared on what is left, so the
    cost follows the distinct ids, not the elements of the tensor they stand for. (The dims
    shrunk are those constant in the whole tensor, whatever the order: shrinking a constant
    dim changes no other dim's constancy.)"""
    for dim in range(ids.dim()):
        if ids.shape[dim] > 1 and ids.stride(dim) == 0:
            ids = ids.narrow(dim, 0, 1)
    for dim in sorted(range(ids.dim()), key=lambda d: -ids.shape[d]):  # the largest first: it shrinks the rest most
        if ids.shape[dim] > 1 and bool((ids == ids.narrow(dim, 0, 1)).all()):
            ids = ids.narrow(dim, 0, 1)
    return ids.contiguous()


def unbroadcast(*tensors: torch.Tensor) -> list[torch.Tensor]:
    """Tensors of one shape, each shrunk to size 1 along the dims that all of them broadcast
    (stride 0): the same values position by position, without the copies."""
    out = list(tensors)
    for dim in range(out[0].dim()):
        if out[0].shape[dim] > 1 and all(t.stride(dim) == 0 for t in out):
            out = [t.narrow(dim, 0, 1) for t in out]
    return out


def varying_dims(ids: torch.Tensor) -> list[int]:
    """The dims along which an id tensor varies (size > 1); the others are broadcast."""
    return [d for d in range(ids.dim()) if ids.shape[d] > 1]


@dataclass
class ChannelSpace:
    """Allocates element ids, records unions and fixed elements, then resolves roots."""

    count: int = 0
    _pairs: list[tuple[torch.Tensor, torch.Tensor]] = field(default_factory=list)
    _fixed: list[list] = field(default_factory=list)  # [ids or None (reserved), reason]
    roots: np.ndarray | None = None

    def fresh(self, n: int) -> torch.Tensor:
        """``n`` new element ids, one per channel, not yet joined with any other."""
        ids = torch.arange(self.count, self.count + n, dtype=torch.long)
        self.count += n
        return ids

    def union(self, a: torch.Tensor, b: torch.Tensor) -> None:
        """Union elements pairwise where both are elements (>= 0)."""
        a, b = unbroadcast(*torch.broadcast_tensors(a, b))
        a, b = a.reshape(-1), b.reshape(-1)
        keep = (a >= 0) & (b >= 0) & (a != b)
        if bool(keep.any()):
            self._pairs.append((a[keep], b[keep]))

    def fix(self, ids: torch.Tensor, reason: str) -> None:
        """Mark the elements among ``ids`` (>= 0) as not prunable, for ``reason``."""
        ids = unbroadcast(ids)[0].reshape(-1)
        ids = ids[ids >= 0]
        if ids.numel():
            self._fixed.append([torch.unique(ids), reason])

    def reserve_fix(self, reason: str) -> int:
        """Keep a place in the order of fixes for elements that get their ids later (a
        parameter's, see ``AnalysisContext``): ``fill_fix`` gives them."""
        self._fixed.append([None, reason])
        return len(self._fixed) - 1

    def fill_fix(self, index: int, ids: torch.Tensor) -> None:
        """Give the place kept by :meth:`reserve_fix` its elements (those >= 0 among ``ids``)."""
        ids = ids.reshape(-1)
        self._fixed[index][0] = torch.unique(ids[ids >= 0])

    # -- resolution -----------------------------------------------------------------------
    def resolve(self) -> np.ndarray:
        """Compute the root (smallest element) of every element's set."""
        labels = np.arange(self.count, dtype=np.int64)
        if self._pairs:
            a = torch.cat([p[0] for p in self._pairs]).numpy()
            b = torch.cat([p[1] for p in self._pairs]).numpy()
            while True:
                la, lb = labels[a], labels[b]
                if np.array_equal(la, lb):
                    break
                low = np.minimum(la, lb)
                np.minimum.at(labels, la, low)
                np.minimum.at(labels, lb, low)
                while True:  # pointer jumping until every label is a root
                    nxt = labels[labels]
                    if np.array_equal(nxt, labels):
                        break
                    labels = nxt
        self.roots = labels
        return labels

    def fixed_pairs(self) -> tuple[np.ndarray, np.ndarray, list[str]]:
        """Every (root, reason) of a fixed element once, in the order the fixes were made.

        Returns the roots, the reason indices and the reasons they index.
        """
        assert self.roots is not None
        index: dict[str, int] = {}
        root_parts, reason_parts = [], []
        for ids, reason in self._fixed:
            if ids is None or not ids.numel():  # reserved for elements never given ids
                continue
            k = index.setdefault(reason, len(index))
            root_parts.append(self.roots[ids.numpy()])
            reason_parts.append(np.full(len(ids), k, dtype=np.int64))
        if not root_parts:
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64), []
        roots, reasons = np.concatenate(root_parts), np.concatenate(reason_parts)
        _, first = np.unique(roots * len(index) + reasons, return_index=True)
        first.sort()
        return roots[first], reasons[first], list(index)
