"""Images tiled into one picture, for the figures and the per-epoch frames alike: numpy and torch only, so that a job
logging frames loads no plotting library."""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
from torch import Tensor

GRID_PADDING = 2
# Grey between tiles separates them without looking like ink (1) or background (0).
GRID_PAD_VALUE = 0.5


def image_shape(images: Tensor, shape: Sequence[int] | None) -> tuple[int, int, int]:
    """(channels, height, width) of flattened images: `shape` when given, else square single-channel ones."""
    if shape is not None:
        return tuple(shape)
    side = math.isqrt(images.shape[-1])
    if side * side != images.shape[-1]:
        raise ValueError(f"{images.shape[-1]} pixels are no square image; pass the images' shape")
    return (1, side, side)


def image_grid(images: Tensor, nrow: int, shape: Sequence[int] | None = None) -> np.ndarray:
    """(N, C*H*W) pixel values in [0, 1] as one picture, nrow images per row, filled row by row, GRID_PADDING pixels
    of GRID_PAD_VALUE around every tile: (H, W) for one channel, (H, W, 3) for three."""
    channels, height, width = image_shape(images, shape)
    tiles = images.detach().cpu().float().reshape(-1, channels, height, width).permute(0, 2, 3, 1).numpy()
    columns = min(nrow, len(tiles))
    rows = math.ceil(len(tiles) / columns)
    step_y, step_x = height + GRID_PADDING, width + GRID_PADDING
    grid = np.full((rows * step_y + GRID_PADDING, columns * step_x + GRID_PADDING, channels), GRID_PAD_VALUE, "float32")
    for index, tile in enumerate(tiles):
        top, left = GRID_PADDING + (index // columns) * step_y, GRID_PADDING + (index % columns) * step_x
        grid[top : top + height, left : left + width] = tile
    return grid[..., 0] if channels == 1 else grid


def tile_centre(index: float, size: int) -> float:
    """Pixel coordinate of the centre of the tile at row or column `index` of an image_grid of size-pixel tiles."""
    return GRID_PADDING + index * (size + GRID_PADDING) + (size - 1) / 2
