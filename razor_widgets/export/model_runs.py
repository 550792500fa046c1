"""Running the masked model and its export for the check without changing either: eval mode,
no grad, the inputs on the model's device, and flags, buffers and random state put back."""
from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn
from torch.utils._pytree import tree_map

from ..trace.tracer import split_inputs
from .output_comparison import RTOL


def call_model(model: nn.Module, inputs: Any) -> Any:
    """``model(*args, **kwargs)`` with the example input split as the tracer splits it."""
    args, kwargs = split_inputs(inputs)
    return model(*args, **kwargs)


def on_model_device(inputs: Any, model: nn.Module) -> Any:
    """The example input on the model's device, floats in its float dtype (a model moved or
    cast after it was prepared); tensors already there are passed as they are (no copy)."""
    param = next((p for p in model.parameters() if p.is_floating_point()), None)
    if param is None:
        return inputs

    def move(x: Any) -> Any:
        if not isinstance(x, torch.Tensor):
            return x
        dtype = param.dtype if x.is_floating_point() else x.dtype
        return x if (x.device, x.dtype) == (param.device, dtype) else x.to(param.device, dtype)

    return tree_map(move, inputs)


def model_rtol(model: nn.Module) -> float:
    """The tolerance of the model's loosest float dtype."""
    dtypes = {p.dtype for p in model.parameters() if p.is_floating_point()}
    return max([RTOL.get(d, 1e-4) for d in dtypes] or [RTOL[torch.float32]])


@contextlib.contextmanager
def untouched(*models: nn.Module) -> Iterator[Any]:
    """Eval mode, no_grad; afterwards every module's train flag, every buffer that a forward
    changed or replaced and the random state (CPU and the models' CUDA devices) are as they were.
    Yields ``rerun()``, which puts the random state back where the first forward found it."""
    modes = [(m, m.training) for model in models for m in model.modules()]
    buffers = [(m._buffers, key, b, b._version, b.detach().clone()) for model in models for m in model.modules()
               for key, b in m._buffers.items() if b is not None]
    devices = sorted({t.device.index or 0 for model in models for t in (*model.parameters(), *model.buffers())
                      if t.device.type == "cuda"})
    with torch.random.fork_rng(devices=devices), torch.no_grad():
        cpu_state = torch.get_rng_state()
        cuda_states = [torch.cuda.get_rng_state(d) for d in devices]

        def rerun() -> None:
            torch.set_rng_state(cpu_state)
            for device, state in zip(devices, cuda_states):
                torch.cuda.set_rng_state(state, device)

        for model in models:
            model.eval()
        try:
            yield rerun
        finally:
            for module, flag in modes:
                module.training = flag
            for store, key, buffer, version, value in buffers:  # a forward may write or replace a buffer
                store[key] = buffer
                if buffer._version != version:
                    buffer.copy_(value)
