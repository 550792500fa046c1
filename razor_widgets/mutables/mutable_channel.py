"""Mutable channels: each turns a choice into a boolean mask over a layer's channels."""
from __future__ import annotations

import weakref
from collections.abc import Callable
from typing import Any

import torch

from ..registry import MODELS
from .base import BaseMutable

_LISTENERS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # mutable -> callbacks


def add_change_listener(mutable: BaseMutableChannel, callback: Callable[[], None]) -> bool:
    """Call ``callback()`` whenever ``mutable``'s choice changes; False if it cannot tell.

    Kept outside the modules so that deep copies of a model do not copy the listeners.
    """
    if not getattr(type(mutable), "notifies_changes", False):
        return False
    _LISTENERS.setdefault(mutable, []).append(callback)
    return True


class BaseMutableChannel(BaseMutable):
    """A channel mask of length ``num_channels``; ``activated_channels`` counts kept channels."""

    def __init__(self, num_channels: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.__dict__.update(name="", num_channels=int(num_channels))

    @property
    def current_mask(self) -> torch.Tensor:
        """The boolean mask of kept channels, ``num_channels`` long (each subclass computes it)."""
        raise NotImplementedError

    @property
    def activated_channels(self) -> int:
        """How many channels ``current_mask`` keeps."""
        return int(self.current_mask.sum())

    notifies_changes = False  # True where every change of the choice calls _changed()

    def set_valid_mask(self, mask: torch.Tensor) -> None:
        """Set the channels to keep from a mask its owner has checked."""
        self.current_choice = mask

    def snapshot(self) -> Any:
        """The current choice, cheaply, for ``restore`` after a failed change."""
        return self.current_choice

    def restore(self, state: Any) -> None:
        """Put back a choice saved by ``snapshot``."""
        self.current_choice = state

    def choice_token(self) -> Any:
        """An object that is the same (``is``) while the choice is: a counter re-reads the mask
        only when it changes. A fresh object (always "changed") unless a subclass knows better."""
        return object()

    def _changed(self) -> None:
        for callback in _LISTENERS.get(self, ()):
            callback()

    @property
    def num_choices(self) -> int:
        """1 here: a mutable channel's choices are counted by the unit that owns it."""
        return 1

    def expand_mutable_channel(self, expand_ratio: int) -> DerivedMutableChannel:
        """Each channel repeated ``expand_ratio`` times (a flatten before a linear layer)."""
        return DerivedMutableChannel(self, expand_ratio=expand_ratio)

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(name={self.name}, num_channels={self.num_channels}, "
                f"activated_channels={self.activated_channels})")


@MODELS.register_module()
class SimpleMutableChannel(BaseMutableChannel):
    """The choice is the mask itself (a bool tensor), so any subset of channels can be kept."""

    def __init__(self, num_channels: int, **kwargs: Any) -> None:
        super().__init__(num_channels, **kwargs)
        self._mask = torch.ones(self.num_channels, dtype=torch.bool)

    @property
    def current_choice(self) -> torch.Tensor:
        """A copy of the mask; setting it takes any bool mask of ``num_channels`` with one channel kept or more."""
        return self._mask.clone()

    @current_choice.setter
    def current_choice(self, choice: torch.Tensor) -> None:
        mask = torch.as_tensor(choice, dtype=torch.bool).reshape(-1)
        if mask.numel() != self.num_channels or not bool(mask.any()):
            raise ValueError(
                f"a mask for {self.num_channels} channels with at least one kept is needed, "
                f"got {mask.numel()} entries with {int(mask.sum())} kept")
        self._mask = mask.clone()
        self._changed()

    notifies_changes = True

    def set_valid_mask(self, mask: torch.Tensor) -> None:
        """Take a mask already known to be valid, without copying it (it must not change)."""
        self.__dict__["_mask"] = mask
        self._changed()

    def snapshot(self) -> torch.Tensor:
        """The mask itself, uncopied: masks are replaced, never changed in place."""
        return self._mask  # masks are replaced, never changed in place

    def choice_token(self) -> torch.Tensor:
        """The mask object itself: a new one exactly when the choice changes."""
        return self.__dict__["_mask"]  # replaced, never changed in place

    def restore(self, state: torch.Tensor) -> None:
        """Put back a mask saved by ``snapshot``, without checking or copying it."""
        self.set_valid_mask(state)

    @property
    def current_mask(self) -> torch.Tensor:
        """The mask itself (not a copy): do not change it in place."""
        return self._mask


@MODELS.register_module()
class SquentialMutableChannel(BaseMutableChannel):
    """Keeps a prefix of the channels; the choice is a number ('number') or a ratio ('ratio')."""

    def __init__(self, num_channels: int, choice_mode: str = "number", **kwargs: Any) -> None:
        super().__init__(num_channels, **kwargs)
        if choice_mode not in ("number", "ratio"):
            raise ValueError(f"choice_mode must be 'number' or 'ratio', got {choice_mode!r}")
        self.choice_mode = choice_mode
        self._kept = self.num_channels

    @property
    def is_num_mode(self) -> bool:
        """Whether the choice is a channel count (``'number'``) rather than a fraction (``'ratio'``)."""
        return self.choice_mode == "number"

    @property
    def current_choice(self) -> int | float:
        """The kept prefix as a count or a ratio (by ``choice_mode``); a setting must keep 1 to ``num_channels``."""
        return self._kept if self.is_num_mode else self._kept / self.num_channels

    @current_choice.setter
    def current_choice(self, choice: int | float) -> None:
        kept = int(choice) if self.is_num_mode else round(float(choice) * self.num_channels)
        if not 1 <= kept <= self.num_channels:
            raise ValueError(f"choice {choice!r} keeps {kept} of {self.num_channels} channels")
        self._kept = kept
        self._changed()

    notifies_changes = True

    def choice_token(self) -> int:
        """The kept count, which is the choice."""
        return self.__dict__["_kept"]

    @property
    def current_mask(self) -> torch.Tensor:
        """A mask keeping the first ``kept`` channels."""
        mask = torch.zeros(self.num_channels, dtype=torch.bool)
        mask[: self._kept] = True
        return mask


SequentialMutableChannel = SquentialMutableChannel
MODELS.register_module("SequentialMutableChannel", module=SquentialMutableChannel)


class DerivedMutableChannel(BaseMutableChannel):
    """A mask made from another mutable channel's: tiled ``repeat`` times, each entry expanded."""

    def __init__(self, source: BaseMutableChannel, expand_ratio: int = 1, repeat: int = 1) -> None:
        super().__init__(source.num_channels * expand_ratio * repeat)
        # the source in a list, so that it is not registered as a submodule
        self.__dict__.update(source=[source], expand_ratio=expand_ratio, repeat=repeat)

    @property
    def source_mutable(self) -> BaseMutableChannel:
        """The mutable channel this mask is made from."""
        return self.source[0]

    @property
    def current_choice(self) -> Any:
        """The source's choice; it cannot be set here (set the source)."""
        return self.source_mutable.current_choice

    @current_choice.setter
    def current_choice(self, choice: Any) -> None:
        raise AttributeError("a derived mutable channel follows its source; set the source")

    @property
    def current_mask(self) -> torch.Tensor:
        """The source's mask tiled ``repeat`` times, then each entry repeated ``expand_ratio`` times."""
        mask = self.source_mutable.current_mask
        if self.repeat > 1:
            mask = mask.repeat(self.repeat)
        if self.expand_ratio > 1:
            mask = mask.repeat_interleave(self.expand_ratio)
        return mask


@MODELS.register_module()
class MutableChannelContainer(BaseMutableChannel):
    """The mask of one side of a dynamic op, assembled from the mutables of its channel ranges."""

    def __init__(self, num_channels: int, **kwargs: Any) -> None:
        super().__init__(num_channels, **kwargs)
        self.mutable_channels: dict[tuple[int, int], BaseMutableChannel] = {}

    @property
    def current_choice(self) -> torch.Tensor:
        """The assembled mask; it cannot be set (it follows the registered mutable channels)."""
        return self.current_mask

    @current_choice.setter
    def current_choice(self, choice: Any) -> None:
        raise AttributeError("a container's mask follows its registered mutable channels")

    def register_mutable(self, mutable: BaseMutableChannel, start: int, end: int) -> None:
        """Let ``mutable`` decide channels ``start:end``; its ``num_channels`` must match the range."""
        if not 0 <= start < end <= self.num_channels:
            raise ValueError(f"range ({start}, {end}) is outside {self.num_channels} channels")
        if end - start != mutable.num_channels:
            raise ValueError(
                f"range ({start}, {end}) has {end - start} channels, "
                f"the mutable has {mutable.num_channels}")
        self.mutable_channels[(start, end)] = mutable

    @property
    def current_mask(self) -> torch.Tensor:
        """All channels kept, except where a registered mutable's mask says otherwise in its range."""
        mask = torch.ones(self.num_channels, dtype=torch.bool)
        for (start, end), mutable in self.mutable_channels.items():
            mask[start:end] = mutable.current_mask
        return mask

    @staticmethod
    def register_mutable_channel_to_module(
        module: Any, mutable: BaseMutableChannel, is_to_output_channel: bool = True,
        start: int = 0, end: int = -1,
    ) -> None:
        """Register ``mutable`` for channels ``start:end`` of a dynamic op's input or output."""
        attr = "out_channels" if is_to_output_channel else "in_channels"
        container = module.get_mutable_attr(attr)
        if container is None:
            raise ValueError(f"{type(module).__name__} has no mutable container for {attr}")
        end = start + mutable.num_channels if end == -1 else end
        container.register_mutable(mutable, start, end)

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(num_channels={self.num_channels}, "
                f"activated_channels={self.activated_channels})")
