"""Params, MACs and FLOPs: the result type and the reference count of any plain model.

**MACs** are the multiply-accumulates of every convolution, every linear layer over all leading
dims and attention matmuls; **FLOPs** are ``2 * MACs`` (what ``FlopCounterMode`` reports);
**Params** are the exported static model's parameters. :func:`count_resources` (and
:func:`reference_flops`) runs one forward pass of any model under ``FlopCounterMode``, with both
of its traps handled. The live counter of a prepared mutator gives the same numbers without a
forward pass. The convention and the traps: docs/counting.md.
"""
from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode, sdpa_backward_flop_count, sdpa_flop_count

from ..trace.tracer import split_inputs

__all__ = ["Resources", "count_resources", "reference_flops", "REFERENCE_FLOP_FORMULAS"]


# -- the result ---------------------------------------------------------------------------------
def _human(n: float) -> str:
    for div, suffix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(n) >= div:
            return f"{n / div:.1f} {suffix}"
    return f"{n:.0f}"


@dataclass(frozen=True)
class Resources:
    """Params, MACs and FLOPs of a model at some choices, with its full-choice figures.

    ``flops == 2 * macs`` always (FlopCounterMode's scale); most other tools (fvcore, thop,
    ptflops, MMRazor, Torch-Pruning) print the ``macs`` figure, often calling it "FLOPs".
    """

    params: int
    macs: int
    original_params: int | None = None
    original_macs: int | None = None
    flops: int = field(init=False)
    original_flops: int = field(init=False)
    # memory (counting/memory.py): KV cache elements per token and sequence, the params one token
    # uses (MoE: only its experts), and the dtype of weights and cache; None where not known
    kv_per_token: int | None = field(default=None, compare=False)
    original_kv_per_token: int | None = field(default=None, compare=False)
    active_params: int | None = field(default=None, compare=False)
    original_active_params: int | None = field(default=None, compare=False)
    dtype: torch.dtype | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        if self.original_params is None:
            object.__setattr__(self, "original_params", self.params)
        if self.original_macs is None:
            object.__setattr__(self, "original_macs", self.macs)
        object.__setattr__(self, "flops", 2 * self.macs)
        object.__setattr__(self, "original_flops", 2 * self.original_macs)

    @staticmethod
    def _percent(value: int, original: int) -> float:
        return 100.0 * value / original if original else (100.0 if value == 0 else math.inf)

    @property
    def params_percent(self) -> float:
        """Params as a percentage of the original params."""
        return self._percent(self.params, self.original_params)

    @property
    def macs_percent(self) -> float:
        """MACs as a percentage of the original MACs (the same as ``flops_percent``)."""
        return self._percent(self.macs, self.original_macs)

    @property
    def flops_percent(self) -> float:
        """FLOPs as a percentage of the original FLOPs (the same as :attr:`macs_percent`: FLOPs are
        2 × MACs)."""
        return self.macs_percent

    def weight_bytes(self, dtype: torch.dtype | None = None, original: bool = False) -> int:
        """Bytes of the params at ``dtype`` (default: the model's dtype, else float32)."""
        return (self.original_params if original else self.params) * _itemsize(dtype or self.dtype)

    def kv_cache_bytes(self, seq_len: int, batch: int = 1, dtype: torch.dtype | None = None,
                       original: bool = False) -> int:
        """Bytes of the KV cache of ``batch`` sequences of ``seq_len`` tokens (keys and values of
        every layer) at ``dtype`` (default: the model's); ``ValueError`` for a model whose cache
        is not known (counting/memory.py says which are)."""
        per_token = self.original_kv_per_token if original else self.kv_per_token
        if per_token is None:
            raise ValueError("this model has no KV cache the count knows (a decoder-only Hugging Face model "
                             "whose layers all use full attention)")
        for name, value in (("seq_len", seq_len), ("batch", batch)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"{name} must be a whole number >= 0, got {value!r}")
        return per_token * seq_len * batch * _itemsize(dtype or self.dtype)

    def memory(self, seq_len: int = 0, batch: int = 1, dtype: torch.dtype | None = None,
               original: bool = False) -> int:
        """Weight bytes plus, for a model with a KV cache, its bytes at ``seq_len`` and ``batch``."""
        kv = 0 if self.kv_per_token is None else self.kv_cache_bytes(seq_len, batch, dtype, original)
        return self.weight_bytes(dtype, original) + kv

    def __add__(self, other: Resources) -> Resources:
        if not isinstance(other, Resources):
            return NotImplemented
        return Resources(self.params + other.params, self.macs + other.macs,
                         self.original_params + other.original_params,
                         self.original_macs + other.original_macs)

    def __radd__(self, other: Any) -> Resources:
        return self if other == 0 else self.__add__(other)  # sum() starts from 0

    def summary(self) -> str:
        """E.g. ``'12.3 M params (48 % of 25.6 M), 2.0 G MACs (49 % of 4.1 G) = 4.0 G FLOPs'``."""
        return (f"{_human(self.params)} params ({self.params_percent:.0f} % of "
                f"{_human(self.original_params)}), {_human(self.macs)} MACs "
                f"({self.macs_percent:.0f} % of {_human(self.original_macs)}) = "
                f"{_human(self.flops)} FLOPs")

    def __str__(self) -> str:
        return self.summary()


def _itemsize(dtype: torch.dtype | None) -> int:
    if dtype is not None and not isinstance(dtype, torch.dtype):
        raise TypeError(f"dtype must be a torch.dtype, got {dtype!r}")
    return (dtype or torch.float32).itemsize


