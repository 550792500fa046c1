"""The channel-range record: a contiguous range of one layer's input or output channels (or of
one parameter's dim) that belongs to a unit.

The analysis makes them (``module`` unset: it knows layer names only), the config parser reads
them from a config, the predefined parser from a model's dynamic ops; the mutator then binds
each range to its layer. (``analysis.Slot`` is a different thing: a whole layer side as
channel elements, before any unit exists.)
"""
from __future__ import annotations

from typing import Any

from torch import nn


class Channel:
    """A range of one layer's input or output channels (or of one parameter's dim)."""

    def __init__(self, name: str, module: nn.Module | None, index: tuple[int, int],
                 is_output_channel: bool = True, expand_ratio: int = 1,
                 param_dim: int | None = None) -> None:
        self.name = name
        self.module = module
        self.start, self.end = index
        self.is_output_channel = is_output_channel
        self.expand_ratio = expand_ratio
        self.param_dim = param_dim

    @property
    def num_channels(self) -> int:
        """How many channels the range covers (``end - start``)."""
        return self.end - self.start

    @property
    def owner_name(self) -> str:
        """The layer the range belongs to (a parameter's owning module for parameter ranges)."""
        return self.name.rpartition(".")[0] if self.param_dim is not None else self.name

    def config_template(self) -> dict[str, Any]:
        """The range as a config dict (what the config parser reads back)."""
        cfg = {"name": self.name, "start": self.start, "end": self.end,
               "expand_ratio": self.expand_ratio, "is_output_channel": self.is_output_channel}
        if self.param_dim is not None:
            cfg["param_dim"] = self.param_dim
        return cfg

    def __repr__(self) -> str:
        side = "out" if self.is_output_channel else "in"
        return f"Channel({self.name}, {side}, ({self.start}, {self.end}), expand={self.expand_ratio})"
