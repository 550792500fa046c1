"""Live params/MACs/FLOPs of a prepared mutator: the count formulas, evaluated incrementally.

The terms recorded by ``spec.py`` live in numpy arrays. When units change, only the
sides they feed and the terms that read those sides are recomputed, so one slider move
costs microseconds and no forward pass.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import nn

from ..channels.analysis_result import ChannelAnalysis
from ..mutables.mutable_channel import add_change_listener
from ..mutables.units import MutableChannelUnit
from ..trace.graph import TracedGraph
from .memory import MemoryTerms
from .resources import Resources
from .spec import build_spec

__all__ = ["ResourceCounter", "resource_counter", "mutator_resources"]


# -- the counter --------------------------------------------------------------------------------
_MISSING = object()


class ResourceCounter:
    """Live params/MACs/FLOPs of a prepared mutator's model at its current choices.

    Built once from the trace (no forward pass); each call reads the units' states, and
    recounts only the layers of units that changed since the last call. Use it through
    ``mutator.resources()``; ``resource_counter(mutator)`` returns the mutator's counter.
    """

    def __init__(self, model: nn.Module, trace: TracedGraph | None, analysis: ChannelAnalysis | None,
                 units: list[MutableChannelUnit]) -> None:
        if trace is None or analysis is None:
            raise RuntimeError(
                "resources() needs the geometry of a traced model: prepare the mutator with a "
                "tracing parse_cfg (ChannelAnalyzer), not from a config or predefined ops")
        spec = build_spec(model, trace, analysis, units)
        self.notes = list(spec.notes)
        self.units = list(units)
        self._channels = [u.mutable_channel for u in self.units]
        self._repeats = np.array([u.repeats for u in self.units] + [1], dtype=np.int64)
        self._bases = [u.num_channels // u.repeats for u in self.units]
        n_units = len(self.units)
        # linear sides: S = const + sum(coef * kept[unit])
        n_sides = len(spec.forms) + len(spec.special_defs)
        self._const = np.zeros(n_sides, dtype=np.int64)
        # one entry per (side, unit) pair of the linear sides: side S moves by coef * kept[unit]
        entry_side, entry_unit, entry_coef = [], [], []
        for form, i in spec.forms.items():
            self._const[i] = form.const
            for u, c in form.coefs:
                entry_side.append(i)
                entry_unit.append(u)
                entry_coef.append(c)
        self._entry_side = np.array(entry_side, dtype=np.int64)
        self._entry_unit = np.array(entry_unit, dtype=np.int64)
        self._entry_coef = np.array(entry_coef, dtype=np.int64)
        self._n_sides = n_sides
        self._specials = spec.special_defs
        # per unit: its linear entries and specials
        self._unit_entries = [np.flatnonzero(self._entry_unit == u) for u in range(n_units)]
        self._mask_counts: dict[int, tuple[Any, int]] = {}
        self._unit_specials: list[list[int]] = [[] for _ in range(n_units)]
        for j, special_side in enumerate(self._specials):
            for u in special_side.special.units:
                self._unit_specials[u].append(j)
        self._index_terms(spec, n_units)
        # state: originals at full choices, then the live state
        self._kept = np.array(self._bases + [1], dtype=np.int64)
        self._full_state()
        self._orig_layer = self._layer_sums()
        self.original = Resources(int(self._terms @ self._t_param), int(self._terms @ self._t_mac))
        self._memory = MemoryTerms(model, self.units, self._layer_names, self._t_layer, self._t_param)
        self._memory.record_original(self._kept, self._terms, self.original.params)
        self._tokens: list[Any] = [_MISSING] * n_units
        # units whose mutable channel reports its changes need no polling
        self._dirty: set[int] = set(range(n_units))  # read every unit once: choices may not be full
        self._polled = [u for u, unit in enumerate(self.units)
                        if not add_change_listener(unit.mutable_channel, _marker(self._dirty, u))]
        self._cached: Resources | None = None
        self.set_blocks([])

    def set_blocks(self, blocks: list[Any]) -> None:
        """Depth choices (``BlockMutable``s): a dropped block's layers count zero, as they leave the export."""
        self._blocks = list(blocks)
        layer_block = np.full(len(self._layer_names) + 1, -1, dtype=np.int64)
        for b, block in enumerate(self._blocks):
            for i, name in enumerate(self._layer_names):
                if name == block.path or name.startswith(block.path + "."):
                    layer_block[i] = b
        self._layer_block = layer_block[:len(self._layer_names)]
        self._term_block = layer_block[self._t_layer] if len(self._t_layer) else np.zeros(0, dtype=np.int64)
        self._block_state: tuple[bool, ...] = tuple(False for _ in self._blocks)

    def _alive(self, per_layer: bool = False) -> np.ndarray | None:
        """1 for the terms (or layers) kept, 0 for those of dropped blocks; None when none is dropped."""
        dropped = [b for b, block in enumerate(self._blocks) if block.dropped]
        if not dropped:
            return None
        owner = self._layer_block if per_layer else self._term_block
        return (~np.isin(owner, dropped)).astype(np.int64)

    def _index_terms(self, spec: Any, n_units: int) -> None:
        """The terms as arrays ordered by layer, and per unit the terms that read its sides."""
        terms = sorted(spec.terms, key=lambda t: spec.layers[t.layer])  # stable: by layer
        width = max([1] + [len(t.sides) for t in terms])
        self._layer_names = list(dict.fromkeys(t.layer for t in terms))
        layer_id = {name: i for i, name in enumerate(self._layer_names)}
        self._t_layer = np.array([layer_id[t.layer] for t in terms], dtype=np.int64)
        self._t_param = np.array([t.is_param for t in terms], dtype=np.int64)
        self._t_mac = 1 - self._t_param
        self._t_factor = np.array([t.factor for t in terms], dtype=np.int64)
        self._t_div = np.array([t.div for t in terms], dtype=np.int64)
        self._term_sides = np.zeros((len(terms), width), dtype=np.int64)  # 0 = the constant side
        for i, t in enumerate(terms):
            self._term_sides[i, :len(t.sides)] = t.sides
        self._layer_starts = np.flatnonzero(np.r_[1, np.diff(self._t_layer)]) if terms else \
            np.zeros(0, dtype=np.int64)
        # per unit: the terms that read one of its sides
        side_terms: dict[int, set[int]] = {}
        for i, row in enumerate(self._term_sides.tolist()):
            for s in row:
                if s:
                    side_terms.setdefault(s, set()).add(i)
        self._unit_terms = []
        for u in range(n_units):
            sides = set(self._entry_side[self._unit_entries[u]].tolist())
            sides |= {self._specials[j].side for j in self._unit_specials[u]}
            ts = set().union(*[side_terms.get(s, set()) for s in sides]) if sides else set()
            self._unit_terms.append(np.array(sorted(ts), dtype=np.int64))
        # per unit, the gathered arrays of its terms: a slider move then costs a few numpy calls
        self._weights = np.stack([self._t_param, self._t_mac], axis=1)
        self._unit_gathered = [(t, self._t_factor[t], _side_columns(self._term_sides[t]),
                                self._t_div[t] if (self._t_div[t] != 1).any() else None)
                               for t in self._unit_terms]
        self._unit_side_coefs = [list(zip(self._entry_side[e].tolist(), self._entry_coef[e].tolist()))
                                 for e in self._unit_entries]

    # -- state ----------------------------------------------------------------------------
    def _full_state(self) -> None:
        kept = self._kept[self._entry_unit].astype(np.float64) * self._entry_coef
        self._sides = self._const + np.rint(
            np.bincount(self._entry_side, weights=kept, minlength=self._n_sides)).astype(np.int64)
        self._sides[0] = 1
        for j in range(len(self._specials)):
            self._eval_special(j)
        self._terms = self._eval_terms(slice(None))
        self._params = int(self._terms @ self._t_param)
        self._macs = int(self._terms @ self._t_mac)
        self._kept_now = self._kept.tolist()  # the same, as Python ints for the per-unit path

    def _eval_special(self, j: int) -> None:
        side, special = self._specials[j].side, self._specials[j].special
        vec = [np.ones(1, dtype=np.int64)]
        for u in special.units:
            if self._kept[u] == self._bases[u]:
                vec.append(np.ones(self._bases[u], dtype=np.int64))
            else:
                vec.append(self.units[u].current_mask[:self._bases[u]].numpy().astype(np.int64))
        self._sides[side] = int((special.weights @ np.concatenate(vec)).max())

    def _eval_terms(self, idx: Any) -> np.ndarray:
        values = self._t_factor[idx] * self._sides[self._term_sides[idx]].prod(axis=1)
        return values // self._t_div[idx]

    def _layer_sums(self) -> tuple[np.ndarray, np.ndarray]:
        if not len(self._terms):
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
        starts = self._layer_starts
        return (np.add.reduceat(self._terms * self._t_param, starts),
                np.add.reduceat(self._terms * self._t_mac, starts))

    def _changed_units(self) -> list[int]:
        if not self._polled:  # the common case: every unit reports its own changes
            changed = sorted(self._dirty)
            self._dirty.clear()
            return changed
        changed = set(self._dirty)
        self._dirty.clear()
        for u in self._polled:
            token = self._token(u)
            if token is not self._tokens[u]:
                self._tokens[u] = token
                changed.add(u)
        return sorted(changed)

    def _token(self, u: int) -> Any:
        """An object that changes whenever unit ``u``'s choice does (its mask, or its count);
        a fresh object, so always "changed", for mutable channels that hold neither."""
        return self._channels[u].choice_token()

    def update(self, recount: bool = False) -> None:
        """Bring the counts up to date with the units' current choices.

        ``recount=True`` re-reads every unit and recomputes every term from scratch.
        """
        changed = self._changed_units()
        if recount:
            changed = list(range(len(self.units)))
        if not changed:
            return
        self._cached = None
        if recount or len(changed) * 4 > len(self.units):
            for u in changed:
                self._kept[u] = self._read_kept(u)
            self._full_state()
            return
        specials: set[int] = set()
        for u in changed:
            new = self._read_kept(u)
            delta = new - self._kept_now[u]
            if delta:  # a unit appears once per side: each side moves by coef * delta
                self._kept_now[u] = new
                self._kept[u] = new
                for side, coef in self._unit_side_coefs[u]:
                    self._sides[side] += coef * delta
            if self._unit_specials[u]:
                specials.update(self._unit_specials[u])
        for j in specials:
            self._eval_special(j)
        if len(changed) == 1:
            idx, factor, columns, div = self._unit_gathered[changed[0]]
        else:
            idx = np.unique(np.concatenate([self._unit_terms[u] for u in changed]))
            factor, columns, div = self._t_factor[idx], _side_columns(self._term_sides[idx]), self._t_div[idx]
        if len(idx):
            values = factor
            for column in columns:
                values = values * self._sides[column]
            self._terms[idx] = values // div if div is not None else values
            self._params, self._macs = (self._terms @ self._weights).tolist()

    def _read_kept(self, u: int) -> int:
        """Kept positions per block of unit ``u``; counted once per mask object."""
        token = self._token(u)
        hit = self._mask_counts.get(id(token))
        if hit is not None and hit[0] is token:
            return hit[1]
        kept = int(self.units[u].current_mask.sum()) // int(self._repeats[u])
        if isinstance(token, torch.Tensor):
            if len(self._mask_counts) > 4096:
                self._mask_counts.clear()
            self._mask_counts[id(token)] = (token, kept)  # holding the mask keeps its id unique
        return kept

    def _totals(self, state: tuple[bool, ...]) -> Resources:
        """Totals at the current choices, dropped blocks' terms zeroed. The KV cache of a dropped
        block leaves with it: its KV units count zero kept channels (no figure where part of the
        cache belongs to no unit, since that part cannot be placed in a block)."""
        alive = self._alive() if any(state) else None
        if alive is None:
            return Resources(self._params, self._macs, self.original.params, self.original.macs,
                             **self._memory.fields(self._kept, self._terms, self._params))
        terms = self._terms * alive
        params, macs = int(terms @ self._t_param), int(terms @ self._t_mac)
        kept = self._kept.copy()
        for block in self._blocks:
            if block.dropped:
                kept[[u for u, unit in enumerate(self.units)
                      if unit.channels and all(_inside(c.owner_name, block.path) for c in unit.channels)]] = 0
        fields = self._memory.fields(kept, terms, params)
        if self._memory.kv_const:
            fields["kv_per_token"] = None
        return Resources(params, macs, self.original.params, self.original.macs, **fields)

    # -- answers --------------------------------------------------------------------------
    def resources(self, by_layer: bool = False, recount: bool = False) -> Resources | dict[str, Resources]:
        """Totals, or ``{layer: Resources}`` with ``by_layer=True``, at the current choices."""
        self.update(recount)
        state = tuple(block.dropped for block in self._blocks)
        if state != self._block_state:
            self._block_state, self._cached = state, None
        if by_layer:
            params, macs = self._layer_sums()
            alive = self._alive(per_layer=True)
            if alive is not None:
                params, macs = params * alive, macs * alive
            o_params, o_macs = self._orig_layer
            return {name: Resources(int(p), int(m), int(op), int(om)) for name, p, m, op, om
                    in zip(self._layer_names, params.tolist(), macs.tolist(), o_params.tolist(),
                           o_macs.tolist())}
        if self._cached is None:
            self._cached = self._totals(state)
        return self._cached


