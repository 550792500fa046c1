"""A matplotlib ``Figure`` that shows itself as an image wherever it is displayed (a notebook,
JupyterLab, Voilà), drawn off screen by Agg: no pyplot, no backend, no inline magic needed."""
from __future__ import annotations

import io

from matplotlib.figure import Figure


class NotebookFigure(Figure):
    """A ``Figure`` with ``_repr_png_``: the last line of a cell (or ``display(fig)``) shows the
    PNG; without it Jupyter prints ``<Figure size ... with 1 Axes>`` for a figure made without
    pyplot. Everything else is matplotlib's ``Figure`` (``savefig``, ``axes``, ...)."""

    def _repr_png_(self) -> bytes:
        out = io.BytesIO()
        self.savefig(out, format="png", bbox_inches="tight")  # savefig draws with Agg for png
        return out.getvalue()
