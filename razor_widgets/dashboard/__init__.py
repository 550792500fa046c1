"""The dashboard: the explorer on one model, served by Voilà (``razor-widgets dashboard``).

``server`` starts and configures Voilà (run from the command line), ``page`` is what the
page's kernel shows. This module only names what they share, and imports nothing heavy.
"""
from __future__ import annotations

from pathlib import Path

NOTEBOOK = Path(__file__).with_name("dashboard.ipynb")
# what the command hands to the page's kernel (it inherits the server's environment)
MODEL_ENV, INPUT_SHAPE_ENV, WORKDIR_ENV = "RAZOR_WIDGETS_MODEL", "RAZOR_WIDGETS_INPUT_SHAPE", "RAZOR_WIDGETS_WORKDIR"


def format_shape(shape: tuple[int, ...] | list[int]) -> str:
    """``1x3x224x224``: how a shape travels in the environment and shows on the page."""
    return "x".join(str(int(d)) for d in shape)


def parse_shape(text: str) -> tuple[int, ...]:
    """The inverse of ``format_shape``."""
    return tuple(int(d) for d in text.split("x"))
