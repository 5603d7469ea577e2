"""Matplotlib set-up shared by the figures and the report: a headless backend and figures that always close."""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import matplotlib
from matplotlib.figure import Figure

# Figures are written from training jobs, terminals and CI alike, often on machines without a display.
matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

DPI = 100


@contextmanager
def saved_figure(path: Path, **subplots: Any) -> Iterator[tuple[Figure, Any]]:
    """A new figure and its axes, written to path as PNG when the block ends and closed however it ends."""
    fig, axes = plt.subplots(**subplots)
    try:
        yield fig, axes
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=DPI, bbox_inches="tight")
    finally:
        plt.close(fig)
