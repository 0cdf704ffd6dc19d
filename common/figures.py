"""Figures: a bare matplotlib ``Figure`` on an Agg canvas, never pyplot, written atomically as PNG.

Never through pyplot, so a notebook user's backend and open figures stay as they were; atomically, so a
crash never leaves half a picture where a finished one is expected.
"""

from __future__ import annotations

import os
from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from clumptool.common.atomic import atomic_path


def new_figure(**kwargs) -> Figure:
    """A figure with its own Agg canvas (``kwargs`` as ``matplotlib.figure.Figure``'s, e.g. ``figsize``)."""
    fig = Figure(**kwargs)
    FigureCanvasAgg(fig)
    return fig


def save_png(fig: Figure, target: str | os.PathLike, dpi: int = 100) -> Path:
    """Write ``fig`` to ``target`` as PNG, atomically."""
    with atomic_path(target, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=dpi, format="png")
    return Path(target)
