"""Small models the dashboard tests serve (importable as ``dashboard_models:NAME`` by the
page's kernel, which gets this folder on its PYTHONPATH)."""
from __future__ import annotations

import torch
from torch import nn


class PathDependsOnInput(nn.Module):
    """Runs on any input, but which conv runs depends on the input's values: tracing it raises
    TraceError (the path changes on the negated input), though a plain forward works."""

    def __init__(self) -> None:
        super().__init__()
        self.conv_a = nn.Conv2d(3, 8, 3, padding=1)
        self.conv_b = nn.Conv2d(3, 8, 3, padding=1)
        self.head = nn.Linear(8, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv_a(x) if x.sum() > 0 else self.conv_b(x)
        return self.head(y.mean((2, 3)))


class TinyNet(nn.Module):
    """Two prunable units: quick to build and trace."""

    def __init__(self) -> None:
        super().__init__()
        self.conv0 = nn.Conv2d(3, 8, 3, padding=1)
        self.conv1 = nn.Conv2d(8, 16, 3, padding=1)
        self.head = nn.Linear(16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.conv1(torch.relu(self.conv0(x))).mean((2, 3)))
