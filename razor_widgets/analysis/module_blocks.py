"""A model's repeated blocks, read from its module tree: the layers of a transformer, the
blocks of a ResNet stage. A *block* is a module with children of its own that sits in a
container (``nn.ModuleList``, ``nn.Sequential``, ``nn.ModuleDict``) next to at least one other
module of its type; its index is its position in that container. Nothing here knows a
model's or a module's name: ``encoder_layer_3`` is block 3 of ``encoder.layers`` because it is
the fourth child of that container, not because of its name.

Without the module tree (units built by hand), a path component that is a number is taken for
a block's index, as ``nn.ModuleList`` and ``nn.Sequential`` name their children.
"""
from __future__ import annotations

from dataclasses import dataclass

from torch import nn

CONTAINERS = (nn.ModuleList, nn.Sequential, nn.ModuleDict)


@dataclass(frozen=True)
class Block:
    """One repeated block: its path, its container's path and its index in the container."""

    path: str
    container: str
    index: int


class BlockTree:
    """The blocks of one model (``modules``: ``dict(model.named_modules())``, or None)."""

    def __init__(self, modules: dict[str, nn.Module] | None = None) -> None:
        self.modules = modules
        self._blocks: dict[str, Block | None] = {}
        self._qualifiers: dict[str, str] | None = None

    def block(self, path: str) -> Block | None:
        """The block at exactly ``path``, if that module is one."""
        if path not in self._blocks:
            self._blocks[path] = self._find(path)
        return self._blocks[path]

    def _find(self, path: str) -> Block | None:
        if not path:
            return None
        container, _, key = path.rpartition(".")
        if self.modules is None:
            return Block(path, container, int(key)) if key.isdigit() else None
        parent, module = self.modules.get(container), self.modules.get(path)
        if not isinstance(parent, CONTAINERS) or module is None or next(module.children(), None) is None:
            return None
        siblings = list(parent._modules.items())
        if sum(type(m) is type(module) for _, m in siblings) < 2:
            return None
        return Block(path, container, [k for k, _ in siblings].index(key))

    def blocks_on(self, path: str) -> list[Block]:
        """The blocks on the way down to ``path`` (outermost first), ``path`` itself included."""
        parts = path.split(".") if path else []
        found = (self.block(".".join(parts[:i])) for i in range(1, len(parts) + 1))
        return [b for b in found if b is not None]

    def innermost(self, path: str) -> Block | None:
        """The deepest block that holds ``path`` (or is it)."""
        blocks = self.blocks_on(path)
        return blocks[-1] if blocks else None

    def siblings(self, block: Block) -> int:
        """How many blocks the container of ``block`` holds."""
        if self.modules is None:
            return 0
        parent = self.modules.get(block.container)
        return sum(1 for key in (parent._modules if parent is not None else {})
                   if self.block(f"{block.container}.{key}" if block.container else key) is not None)

    def qualifier(self, block: Block) -> str:
        """A word that tells apart the outermost containers of blocks when a model has several
        (``encoder`` and ``decoder``: the first part of their paths that differs), else ''."""
        if self._qualifiers is None:
            self._qualifiers = _qualifiers(self._outer_containers())
        return self._qualifiers.get(block.container, "")

    def _outer_containers(self) -> list[str]:
        names = self.modules or {}
        containers = []
        for name in names:
            block = self.block(name)
            if block is not None and block.container not in containers and not self.blocks_on(block.container):
                containers.append(block.container)
        return containers


def _qualifiers(containers: list[str]) -> dict[str, str]:
    if len(containers) < 2:
        return {}
    parts = [c.split(".") for c in containers]
    depth = next((d for d in range(max(map(len, parts)))
                  if len({p[d] if d < len(p) else "" for p in parts}) > 1), 0)
    return {c: (p[depth] if depth < len(p) else "") for c, p in zip(containers, parts)}
