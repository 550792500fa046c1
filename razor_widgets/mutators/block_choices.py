"""The block units of a ChannelMutator (depth as a choice): found from the trace beside the
channel units, masked by a forward hook, set with the channel choices in one ``set_choices``."""
from __future__ import annotations

from typing import Any

from torch import nn

from ..analysis.block_units import find_blocks
from ..mutables.block_mutable import BlockMaskHook, BlockMutable
from ..trace.graph import TracedGraph


class BlockChoices:
    """What ``ChannelMutator`` knows about blocks: ``block_units``, their choices and masks."""

    _blocks: list[BlockMutable]

    def _find_block_units(self, model: nn.Module, graph: TracedGraph | None) -> None:
        """Find the blocks of the traced ``model`` and hook the removable ones (masks)."""
        self.__dict__["_blocks"] = []
        self.__dict__["_block_hooks"] = []
        if graph is None or not graph.calls:
            return
        modules = dict(model.named_modules())
        for spec in find_blocks(graph, modules):
            self._add_block(modules, BlockMutable(spec.path, spec.input_index, spec.output_index, spec.form,
                                                  spec.reasons, spec.output_is_tensor, kind=spec.kind))

    def _blocks_from_config(self, model: nn.Module, configured: dict[str, Any]) -> None:
        """The blocks a config template lists (a ``Config`` parse: no trace), checked against the model."""
        self.__dict__["_blocks"] = []
        self.__dict__["_block_hooks"] = []
        modules = dict(model.named_modules())
        for name, cfg in (configured or {}).items():
            if not isinstance(cfg, dict) or cfg.get("path") not in modules or name != "block:" + cfg["path"]:
                raise ValueError(f"block {name!r}: the config needs the 'path' of a module of the model "
                                 f"(make it with config_template())")
            self._add_block(modules, BlockMutable(cfg["path"], cfg.get("input_index", 0), cfg.get("output_index", 0),
                                                  cfg.get("form", ""), cfg.get("fixed_reasons"),
                                                  cfg.get("output_is_tensor", True), kind=cfg.get("kind", "block")))

    def _add_block(self, modules: dict[str, nn.Module], block: BlockMutable) -> None:
        self._blocks.append(block)
        if block.is_mutable:
            hook = modules[block.path].register_forward_hook(BlockMaskHook(block), with_kwargs=True)
            self._block_hooks.append(hook)

    @property
    def block_units(self) -> list[BlockMutable]:
        """Every block found (``BlockMutable``), removable or not, in call order (a copy)."""
        return list(self.__dict__.get("_blocks", []))

    @property
    def removable_blocks(self) -> list[BlockMutable]:
        """The blocks that can be dropped: the ones whose choices are set."""
        return [b for b in self.block_units if b.is_mutable]

    def block(self, key: Any) -> BlockMutable:
        """A block unit by name (``"block:<module path>"``) or module path."""
        for block in self.block_units:
            if key in (block.name, block.path):
                return block
        raise KeyError(f"no block unit named {key!r}")

    def is_block_key(self, key: Any) -> bool:
        """Whether ``key`` names a block unit."""
        return isinstance(key, str) and any(key in (b.name, b.path) for b in self.block_units)

    def block_choices(self) -> dict[str, str]:
        """Each removable block's choice (``"keep"`` / ``"drop"``), by block name."""
        return {b.name: b.current_choice for b in self.removable_blocks}

    def split_choices(self, choices: dict[Any, Any]) -> tuple[dict[Any, Any], list[tuple[BlockMutable, str]]]:
        """``choices`` as channel choices and validated ``(block, choice)`` pairs (raises, naming
        the block, on an invalid block choice: nothing set yet)."""
        channel = {k: v for k, v in choices.items() if not self.is_block_key(k)}
        blocks = [(self.block(k), v) for k, v in choices.items() if self.is_block_key(k)]
        return channel, [(b, b.validate_choice(v)) for b, v in blocks]

    def configured_block_choices(self, configured: dict[str, Any]) -> dict[str, Any]:
        """The block choices a config gives (``channel_unit_cfg["blocks"]``); a traced model must
        have every block it names (``KeyError``)."""
        if not isinstance(configured, dict) or not configured:
            return {}
        unknown = [name for name in configured if not self.is_block_key(name)]
        if unknown:
            raise KeyError(f"the config names blocks this model does not have: {', '.join(unknown)}")
        return {name: cfg["choice"] for name, cfg in configured.items()
                if isinstance(cfg, dict) and "choice" in cfg and self.block(name).is_mutable}

    def dropped_paths(self) -> list[str]:
        """The module paths of the dropped blocks (branches included)."""
        return [b.path for b in self.removable_blocks if b.dropped]

    def dropped_branches(self) -> list[str]:
        """The module paths of the dropped inline branches (the export puts zeros in their place)."""
        return [b.path for b in self.removable_blocks if b.dropped and b.kind == "branch"]
