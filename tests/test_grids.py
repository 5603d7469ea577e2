import numpy as np
import pytest
import torch

from vae_sweep.evaluation.grids import GRID_PAD_VALUE, GRID_PADDING, image_grid, tile_centre

TILE = 28 + GRID_PADDING


def test_image_grid_places_images_row_by_row_with_padding():
    images = torch.arange(4).float().div(4).repeat_interleave(784).reshape(4, 784)
    grid = image_grid(images, nrow=2)
    assert grid.shape == (2 * TILE + GRID_PADDING, 2 * TILE + GRID_PADDING)
    for index in range(4):
        row, column = divmod(index, 2)
        assert grid[row * TILE + 10, column * TILE + 10] == pytest.approx(index / 4)
    assert grid[0, 0] == GRID_PAD_VALUE


def test_image_grid_leaves_missing_images_of_the_last_row_blank():
    images = torch.rand(3, 784, generator=torch.Generator().manual_seed(0))
    grid = image_grid(images, nrow=2)
    assert grid.shape == (2 * TILE + GRID_PADDING,) * 2
    assert (grid[TILE + GRID_PADDING :, TILE + GRID_PADDING :] == GRID_PAD_VALUE).all()


def test_an_image_keeps_its_pixels_in_order_and_the_tile_centres_fall_on_tiles():
    images = torch.rand(6, 784, generator=torch.Generator().manual_seed(1))
    grid = image_grid(images, nrow=3)
    top, left = GRID_PADDING + TILE, GRID_PADDING + 2 * TILE  # image 5: row 1, column 2
    assert np.array_equal(grid[top : top + 28, left : left + 28], images[5].reshape(28, 28).numpy())
    assert tile_centre(2, 28) == left + 13.5 and tile_centre(1, 28) == top + 13.5


def test_an_rgb_grid_keeps_its_three_channels_and_odd_sizes_their_shape():
    rgb = torch.rand(4, 3 * 32 * 32, generator=torch.Generator().manual_seed(0))
    grid = image_grid(rgb, nrow=2, shape=(3, 32, 32))
    assert grid.shape == (2 + 2 * 34, 2 + 2 * 34, 3)
    assert np.array_equal(grid[2:34, 36:68], rgb[1].reshape(3, 32, 32).permute(1, 2, 0).numpy())
    with pytest.raises(ValueError, match="pass the images' shape"):
        image_grid(torch.rand(2, 3 * 32 * 32), nrow=2)
