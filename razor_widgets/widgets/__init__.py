"""The notebook widgets: built on the engine's public API only (the engine never imports them)."""
from .explorer import PruningExplorer

__all__ = ["PruningExplorer"]
