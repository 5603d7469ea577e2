import matplotlib.image
import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch
from PIL import Image

from tests.conftest import small_model
from vae_sweep.evaluation import figures
from vae_sweep.evaluation.grids import GRID_PADDING

TILE = 28 + GRID_PADDING


@pytest.fixture(autouse=True)
def no_open_figures():
    """Every figure a function opens it also closes, even when plotting fails."""
    assert plt.get_fignums() == []
    yield
    assert plt.get_fignums() == []


def random_images(count: int, seed: int = 0) -> torch.Tensor:
    return torch.rand(count, 784, generator=torch.Generator().manual_seed(seed))


def read_png(path) -> np.ndarray:
    """The picture as an (H, W, channels) array, after checking it is a PNG that is neither tiny nor blank."""
    assert path.is_file()
    with Image.open(path) as image:
        assert image.format == "PNG"
    picture = matplotlib.image.imread(path)
    height, width = picture.shape[:2]
    assert 150 <= height <= 3000 and 150 <= width <= 3000
    assert picture[..., :3].std() > 0.01
    return picture


def history(epochs: int) -> list[dict[str, float]]:
    rows = []
    for epoch in range(1, epochs + 1):
        row = {"epoch": epoch}
        for split, offset in (("train", 0.0), ("test", 2.0)):
            recon, kl = 200.0 / epoch + offset, 10.0 + epoch
            row |= {f"loss/recon/{split}": recon, f"loss/kl/{split}": kl, f"loss/{split}": recon + kl}
        rows.append(row)
    return rows


def test_losses_draws_three_panels_side_by_side(tmp_path):
    path = tmp_path / "figures" / "losses.png"
    assert figures.losses(history(5), path) == path
    height, width = read_png(path).shape[:2]
    assert width > 2 * height


def test_losses_needs_every_term_of_both_splits(tmp_path):
    rows = history(3)
    for row in rows:
        del row["loss/kl/test"]
    with pytest.raises(KeyError, match="loss/kl/test"):
        figures.losses(rows, tmp_path / "losses.png")


def test_reconstructions_is_a_wide_strip_of_two_rows(tmp_path):
    path = figures.reconstructions(random_images(10), random_images(10, seed=1), tmp_path / "reconstructions.png")
    height, width = read_png(path).shape[:2]
    assert width > 2 * height


def test_reconstructions_refuses_rows_of_different_lengths(tmp_path):
    with pytest.raises(ValueError, match="shape"):
        figures.reconstructions(random_images(10), random_images(9), tmp_path / "reconstructions.png")
    assert not (tmp_path / "reconstructions.png").exists()


def test_samples_is_a_square_grid(tmp_path):
    model = small_model(latent=2, hidden=[16])
    path = figures.samples(model.sample(64, torch.Generator().manual_seed(0)), tmp_path / "samples.png")
    height, width = read_png(path).shape[:2]
    assert 0.8 < height / width < 1.3


@pytest.mark.parametrize("latent", [1, 2, 5])
def test_latent_scatter_draws_any_latent_size(tmp_path, latent):
    generator = torch.Generator().manual_seed(0)
    labels = torch.arange(500) % 10
    means = torch.randn(500, latent, generator=generator) + labels[:, None].float()
    path = figures.latent_scatter(
        means, labels, tmp_path / "latent_scatter.png", class_names=[f"c{k}" for k in range(10)]
    )
    read_png(path)


def test_pca_2d_of_a_plane_keeps_all_variance_and_distances():
    generator = torch.Generator().manual_seed(0)
    plane = torch.randn(300, 2, generator=generator) * torch.tensor([3.0, 1.0])
    basis, _ = torch.linalg.qr(torch.randn(5, 2, generator=generator))
    projected, explained = figures.pca_2d(plane @ basis.T + 7.0)
    assert projected.shape == (300, 2)
    assert explained.sum().item() == pytest.approx(1.0, abs=1e-5)
    assert explained[0] > explained[1]
    # The matmul form of cdist loses about 1e-3 to cancellation in float32, more than PCA itself does.
    exact = "donot_use_mm_for_euclid_dist"
    assert torch.allclose(
        torch.cdist(projected, projected, compute_mode=exact), torch.cdist(plane, plane, compute_mode=exact), atol=1e-4
    )


