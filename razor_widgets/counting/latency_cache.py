"""The on-disk cache of measured layer latencies, one JSON file per machine setting.

A file holds the timings of one (machine, torch version, device, threads, dtype) setting; each
entry's key names the layer geometry (static layer, input shapes with the batch) and the kept
channels, so identical layers anywhere are measured once. Saved atomically; a file that is not a
cache of this format is never read as one (a clear error names it).
"""
from __future__ import annotations

import hashlib
import json
import os
import platform
from pathlib import Path
from typing import Any

import torch

__all__ = ["LatencyCache", "machine_key", "default_cache_dir", "allocator_setting"]

FORMAT = "razor_widgets.latency/1"


def default_cache_dir() -> Path:
    """``$RAZOR_WIDGETS_CACHE/latency``, else ``~/.cache/razor_widgets/latency``."""
    root = os.environ.get("RAZOR_WIDGETS_CACHE")
    return (Path(root) if root else Path.home() / ".cache" / "razor_widgets") / "latency"


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


ALLOCATOR_ENV = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_", "MALLOC_ARENA_MAX",
                 "GLIBC_TUNABLES", "LD_PRELOAD", "THP_MEM_ALLOC_ENABLE")


def allocator_setting() -> dict[str, str]:
    """The environment that changes how memory is allocated (glibc's malloc settings, a preloaded
    allocator, PyTorch's huge pages): big activations' page faults, a large share of a forward's time."""
    return {k: os.environ[k] for k in ALLOCATOR_ENV if os.environ.get(k)}


def machine_key(device: str, threads: int, dtype: torch.dtype, clock: str = "wall") -> dict[str, Any]:
    """What a timing depends on besides the layer: machine, torch version, device, threads, dtype,
    the clock (wall time, or one thread's CPU time) and the allocator's settings."""
    dev = torch.device(device)
    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else _cpu_name()
    return {"host": platform.node(), "machine": name, "cpus": os.cpu_count(), "torch": torch.__version__,
            "device": str(dev), "threads": int(threads), "dtype": str(dtype), "clock": clock,
            "allocator": allocator_setting()}


class LatencyCache:
    """Measured timings by entry key, for one :func:`machine_key`; ``save()`` writes the file."""

    def __init__(self, key: dict[str, Any], directory: str | Path | None = None) -> None:
        self.key = key
        digest = hashlib.sha1(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
        self.path = Path(directory) if directory is not None else default_cache_dir()
        self.path = self.path / f"{digest}.json"
        self.entries: dict[str, dict[str, float]] = {}
        self._unsaved = 0
        if self.path.exists():
            self._load()

    def _load(self) -> None:
        try:
            data = json.loads(self.path.read_text())
        except (OSError, ValueError) as err:
            raise ValueError(f"latency cache {self.path} is not readable JSON ({err}); delete it") from err
        if not isinstance(data, dict) or data.get("format") != FORMAT or not isinstance(data.get("entries"), dict):
            raise ValueError(f"{self.path} is not a razor_widgets latency cache ({FORMAT}); delete it")
        if data.get("key") == self.key:
            self.entries = {k: v for k, v in data["entries"].items() if isinstance(v, dict) and "median_ms" in v}

    def get(self, entry: str) -> dict[str, float] | None:
        """The stored timing of ``entry`` (``Timing.as_dict()``), or None."""
        return self.entries.get(entry)

    def put(self, entry: str, timing: dict[str, float], save_every: int = 20) -> None:
        """Store a timing; the file is written every ``save_every`` new entries (and by ``save()``)."""
        self.entries[entry] = timing
        self._unsaved += 1
        if self._unsaved >= save_every:
            self.save()

    def save(self) -> None:
        """Write the file (atomically: a crash leaves the old file or the new one)."""
        if not self._unsaved and self.path.exists():
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"format": FORMAT, "key": self.key, "entries": self.entries}))
        tmp.replace(self.path)
        self._unsaved = 0

    def __len__(self) -> int:
        return len(self.entries)


def entry_key(*parts: Any) -> str:
    """A stable entry key from JSON-able parts (a digest, so keys stay short)."""
    text = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha1(text.encode()).hexdigest()
