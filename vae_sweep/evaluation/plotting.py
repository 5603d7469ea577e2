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
# zlib's fastest level: the same pixels, files within ~10% of the default level's (a noisy manifold's a third smaller),
# and a job's seven figures encode in 75 ms instead of 185 (measured on 2026-12-06, benchmarks/SPEEDUPS.md).
PNG = {"compress_level": 1}


@contextmanager
def saved_figure(path: Path, **subplots: Any) -> Iterator[tuple[Figure, Any]]:
    """A new figure and its axes, written to path as PNG when the block ends and closed however it ends."""
    fig, axes = plt.subplots(**subplots)
    try:
        yield fig, axes
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=DPI, bbox_inches="tight", pil_kwargs=PNG)
    finally:
        plt.close(fig)
