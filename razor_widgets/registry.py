"""A registry of buildable types: configs are data, only registered names can be built."""
from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

# the module whose import registers every type of the package (the facade loads it on first use)
PACKAGE_EXPORTS = "razor_widgets.exports"


class Registry:
    """Maps type names to classes; ``build(cfg)`` instantiates ``cfg['type']`` with the rest."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._types: dict[str, type] = {}

    def register_module(
        self, name: str | list[str] | None = None, force: bool = False, module: type | None = None
    ) -> Callable[[type], type] | type:
        """Register a class under its own name (and any aliases); usable as a decorator."""

        def _register(cls: type) -> type:
            names = [cls.__name__] if name is None else ([name] if isinstance(name, str) else name)
            for key in names:
                if key in self._types and self._types[key] is not cls and not force:
                    raise KeyError(f"{key!r} is already registered in {self.name}")
                self._types[key] = cls
            return cls

        return _register(module) if module is not None else _register

    def _load_package(self) -> None:
        """Register the package's types on a miss: a submodule imported on its own (``from
        razor_widgets.mutators import ChannelMutator``) does not load the whole package."""
        importlib.import_module(PACKAGE_EXPORTS)

    def get(self, name: str) -> type:
        """The class registered as ``name`` (an ``mmrazor.`` scope is dropped); ``KeyError`` listing the known names."""
        key = name.split(".")[-1] if name.startswith("mmrazor.") else name
        if key not in self._types:
            self._load_package()
        if key not in self._types:
            known = ", ".join(sorted(self._types))
            raise KeyError(f"{name!r} is not a registered type in {self.name}; known types: {known}")
        return self._types[key]

    def __contains__(self, name: str) -> bool:
        if name not in self._types:
            self._load_package()
        return name in self._types

    def build(self, cfg: dict[str, Any] | Any, **default_args: Any) -> Any:
        """Build an object from ``{'type': name, **kwargs}``; objects that are not dicts pass through."""
        if not isinstance(cfg, dict):
            return cfg
        if "type" not in cfg:
            raise KeyError(f"config for {self.name} has no 'type': {cfg!r}")
        args = {k: v for k, v in cfg.items() if k not in ("type", "_scope_")}
        for key, value in default_args.items():
            args.setdefault(key, value)
        cls = cfg["type"] if isinstance(cfg["type"], type) else self.get(cfg["type"])
        return cls(**args)


MODELS = Registry("MODELS")
