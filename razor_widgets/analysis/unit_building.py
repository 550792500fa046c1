"""Units from the union-find: elements that always appear side by side in the same order in
every slot form a unit, so concatenations and splits give sub-range units and grouped layers
give repeated blocks."""
from __future__ import annotations

import math

import numpy as np
import torch

from ..channels.analysis_result import UnitSpec
from ..channels.channel_range import Channel
from ..channels.channel_space import compress, varying_dims
from ..channels.context import AnalysisContext, Slot
from .channel_chains import channel_chains, reasons_by_chain
from .slot_cuts import cut_slots


def _param_slots(ctx: AnalysisContext, roots: np.ndarray) -> None:
    """Parameters used by functional ops: sliceable when their elements vary along one dim."""
    for name, (ids, _shape) in ctx.param_ids.items():
        dims = varying_dims(compress(torch.from_numpy(roots[ids.reshape(-1).numpy()]).reshape(ids.shape)))
        if len(dims) == 1:
            dim = dims[0]
            line = ids.movedim(dim, 0).reshape(ids.shape[dim], -1)[:, 0]
            ctx.slot(name, True, line, param_dim=dim)
        elif len(dims) > 1:
            ctx.fix(ids, f"parameter {name!r} mixes channels along several dims")
    # parameters still in ctx.params.pending were only fixed, one element per position: they
    # mix channels along several dims, hold no slot and meet no other element


def sorted_unique(values: np.ndarray) -> np.ndarray:
    """``np.unique(values)`` by a sort: numpy 2.4's hash-based ``unique`` is up to 9x slower on
    millions of distinct ids (the analysis of a 405B-shaped model spent most of its time there)."""
    values = np.ravel(values)
    if len(values) > 1:  # runs of one value (a chain along a layer's channels) first: the sort gets far less
        values = values[np.concatenate([[True], values[1:] != values[:-1]])]
    ordered = np.sort(values)
    return ordered[np.concatenate([[True], ordered[1:] != ordered[:-1]])] if len(ordered) else ordered


def build_units(ctx: AnalysisContext, roots: np.ndarray) -> list[UnitSpec]:
    """One :class:`UnitSpec` per chain of elements that appear side by side in every slot, with its
    channel ranges, repeats, fixed reasons and divisor; in model order."""
    _param_slots(ctx, roots)
    # 1. each slot (pieces cut by slices) as a sequence of roots, consecutive repeats folded into an expand ratio
    seqs: list[tuple[Slot, np.ndarray, int]] = []
    for slot in cut_slots(ctx.slots, ctx.cuts, roots):
        r = roots[slot.ids.numpy()]
        change = np.flatnonzero(np.diff(r)) + 1
        starts = np.concatenate([[0], change])
        lengths = np.diff(np.concatenate([starts, [len(r)]]))
        expand = int(lengths[0]) if len(set(lengths.tolist())) == 1 else 1
        seq = r[::expand] if expand > 1 else r
        seqs.append((slot, seq, expand))
    # 2. link a -> b when every occurrence of a is followed by b and every b preceded by a
    a_parts, b_parts = [], []
    distinct = list({seq.tobytes(): seq for _, seq, _ in seqs}.values())  # many slots repeat one sequence
    for seq in distinct:
        a_parts.append(np.concatenate([[-1], seq]))
        b_parts.append(np.concatenate([seq, [-1]]))
    n = len(roots)
    keys = sorted_unique((np.concatenate(a_parts) + 1) * (n + 1) + np.concatenate(b_parts) + 1)
    pairs = np.stack([keys // (n + 1) - 1, keys % (n + 1) - 1], 1)
    nsucc = np.bincount(pairs[:, 0][pairs[:, 0] >= 0], minlength=n)
    npred = np.bincount(pairs[:, 1][pairs[:, 1] >= 0], minlength=n)
    inner = pairs[(pairs[:, 0] >= 0) & (pairs[:, 1] >= 0) & (pairs[:, 0] != pairs[:, 1])]
    linked = inner[(nsucc[inner[:, 0]] == 1) & (npred[inner[:, 1]] == 1)]
    chain_id, chain_pos, chains = channel_chains(sorted_unique(np.concatenate(distinct)), linked, n)
    # 3. decompose every slot into runs of chain occurrences
    runs: dict[int, list[tuple[Slot, int, int, int]]] = {}  # chain -> (slot, start, count, expand)
    for slot, seq, expand in seqs:
        c = int(chain_id[seq[0]])
        if chain_pos[seq[0]] == 0 and len(chains[c]) == len(seq):  # the whole slot is one chain
            runs.setdefault(c, []).append((slot, 0, 1, expand))
            continue
        p, seq_list = 0, seq.tolist()
        while p < len(seq_list):
            c = int(chain_id[seq_list[p]])
            length = len(chains[c])
            count = 1
            while p + (count + 1) * length <= len(seq_list) and seq_list[p + count * length] == chains[c][0]:
                count += 1
            runs.setdefault(c, []).append((slot, p, count, expand))
            p += count * length
    chain_reasons = reasons_by_chain(ctx.space.fixed_pairs(), chain_id, chain_pos)
    chain_divisor: dict[int, int] = {}
    for ids, divisor in ctx.divisors:
        for c in sorted_unique(chain_id[roots[ids[ids >= 0].numpy()]]).tolist():
            if c >= 0:
                chain_divisor[c] = math.lcm(chain_divisor.get(c, 1), divisor)
    chain_min: dict[int, int] = {}
    for ids, kept in ctx.minimums:
        for c in sorted_unique(chain_id[roots[ids[ids >= 0].numpy()]]).tolist():
            if c >= 0:
                chain_min[c] = max(chain_min.get(c, 1), kept)
    # 4. one unit per chain
    units = []
    for c, chain in enumerate(chains):
        chain_runs = runs.get(c, [])
        if not chain_runs:
            continue
        repeats = math.gcd(*[count for _, _, count, _ in chain_runs])
        spec = UnitSpec(num_channels=len(chain) * repeats, repeats=repeats)
        spec.order = min(slot.order for slot, _, _, _ in chain_runs)
        for slot, start, count, expand in sorted(chain_runs, key=lambda x: (x[0].order, x[0].offset, x[1])):
            span = (slot.offset + start * expand, slot.offset + (start + count * len(chain)) * expand)
            item = Channel(slot.name, None, span,
                           slot.is_output, expand, slot.param_dim)
            (spec.output_related if slot.is_output else spec.input_related).append(item)
        spec.fixed_reasons.extend(chain_reasons.get(c, []) or _no_layer_reason(spec, ctx.layer_params))
        spec.roots = chain.tolist()
        spec.divisor = chain_divisor.get(c, 1)
        spec.min_kept = chain_min.get(c, 1)
        units.append(spec)
    units.sort(key=lambda u: u.order)
    return units


def _no_layer_reason(spec: UnitSpec, layer_params: frozenset[str] | set[str] = frozenset()) -> list[str]:
    """A unit of parameter entries only: no layer on either side can shrink with it, so slicing
    the parameters would leave the data they meet (``ls * branch(x)``) at full width. The
    parameters a layer kind runs as a layer (3-D expert weights) are layers here."""
    items = spec.output_related + spec.input_related
    if any(item.param_dim is None or item.name in layer_params for item in items):
        return []
    names = ", ".join(dict.fromkeys(item.name for item in items))
    return [f"no layer reads or writes these channels, only the parameter(s) {names}: "
            "slicing them alone would not match the data they meet"]
