"""The Memory counter: weights plus the KV cache at a sequence length and batch the user types.

Follows every slider move (formatting only: the counts come with ``Resources``); editing the
sequence length or batch recounts at once. For a model with a KV cache it also says what
dropping one KV group (or head) of a layer saves at that length and batch.
"""
from __future__ import annotations

import html
from typing import Any

import ipywidgets as widgets

from ..analysis.unit_labels import unit_role
from ..counting.resources import Resources

KV_KINDS = ("kv_groups", "heads")


def _bytes(n: int) -> str:
    for div, suffix in ((1 << 30, "GiB"), (1 << 20, "MiB"), (1 << 10, "KiB")):
        if n >= div:
            return f"{n / div:.2f} {suffix}"
    return f"{n} B"


class MemoryCounter:
    """Weights + KV cache in bytes now against the original, with editable ``seq_len`` and ``batch``."""

    def __init__(self, res: Resources, mutator: Any, seq_len: int = 2048, batch: int = 1) -> None:
        self.seq_len = widgets.BoundedIntText(value=seq_len, min=0, max=10**9, description="seq length",
                                              layout=widgets.Layout(width="190px"))
        self.batch = widgets.BoundedIntText(value=batch, min=1, max=10**7, description="batch",
                                            layout=widgets.Layout(width="160px"))
        self.figure = widgets.HTML()
        self.text = ""
        self._group_dims = _kv_group_dims(mutator)
        self.seq_len.observe(lambda _: self.update(self.resources), "value")
        self.batch.observe(lambda _: self.update(self.resources), "value")
        self.resources = res
        inputs = [self.seq_len, self.batch] if res.kv_per_token is not None else []
        self.widget = widgets.HBox([self.figure, *inputs], layout=widgets.Layout(align_items="center"))
        self.widget.add_class("rw-memory")
        self.update(res)

    def update(self, res: Resources) -> None:
        """Show ``res``'s memory at the typed length and batch (cheap: arithmetic only)."""
        self.resources = res
        seq_len, batch = int(self.seq_len.value), int(self.batch.value)
        now, full = res.memory(seq_len, batch), res.memory(seq_len, batch, original=True)
        percent = 100.0 * now / full if full else 100.0
        parts = [f"weights {_bytes(res.weight_bytes())}"]
        if res.kv_per_token is not None:
            parts.append(f"KV cache {_bytes(res.kv_cache_bytes(seq_len, batch))} "
                         f"({res.kv_per_token:,} values per token)")
            if self._group_dims:
                saved = 2 * self._group_dims * seq_len * batch * (res.dtype.itemsize if res.dtype else 4)
                parts.append(f"one KV group of a layer: {_bytes(saved)}")
        self.text = f"Memory {now:,} B of {full:,} B ({percent:.1f} %): " + "; ".join(parts)
        self.figure.value = (f"<span class='rw-memory-text' title='weights + KV cache at this sequence length and "
                             f"batch, in bytes at the model dtype'><b>Memory</b> <code>{now:,} B</code> of "
                             f"<code>{full:,} B</code> <b>{percent:.1f} %</b> ({_bytes(now)}) · "
                             f"{html.escape('; '.join(parts))}</span>")


def _kv_group_dims(mutator: Any) -> int:
    """The head dim of the first unit of KV groups (or ungrouped heads): what one element caches per token."""
    for unit in mutator.mutable_units:
        role = unit_role(unit)
        if role.kind in KV_KINDS:
            return role.head_dim
    return 0
