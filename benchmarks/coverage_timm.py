"""The timm side of the coverage sweep: one model per timm architecture family.

A family is the timm module a model is registered from (``timm.models.resnet``). Each family is
represented by its variant with the fewest parameters among ``timm.list_models()`` (parameters
counted on the meta device: nothing is allocated), and only when that is at most ``--max-params``
(30 M); it is built with ``pretrained=False`` and called on 1x3xHxW at its default input size
(``pretrained_cfg['input_size']``). The choice is cached in ``timm_families.json`` beside this
file, keyed by the timm version (delete it to choose again).

Used by ``coverage.py --timm`` (``--models`` then takes timm model names).
"""
from __future__ import annotations

import argparse
import json
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import timm
import torch
from torch import nn

from common import quiet

CACHE = Path(__file__).resolve().parent / "timm_families.json"


@dataclass
class TimmSpec:
    """One timm model: its name, its family and its default input size."""

    name: str
    family: str  # "timm.<module>"
    params_m: float | None = None
    raw_outputs: list[str] | None = None
    counted_modules: list[str] | None = None

    def build(self) -> nn.Module:
        return timm.create_model(self.name, pretrained=False)

    def default_size(self) -> int:
        cfg = timm.get_pretrained_cfg(self.name)
        size = getattr(cfg, "input_size", None) or (3, 224, 224)
        return int(size[-1])

    def input_size(self, args: argparse.Namespace) -> int:
        return self.default_size()

    def inputs(self, size: int) -> Any:
        cfg = timm.get_pretrained_cfg(self.name)
        shape = tuple(getattr(cfg, "input_size", None) or (3, size, size))
        gen = torch.Generator().manual_seed(2)
        return torch.randn(1, *shape, generator=gen)


def _families() -> dict[str, list[str]]:
    by_module: dict[str, list[str]] = {}
    for name in timm.list_models():
        by_module.setdefault(_module_of(name), []).append(name)
    return by_module


def _module_of(name: str) -> str:
    return timm.models._registry._model_to_module[name]  # noqa: SLF001 (timm keeps no public map)


def _meta_params(name: str) -> int | None:
    try:
        with quiet(), warnings.catch_warnings(), torch.device("meta"):
            warnings.simplefilter("ignore")
            model = timm.create_model(name, pretrained=False)
        return sum(p.numel() for p in model.parameters())
    except Exception:
        return None


def smallest_per_family() -> dict[str, dict[str, Any]]:
    """``{family: {"model": name, "params": n}}`` (or ``{"model": None, "reason": ...}``),
    cached by timm version."""
    if CACHE.exists():
        cached = json.loads(CACHE.read_text())
        if cached.get("timm") == timm.__version__:
            return cached["families"]
    families: dict[str, dict[str, Any]] = {}
    for family, names in sorted(_families().items()):
        counted = [(n, _meta_params(n)) for n in names]
        sized = sorted((p, n) for n, p in counted if p is not None)
        if not sized:
            families[family] = {"model": None, "reason": "no variant builds on the meta device"}
        else:  # over --max-params, its row says skipped
            families[family] = {"model": sized[0][1], "params": sized[0][0]}
    CACHE.write_text(json.dumps({"timm": timm.__version__, "families": families}, indent=1) + "\n")
    return families


def timm_specs(args: argparse.Namespace, parser: argparse.ArgumentParser) -> list[TimmSpec]:
    """The models to sweep: ``--models`` as named, else the smallest of every family."""
    if args.models:
        wanted = [m for item in args.models for m in item.split(",") if m]
        known = set(timm.list_models())
        unknown = [m for m in wanted if m not in known]
        if unknown:
            parser.error(f"unknown timm model(s): {', '.join(unknown)}")
        return [TimmSpec(m, f"timm.{_module_of(m)}") for m in wanted]
    chosen = smallest_per_family()
    return [TimmSpec(entry["model"], f"timm.{family}", entry["params"] / 1e6)
            for family, entry in chosen.items() if entry["model"]]
