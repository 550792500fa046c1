"""Stand-ins for the mmengine names that MMRazor's examples use, so they run unchanged."""
from __future__ import annotations

from torch import nn


class BaseModel(nn.Module):
    """``mmengine.model.BaseModel`` without a data preprocessor: accepts and ignores its args."""

    def __init__(self, data_preprocessor: dict | None = None, init_cfg: dict | None = None) -> None:
        super().__init__()
        self.init_cfg = init_cfg
