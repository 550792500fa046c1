"""What the analysis writes: the largest int64 tensor an op produces while a model is prepared,
so tests can show that id tensors grow with channels, not with tokens or pixels."""
from __future__ import annotations

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves


class LargestIdTensor(TorchDispatchMode):
    """Records the largest storage (in elements) of any int64 cpu tensor an op writes."""

    def __init__(self) -> None:
        super().__init__()
        self.largest = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in tree_leaves(out):
            if isinstance(t, torch.Tensor) and t.dtype == torch.long and t.device.type == "cpu":
                self.largest = max(self.largest, t.untyped_storage().nbytes() // 8)
        return out