def test_pca_2d_of_isotropic_data_explains_two_fifths_in_five_dimensions():
    _, explained = figures.pca_2d(torch.randn(20000, 5, generator=torch.Generator().manual_seed(0)))
    assert explained.sum().item() == pytest.approx(0.4, abs=0.02)


def test_manifold_decodes_once_the_grid_from_corner_to_corner_without_gradients(tmp_path):
    calls = []

    def decode(z):
        calls.append((z.clone(), torch.is_grad_enabled()))
        return torch.rand(len(z), 784)

    path = figures.manifold(decode, tmp_path / "manifold.png")
    read_png(path)
    assert len(calls) == 1
    z, grad_enabled = calls[0]
    assert z.shape == (400, 2)
    assert z[0].tolist() == [-3.0, -3.0] and z[-1].tolist() == [3.0, 3.0]
    assert not grad_enabled


def tile_means(grid: np.ndarray, n: int) -> np.ndarray:
    """Mean pixel of each tile of an n x n image_grid, as an (n, n) array in picture order."""
    return np.array(
        [[grid[r * TILE + 2 : r * TILE + 30, c * TILE + 2 : c * TILE + 30].mean() for c in range(n)] for r in range(n)]
    )


def test_manifold_grid_puts_z1_left_to_right_and_z2_bottom_to_top():
    span, n = 3.0, 5
    brightness_of_z1 = figures.manifold_grid(lambda z: ((z[:, :1] + span) / (2 * span)).expand(-1, 784), n, span)
    brightness_of_z2 = figures.manifold_grid(lambda z: ((z[:, 1:] + span) / (2 * span)).expand(-1, 784), n, span)
    expected = np.linspace(0.0, 1.0, n)
    assert np.allclose(tile_means(brightness_of_z1, n), np.tile(expected, (n, 1)), atol=1e-6)
    assert np.allclose(tile_means(brightness_of_z2, n), np.tile(expected[::-1, None], (1, n)), atol=1e-6)


def test_manifold_of_a_vae(tmp_path):
    read_png(figures.manifold(small_model(latent=2, hidden=[16]).pixel_means, tmp_path / "manifold.png"))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_manifold_of_a_vae_on_the_gpu(tmp_path):
    model = small_model(latent=2, hidden=[16]).cuda()
    read_png(figures.manifold(model.pixel_means, tmp_path / "manifold.png", device="cuda"))


def test_kl_per_dim_widens_with_the_number_of_dimensions(tmp_path):
    widths = []
    for latent in (1, 100):
        values = torch.rand(latent, generator=torch.Generator().manual_seed(0))
        widths.append(read_png(figures.kl_per_dim(values, tmp_path / f"kl_per_dim_{latent}.png")).shape[1])
    assert widths[1] > widths[0]


def test_kl_history_heatmap_ranks_dimensions_by_final_kl(tmp_path, monkeypatch):
    shown = []
    original = figures.plt.Axes.imshow
    monkeypatch.setattr(
        figures.plt.Axes, "imshow", lambda ax, data, **kw: shown.append(data) or original(ax, data, **kw)
    )
    kl = torch.tensor([[0.0, 1.0, 2.0], [0.5, 3.0, 0.1], [0.2, 4.0, 0.0]])  # epochs x dimensions
    picture = read_png(figures.kl_per_dim_history(kl, tmp_path / "kl_per_dim_history.png"))
    assert picture.shape[0] > 100 and picture.shape[1] > 100
    # Rows: dimension 2 (final KL 4), then 1 (0.2), then 3 (0); columns: epochs.
    np.testing.assert_allclose(shown[0], [[1.0, 3.0, 4.0], [0.0, 0.5, 0.2], [2.0, 0.1, 0.0]])


def test_a_figure_that_fails_is_closed_and_not_written(tmp_path):
    def decode(z):
        raise RuntimeError("decoder broke")

    with pytest.raises(RuntimeError, match="decoder broke"):
        figures.manifold(decode, tmp_path / "manifold.png")
    assert not (tmp_path / "manifold.png").exists()