# -- the reference: one forward under FlopCounterMode -------------------------------------------
def _cpu_flash_sdpa_flop(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs):
    # the same formula as FlopCounterMode's registered SDPA ops (trap 1 of docs/counting.md)
    return sdpa_flop_count(query_shape, key_shape, value_shape)


def _cpu_flash_sdpa_backward_flop(grad_out_shape, query_shape, key_shape, value_shape, *args,
                                  out_shape=None, **kwargs):
    return sdpa_backward_flop_count(grad_out_shape, query_shape, key_shape, value_shape)


def _grouped_mm_flop(a_shape, b_shape, *args, out_shape=None, **kwargs):
    # MoE experts (transformers' grouped form): every row of ``a`` [rows, k] times one expert's
    # [k, n] matrix of ``b`` [experts, k, n]; FlopCounterMode has no formula for it (counts 0)
    if len(a_shape) == 2 and len(b_shape) == 3:
        return 2 * a_shape[0] * a_shape[1] * b_shape[2]
    return 2 * math.prod(out_shape) * a_shape[-1] if out_shape is not None else 0


_aten = torch.ops.aten
def _mkldnn_lstm_layer_flop(input_shape, w_ih_shape, w_hh_shape, *args, out_shape=None, **kwargs):
    # one layer and direction of the fused CPU LSTM: the input and hidden matmuls of every step,
    # as FlopCounterMode counts them for GRU and RNN (it has no formula for this kernel: 0)
    return 2 * math.prod(input_shape[:-1]) * (math.prod(w_ih_shape) + math.prod(w_hh_shape))


def _trilinear_flop(shape1, shape2, shape3, expand1, expand2, expand3, *args, out_shape=None, **kwargs):
    # nn.Bilinear's kernel: the three inputs broadcast (each with its expand dims inserted), one MAC
    # per element of the broadcast product (every weight entry once per row); FlopCounterMode has
    # no formula for it (counts 0)
    full: list[int] = []
    for shape, expand in ((shape1, expand1), (shape2, expand2), (shape3, expand3)):
        dims = list(shape)
        for dim in sorted(expand):
            dims.insert(dim, 1)
        full = list(torch.broadcast_shapes(tuple(full), tuple(dims)))
    return 2 * math.prod(full)


REFERENCE_FLOP_FORMULAS: dict[Any, Any] = {}
if hasattr(_aten, "_trilinear"):
    REFERENCE_FLOP_FORMULAS[_aten._trilinear] = _trilinear_flop
if hasattr(_aten, "mkldnn_rnn_layer"):
    REFERENCE_FLOP_FORMULAS[_aten.mkldnn_rnn_layer] = _mkldnn_lstm_layer_flop
if hasattr(_aten, "_grouped_mm"):
    REFERENCE_FLOP_FORMULAS[_aten._grouped_mm] = _grouped_mm_flop
if hasattr(_aten, "_scaled_dot_product_flash_attention_for_cpu"):
    REFERENCE_FLOP_FORMULAS[_aten._scaled_dot_product_flash_attention_for_cpu] = _cpu_flash_sdpa_flop
if hasattr(_aten, "_scaled_dot_product_flash_attention_for_cpu_backward"):
    REFERENCE_FLOP_FORMULAS[_aten._scaled_dot_product_flash_attention_for_cpu_backward] = (
        _cpu_flash_sdpa_backward_flop)


@contextlib.contextmanager
def _counting_mode() -> Iterator[None]:
    """Autograd on and the fused MHA / transformer fast path off (trap 2 of docs/counting.md):
    the fused kernels are invisible to FlopCounterMode and would count as 0."""
    mha = getattr(torch.backends, "mha", None)
    fastpath = mha.get_fastpath_enabled() if mha is not None else None
    try:
        if mha is not None:
            mha.set_fastpath_enabled(False)
        with torch.enable_grad():
            yield
    finally:
        if mha is not None:
            mha.set_fastpath_enabled(fastpath)


def reference_flops(model: nn.Module, example_inputs: Any) -> int:
    """FLOPs of one forward of ``model`` counted by ``FlopCounterMode``, both traps handled.

    ``example_inputs`` is a tensor, a tuple of positional inputs or a dict of keyword inputs.
    The model runs in its own train/eval mode; its buffers and the RNG state are restored.
    """
    args, kwargs = split_inputs(example_inputs)
    saved = {k: v.detach().clone() for k, v in model.state_dict(keep_vars=True).items()
             if not isinstance(v, nn.Parameter)}
    try:
        with torch.random.fork_rng(devices=[]), _counting_mode(), \
                FlopCounterMode(display=False, custom_mapping=REFERENCE_FLOP_FORMULAS) as counter:
            model(*args, **kwargs)
    finally:
        with torch.no_grad():
            for key, value in model.state_dict(keep_vars=True).items():
                if key in saved:
                    value.copy_(saved[key])
    return int(counter.get_total_flops())


def count_resources(model: nn.Module, example_inputs: Any) -> Resources:
    """Params and MACs/FLOPs of any plain model by one forward pass (the reference count).

    Params are ``sum(p.numel() for p in model.parameters())`` (shared parameters once,
    frozen ones included); FLOPs come from :func:`reference_flops` and MACs are half of them.
    """
    params = sum(p.numel() for p in model.parameters())
    return Resources(params, reference_flops(model, example_inputs) // 2)
