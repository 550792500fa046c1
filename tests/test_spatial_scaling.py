"""Positional ops over spatial dims cost nothing per pixel: ``roll``, ``flip``, constant ``pad``,
``index_select``, indexing with index tensors and ``x[...] = y`` move or pick positions along dims
that hold no channels, so a model prepared at 32x32 and at 256x256 gives the same units and
counts, and the id tensors it writes do not grow with the image (a full-shape id tensor of one
feature map at 256x256 holds 8 x 258 x 258 elements)."""
from __future__ import annotations

import warnings

import torch
import torch.nn.functional as F
from torch import nn

from razor_widgets import ChannelMutator

from helpers import LargestIdTensor


class Positional(nn.Module):
    """Swin-like shifts and paddings over space, plus the same ops along the channel dim."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.mid = nn.Conv2d(8, 8, 3)
        self.head = nn.Linear(10, 6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        x = torch.roll(x, shifts=(2, -3), dims=(2, 3)).flip(-1)
        x = F.pad(x, (1, 1, 1, 1))
        rows = torch.arange(x.shape[2] - 1, -1, -1)
        x = x.index_select(2, rows)[:, :, rows]
        x = self.mid(x)
        x = torch.roll(x, 1, 1).flip(1)  # along the channels: they move, and stay channels
        x = F.pad(x.permute(0, 2, 3, 1), (1, 1, 0, 2, 0, 2))  # channels padded with constants
        out = torch.zeros_like(x)
        out[:, :, :, 1:9] = x[:, :, :, 1:9]
        return self.head(out + x)


def prepare(side: int) -> tuple[ChannelMutator, int]:
    torch.manual_seed(0)
    mutator = ChannelMutator()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with LargestIdTensor() as watch:
            mutator.prepare_from_supernet(Positional().eval(), example_inputs=torch.zeros(1, 3, side, side))
    return mutator, watch.largest


def summary(mutator: ChannelMutator) -> list:
    return [(u.name, u.num_channels, u.repeats, u.fixed_reasons) for u in mutator.analysis.units]


def test_space_costs_nothing() -> None:
    small, small_largest = prepare(32)
    large, large_largest = prepare(256)
    assert summary(small) == summary(large)
    assert [u.name for u in small.mutable_units] == [u.name for u in large.mutable_units]
    assert len(large.mutable_units) > 0
    # the model's own row indices grow with the side (258 positions); an id tensor of a whole
    # feature map would hold 8 x 258 x 258
    assert large_largest - small_largest < 2 * 258, (small_largest, large_largest)
