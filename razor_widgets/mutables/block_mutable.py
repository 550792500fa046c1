"""BlockMutable: depth as a choice. A block (a module that adds residual branches onto a stream,
``analysis/block_units.py``) is kept or dropped; dropped, its call returns its stream input in
place of its stream output (every branch's contribution is zero), and the export removes it.
"""
from __future__ import annotations

from typing import Any

import torch

from ..registry import MODELS
from .base import BaseMutable

KEEP, DROP = "keep", "drop"
KINDS = ("block", "branch")  # a branch: its parent adds its output to its input (dropped: it outputs zeros)
BLOCK_PREFIX = "block:"


@MODELS.register_module()
class BlockMutable(BaseMutable):
    """One block unit: ``current_choice`` is ``"keep"`` or ``"drop"`` (``True`` / ``False`` are
    read as keep / drop). ``fixed_reasons`` (non-empty) say why the block must stay."""

    def __init__(self, path: str, input_index: int = 0, output_index: int = 0, form: str = "",
                 fixed_reasons: list[str] | None = None, output_is_tensor: bool = True,
                 alias: str | None = None, init_cfg: dict | None = None, kind: str = "block") -> None:
        super().__init__(alias=alias, init_cfg=init_cfg)
        if kind not in KINDS:
            raise ValueError(f"block {path!r}: kind must be one of {', '.join(KINDS)}, got {kind!r}")
        self.__dict__.update(path=path, name=BLOCK_PREFIX + path, input_index=int(input_index), kind=kind,
                             output_index=int(output_index), form=form, output_is_tensor=output_is_tensor,
                             fixed_reasons=list(fixed_reasons or []), _current_choice=KEEP, version=0,
                             _listeners=[])

    @property
    def is_mutable(self) -> bool:
        """Whether the block may be dropped."""
        return not self.fixed_reasons

    @property
    def current_choice(self) -> str:
        """``"keep"`` or ``"drop"``."""
        return self._current_choice

    @current_choice.setter
    def current_choice(self, choice: Any) -> None:
        choice = self.validate_choice(choice)
        if choice != self._current_choice:
            self._current_choice = choice
            self.version += 1
            for listener in self._listeners:
                listener()

    @property
    def dropped(self) -> bool:
        """Whether the block is dropped now."""
        return self._current_choice == DROP

    def validate_choice(self, choice: Any) -> str:
        """``choice`` as ``"keep"`` / ``"drop"``; ``ValueError`` / ``TypeError`` naming the block
        for anything else, and for dropping a block that must stay. A kept fraction (a number in
        [0, 1], as channel choices are) keeps the whole block above 0 and drops it at 0, so
        ``{name: 0.5 for name in mutator.current_choices}`` halves the channels and keeps depth."""
        if isinstance(choice, bool):
            choice = KEEP if choice else DROP
        elif isinstance(choice, (int, float)):
            if not 0.0 <= float(choice) <= 1.0:
                raise ValueError(f"block {self.name!r}: a kept fraction is in [0, 1] (0 drops the block), "
                                 f"got {choice!r}")
            choice = KEEP if choice > 0 else DROP
        if not isinstance(choice, str):
            raise TypeError(f"block {self.name!r}: a choice is 'keep' or 'drop', got {type(choice).__name__}")
        if choice not in (KEEP, DROP):
            raise ValueError(f"block {self.name!r}: a choice is 'keep' or 'drop', got {choice!r}")
        if choice == DROP and not self.is_mutable:
            raise ValueError(f"block {self.name!r} cannot be dropped: {'; '.join(self.fixed_reasons)}")
        return choice

    # what scans and budgets read of a unit: one "channel", kept or not
    num_channels = 1
    max_choice = KEEP

    def set_valid_choice(self, choice: Any) -> None:
        """Set a choice (validated)."""
        self.current_choice = choice

    @property
    def activated_channels(self) -> int:
        """1 kept, 0 dropped."""
        return 0 if self.dropped else 1

    @property
    def mutable_channel(self) -> BlockMutable:
        """The block itself: it snapshots and restores its choice as a mutable channel does."""
        return self

    def snapshot(self) -> str:
        """The choice, to put back with :meth:`restore`."""
        return self._current_choice

    def restore(self, state: str) -> None:
        """Put back a :meth:`snapshot`."""
        self.current_choice = state

    def add_listener(self, listener: Any) -> None:
        """Call ``listener()`` after each change of the choice (the live counter's)."""
        self._listeners.append(listener)

    @property
    def num_choices(self) -> int:
        """Two (keep, drop) for a removable block, one otherwise."""
        return 2 if self.is_mutable else 1

    @property
    def choices(self) -> list[str]:
        """The valid choices."""
        return [KEEP, DROP] if self.is_mutable else [KEEP]

    def config_template(self) -> dict[str, Any]:
        """The block as config data (what it is, its choice, and why it must stay)."""
        cfg: dict[str, Any] = {"type": type(self).__name__, "path": self.path, "form": self.form,
                               "input_index": self.input_index, "output_index": self.output_index,
                               "output_is_tensor": self.output_is_tensor, "choice": self.current_choice}
        if self.kind != "block":
            cfg["kind"] = self.kind
        if self.fixed_reasons:
            cfg["fixed_reasons"] = list(self.fixed_reasons)
        return cfg

    def __repr__(self) -> str:
        state = self.current_choice if self.is_mutable else "must stay"
        return f"BlockMutable({self.path!r}, {state})"


class BlockMaskHook:
    """The forward hook that masks a dropped block: its stream output becomes its stream input (a
    branch's output becomes zeros).
    A copy of the model masks with a copy of the block (the export takes these hooks off)."""

    def __init__(self, mutable: BlockMutable | None) -> None:
        self.mutable = mutable

    def __call__(self, module: Any, args: tuple, kwargs: dict, out: Any) -> Any:
        """Replace the stream output by the stream input when the block is dropped."""
        block = self.mutable
        if block is None or not block.dropped:
            return None
        if block.kind == "branch":  # x + f(x) is added outside: f's contribution becomes zero
            return torch.zeros_like(out)
        tensors = [x for x in tensor_leaves((args, kwargs))]
        return _replace_tensor_leaf(out, block.output_index, tensors[block.input_index])


def tensor_leaves(tree: Any) -> list[torch.Tensor]:
    """The tensors in nested tuples, lists and dicts, in order (the trace's order of a call's tensors)."""
    if isinstance(tree, torch.Tensor):
        return [tree]
    if isinstance(tree, (list, tuple)):
        return [leaf for x in tree for leaf in tensor_leaves(x)]
    if isinstance(tree, dict):
        return [leaf for x in tree.values() for leaf in tensor_leaves(x)]
    return []


def _replace_tensor_leaf(tree: Any, index: int, value: torch.Tensor) -> Any:
    """``tree`` with its ``index``-th tensor (in ``tensor_leaves`` order) replaced by ``value``."""
    count = [0]

    def walk(node: Any) -> Any:
        if isinstance(node, torch.Tensor):
            count[0] += 1
            return value if count[0] - 1 == index else node
        if isinstance(node, (list, tuple)):
            items = [walk(x) for x in node]
            return type(node)(*items) if hasattr(node, "_fields") else type(node)(items)
        if isinstance(node, dict):
            new = node.copy() if hasattr(node, "copy") else dict(node)
            for key in list(node.keys()):
                new[key] = walk(node[key])
            return new
        return node

    return walk(tree)