def _inside(name: str, path: str) -> bool:
    return name == path or name.startswith(path + ".")


def _side_columns(sides: np.ndarray) -> list[np.ndarray]:
    """The columns of a (terms, width) side-index array that are not all the constant side 0."""
    return [sides[:, j].copy() for j in range(sides.shape[1]) if sides[:, j].any()]


def _marker(dirty: set[int], u: int) -> Callable[[], None]:
    return lambda: dirty.add(u)


def resource_counter(mutator: Any) -> ResourceCounter:
    """The mutator's counter, built on first use (after ``prepare_from_supernet``)."""
    return mutator.resource_counter()


def mutator_resources(mutator: Any, choices: dict | None = None,
                      by_layer: bool = False) -> Resources | dict[str, Resources]:
    """What ``ChannelMutator.resources`` returns; ``choices`` is a what-if that leaves every
    unit's choice as it was afterwards (also when it raises)."""
    counter = resource_counter(mutator)
    if choices is None:
        return counter.resources(by_layer)
    if not isinstance(choices, dict):
        raise TypeError(f"choices must be a dict of unit name to choice, got {type(choices).__name__}")
    is_block = getattr(mutator, "is_block_key", lambda key: False)
    saved = [(u.mutable_channel, u.mutable_channel.snapshot())
             for u in (mutator.unit(key) for key in choices if not is_block(key))]
    blocks = [(block, block.current_choice) for block in (mutator.block(key) for key in choices if is_block(key))]
    try:
        mutator.set_choices(choices)
        return counter.resources(by_layer)
    finally:
        for mutable, state in saved:
            mutable.restore(state)
        for block, choice in blocks:
            block.current_choice = choice
