"""Matplotlib figures drawn off screen (no pyplot, no backend switch) and turned into PNG."""
from __future__ import annotations

import io

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from PIL import Image


def new_figure(width: float, height: float, dpi: int = 80) -> tuple[Figure, FigureCanvasAgg]:
    """A figure of ``width`` x ``height`` inches with its own Agg canvas."""
    fig = Figure(figsize=(width, height), dpi=dpi)
    return fig, FigureCanvasAgg(fig)


def canvas_png(canvas: FigureCanvasAgg) -> bytes:
    """The canvas as it was last drawn, as PNG bytes (fast compression: redraws matter more)."""
    width, height = canvas.get_width_height()
    image = Image.frombuffer("RGBA", (width, height), canvas.buffer_rgba(), "raw", "RGBA", 0, 1)
    out = io.BytesIO()
    image.convert("RGB").save(out, format="PNG", compress_level=1)
    return out.getvalue()


def figure_png(fig: Figure, canvas: FigureCanvasAgg) -> bytes:
    """Draw the whole figure and return it as PNG bytes."""
    canvas.draw()
    return canvas_png(canvas)
