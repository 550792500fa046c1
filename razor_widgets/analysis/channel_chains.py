"""Chains of channel roots: the runs of roots that always appear side by side in the same
order, which become units, and the fixed reasons of each run (numpy over roots, not elements)."""
from __future__ import annotations

import numpy as np


def channel_chains(members: np.ndarray, linked: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray, list[np.ndarray]]:
    """Follow the links ``a -> b`` (each root has at most one of each) from every chain head.

    Returns every root's chain index and position (-1 for roots that are not members) and the
    chains as arrays of roots in order, chains ordered by their first root. Pointer jumping:
    ``up[x]`` is an ancestor ``dist[x]`` links back; doubling reaches the head in log steps.
    """
    up = np.arange(n, dtype=np.int64)
    up[linked[:, 1]] = linked[:, 0]
    dist = (up != np.arange(n)).astype(np.int64)
    while True:
        further = up[up]
        if np.array_equal(further, up):
            break
        dist = dist + dist[up]
        up = further
    heads, chain_of_member = np.unique(up[members], return_inverse=True)
    chain_id = np.full(n, -1, dtype=np.int64)
    chain_pos = np.full(n, -1, dtype=np.int64)
    chain_id[members] = chain_of_member
    chain_pos[members] = dist[members]
    order = np.lexsort((dist[members], chain_of_member))
    bounds = np.cumsum(np.bincount(chain_of_member, minlength=len(heads)))[:-1]
    return chain_id, chain_pos, np.split(members[order], bounds)


def reasons_by_chain(fixed: tuple[np.ndarray, np.ndarray, list[str]], chain_id: np.ndarray,
                      chain_pos: np.ndarray) -> dict[int, list[str]]:
    """The fixed reasons of every chain, each once: by position in the chain, then in the
    order the fixes were made."""
    roots, reasons, texts = fixed
    keep = chain_id[roots] >= 0
    roots, reasons = roots[keep], reasons[keep]
    chains = chain_id[roots]
    order = np.lexsort((np.arange(len(roots)), roots, chain_pos[roots], chains))
    chains, reasons = chains[order], reasons[order]
    _, first = np.unique(chains * max(len(texts), 1) + reasons, return_index=True)
    first.sort()
    by_chain: dict[int, list[str]] = {}
    for chain, reason in zip(chains[first].tolist(), reasons[first].tolist()):
        by_chain.setdefault(chain, []).append(texts[reason])
    return by_chain
