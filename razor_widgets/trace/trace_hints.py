"""What to try when the model's own forward fails on the example input for a reason the user can
fix: a kernel only for another dtype (``_grouped_mm`` wants bfloat16), an input of another dtype,
shape or device than the model's, a forward that reads tensor values on the meta device.
:func:`trace_hint` reads the error and the model; the ``TraceError`` carries its answer."""
from __future__ import annotations

import re
from typing import Any

import torch
from torch import nn

_DTYPE_NAMES = {"bfloat16": torch.bfloat16, "float16": torch.float16, "half": torch.float16,
                "float32": torch.float32, "float": torch.float32, "double": torch.float64, "float64": torch.float64}
_KERNEL_DTYPE = re.compile(r"expected \w+ to be (bfloat16|float16|half)|not implemented for '(bfloat16|half)'", re.I)
_MIXED_DTYPES = re.compile(r"input type \((\w+)\) and (?:bias|weight) type|must have the same dtype|"
                           r"expected scalar type \w+ but found|expected both inputs to have same dtype", re.I)
_SHAPES = re.compile(r"shapes cannot be multiplied|expected input\[.*\] to have \d+ channels|"
                     r"size of tensor a \(\d+\) must match|normalized_shape|expected sequence of length", re.I)
_DEVICES = re.compile(r"not on the expected device|expected all tensors to be on the same device", re.I)
_META_DATA = re.compile(r"meta|cannot be converted to scalar|data-dependent|data dependent", re.I)


def _model_dtype(model: nn.Module) -> torch.dtype | None:
    return next((p.dtype for p in model.parameters() if p.is_floating_point()), None)


def _model_device(model: nn.Module) -> torch.device | None:
    return next((t.device for t in (*model.parameters(), *model.buffers())), None)


def trace_hint(error: BaseException, model: nn.Module) -> str | None:
    """What to try, in words, when the forward of ``model`` raised ``error`` on the example input
    for a reason the user can fix; None when the error says nothing this function knows."""
    text = " ".join(str(error).split())
    dtype, device = _model_dtype(model), _model_device(model)
    own = str(dtype).removeprefix("torch.") if dtype is not None else "its dtype"
    kernel = _KERNEL_DTYPE.search(text)
    if kernel:
        wanted = str(_DTYPE_NAMES[(kernel.group(1) or kernel.group(2)).lower()]).removeprefix("torch.")
        return (f"an op of the forward has a kernel for {wanted} only and the model runs in {own}: build or cast "
                f"the model and the example input in {wanted} (model.to(torch.{wanted}); from_pretrained(..., "
                f"dtype=torch.{wanted})), or choose an implementation of that layer which runs in {own} "
                "(a transformers model: attn_implementation='eager' or experts_implementation='eager')")
    if _MIXED_DTYPES.search(text):
        return (f"the example input's dtype differs from the model's ({own}): pass the input in {own} "
                f"(x.to(torch.{own}))")
    if _DEVICES.search(text):
        return f"the example input is not on the model's device ({device}): move it there (x.to('{device}'))"
    if _SHAPES.search(text):
        return ("the example input's shape does not fit the model's layers: pass an input of the shape the "
                "model takes (prepare_from_supernet(model, example_inputs=...))")
    if device is not None and device.type == "meta" and (
            isinstance(error, NotImplementedError) or _META_DATA.search(text)):
        return ("the forward needs tensor values or an op without a meta kernel, and the model is on the meta "
                "device (shapes, no data): prepare the model with real weights (on the CPU, or the device it "
                "runs on)")
    return None


def with_hint(message: str, error: BaseException, model: Any) -> str:
    """``message`` and, where :func:`trace_hint` has one, what to try."""
    hint = trace_hint(error, model) if isinstance(model, nn.Module) else None
    return f"{message}. Try: {hint}" if hint else message
