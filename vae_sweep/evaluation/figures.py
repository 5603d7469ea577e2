"""The study's figures: pure functions from data to a titled, labelled PNG, each closing its figure."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from matplotlib.ticker import MaxNLocator
from torch import Tensor

from vae_sweep import names
from vae_sweep.evaluation.grids import GRID_PADDING, image_grid, image_shape, tile_centre
from vae_sweep.evaluation.plotting import plt, saved_figure

LOSS_TERMS = (("kl", "KL"), ("recon", "reconstruction"), ("loss", "total (the objective)"))


def _show_grid(ax, grid: np.ndarray) -> None:
    # Fixed limits keep grey levels comparable between figures instead of stretching each one to its own range.
    ax.imshow(grid, cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")


def losses(history: list[dict[str, float]], path: Path | str) -> Path:
    """KL, reconstruction and total loss per epoch, train against test, in three panels."""
    path = Path(path)
    epochs = [row["epoch"] for row in history]
    with saved_figure(path, ncols=len(LOSS_TERMS), figsize=(15, 4.5)) as (fig, axes):
        for ax, (term, name) in zip(axes, LOSS_TERMS, strict=True):
            for split in ("train", "test"):
                ax.plot(epochs, [row[names.epoch_key(split, term)] for row in history], marker=".", label=split)
            ax.set_title(name)
            ax.set_xlabel("epoch")
            ax.set_ylabel("nats per image")
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax.legend()
        fig.suptitle("Loss per epoch, train and test")
    return path


def reconstructions(
    real: Tensor,
    reconstructed: Tensor,
    path: Path | str,
    title: str = "Test images and their reconstructions",
    shape: Sequence[int] | None = None,
) -> Path:
    """Real images in the top row, each one's reconstruction beneath it."""
    if real.shape != reconstructed.shape:
        raise ValueError(f"real {tuple(real.shape)} and reconstructed {tuple(reconstructed.shape)} differ in shape")
    path = Path(path)
    columns = len(real)
    with saved_figure(path, figsize=(0.6 * columns + 1.5, 3)) as (fig, ax):
        _show_grid(ax, image_grid(torch.cat([real, reconstructed]), nrow=columns, shape=shape))
        height = image_shape(real, shape)[1]
        ax.set_yticks([tile_centre(0, height), tile_centre(1, height)], ["real", "reconstructed"])
        ax.set_xticks([])
        ax.set_title(title)
    return path


def samples(images: Tensor, path: Path | str, prior: str = "N(0, I)", shape: Sequence[int] | None = None) -> Path:
    """Decoded prior samples in a square grid (8x8 for 64); `prior` names the p(z) they were drawn from."""
    path = Path(path)
    with saved_figure(path, figsize=(7, 7.5)) as (fig, ax):
        _show_grid(ax, image_grid(images, nrow=math.ceil(math.sqrt(len(images))), shape=shape))
        ax.set_axis_off()
        ax.set_title(f"{len(images)} samples decoded from z ~ {prior}\n(pixel probabilities of p(x|z), not binarised)")
    return path


def pca_2d(means: Tensor) -> tuple[Tensor, Tensor]:
    """Centred means projected on their first two principal axes, (N, 2), and each axis's share of the variance."""
    centred = means.detach().cpu().float()
    centred = centred - centred.mean(dim=0)
    _, singular_values, axes = torch.linalg.svd(centred, full_matrices=False)
    variances = singular_values.pow(2)
    return centred @ axes[:2].T, variances[:2] / variances.sum()


def latent_scatter(
    means: Tensor, labels: Tensor | None, path: Path | str, class_names: Sequence[str] | None = None
) -> Path:
    """Posterior means of the test set coloured by class (in one colour without labels): as they are in 1-D and
    2-D, a PCA projection above."""
    path = Path(path)
    if labels is None:
        labels, class_names = torch.zeros(len(means), dtype=torch.long), ["unlabelled"]
    means, labels = means.detach().cpu().float(), labels.detach().cpu()
    latent = means.shape[1]
    if latent == 1:
        # One coordinate alone would pile all classes on a line; a row per class, jittered, shows their overlap.
        jitter = torch.rand(len(labels), generator=torch.Generator().manual_seed(0)) * 0.6 - 0.3
        x, y = means[:, 0], labels.float() + jitter
        title = "Posterior means of the test set: z1 of each class (1-D latent, rows jittered)"
        x_label, y_label = "z1", "class"
    elif latent == 2:
        x, y = means[:, 0], means[:, 1]
        title = "Posterior means of the test set"
        x_label, y_label = "z1", "z2"
    else:
        projected, explained = pca_2d(means)
        x, y = projected[:, 0], projected[:, 1]
        title = f"Posterior means of the test set: PCA projection of the {latent}-D latent space"
        x_label = f"principal component 1 ({explained[0]:.1%} of variance)"
        y_label = f"principal component 2 ({explained[1]:.1%} of variance)"
    classes = labels.unique().tolist()
    names = [class_names[label] if class_names is not None else str(label) for label in classes]
    with saved_figure(path, figsize=(8, 6.5)) as (fig, ax):
        colours = plt.get_cmap("tab10")
        for label, name in zip(classes, names, strict=True):
            chosen = labels == label
            ax.scatter(x[chosen], y[chosen], s=2, alpha=0.4, color=colours(label % 10), label=name, linewidths=0)
        if latent == 1:
            ax.set_yticks(classes, names)
        legend = ax.legend(title="class", markerscale=4, loc="upper left", bbox_to_anchor=(1.02, 1))
        # Swatches inherit the points' transparency and would be too faint to match colours against.
        for handle in legend.legend_handles:
            handle.set_alpha(1.0)
        ax.set_title(title)
        ax.set_xlabel(x_label)
        ax.set_ylabel(y_label)
    return path


def manifold_grid(
    decode: Callable[[Tensor], Tensor],
    n: int = 20,
    span: float = 3.0,
    device: torch.device | str = "cpu",
    shape: Sequence[int] | None = None,
) -> np.ndarray:
    """Images decoded on an n x n grid over [-span, span]^2, z1 rising left to right and z2 bottom to top."""
    values = torch.linspace(-span, span, n, device=device)
    z2, z1 = torch.meshgrid(values, values, indexing="ij")
    with torch.no_grad():
        images = decode(torch.stack([z1.flatten(), z2.flatten()], dim=1)).detach().cpu()
    # z2 rises with the row of the batch, but the first row of a picture is its top one.
    return image_grid(images.reshape(n, n, -1).flip(0).reshape(n * n, -1), nrow=n, shape=shape)


def manifold(
    decode: Callable[[Tensor], Tensor],
    path: Path | str,
    n: int = 20,
    span: float = 3.0,
    device: torch.device | str = "cpu",
    shape: Sequence[int] | None = None,
    note: str = "",
) -> Path:
    """The decoder over a square of a 2-D latent space; `device` is where decode expects its z. The square is the
    central mass of N(0, I); `note` says so in the title when the model's prior is another one."""
    path = Path(path)
    tick_values = np.linspace(-span, span, 5)
    # The grid's linspace puts value v at fractional tile index (v + span) / (2 span) * (n - 1).
    tile_indices = (tick_values + span) / (2 * span) * (n - 1)
    tick_labels = [f"{value:g}" for value in tick_values]
    with saved_figure(path, figsize=(9, 9)) as (fig, ax):
        grid = manifold_grid(decode, n, span, device, shape)
        _show_grid(ax, grid)
        size = (grid.shape[0] - GRID_PADDING) // n - GRID_PADDING
        ax.set_xticks([tile_centre(index, size) for index in tile_indices], tick_labels)
        ax.set_yticks([tile_centre(n - 1 - index, size) for index in tile_indices], tick_labels)
        ax.set_xlabel("z1")
        ax.set_ylabel("z2")
        title = f"Decoder means over the latent square [{-span:g}, {span:g}]², {n}×{n} grid"
        ax.set_title(title + (f"\n{note}" if note else ""))
    return path


def kl_per_dim(values: Tensor, path: Path | str) -> Path:
    """Test-set KL of each latent dimension, largest first."""
    path = Path(path)
    ranked = values.detach().cpu().float().sort(descending=True).values
    with saved_figure(path, figsize=(max(6.0, 0.12 * len(ranked) + 2), 4.5)) as (fig, ax):
        ax.bar(np.arange(1, len(ranked) + 1), ranked.numpy())
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("latent dimension (sorted by KL)")
        ax.set_ylabel("KL (nats)")
        ax.set_title(
            f"Test-set KL per latent dimension (sorted)\ntotal {ranked.sum():.2f} nats over {len(ranked)} dimensions"
        )
    return path


def kl_per_dim_history(kl: Tensor, path: Path | str) -> Path:
    """Test-set KL of each latent dimension (columns of the (epochs, latent) `kl`) over epochs, as a heatmap whose
    rows are the dimensions sorted by their final KL: collapsed dimensions gather at the bottom."""
    path = Path(path)
    kl = kl.detach().cpu().float()
    epochs, latent = kl.shape
    order = kl[-1].argsort(descending=True)
    width = max(6.0, min(14.0, 0.05 * epochs + 5))
    height = max(3.5, min(12.0, 0.06 * latent + 3))
    with saved_figure(path, figsize=(width, height)) as (fig, ax):
        extent = (0.5, epochs + 0.5, latent + 0.5, 0.5)
        image = ax.imshow(kl[:, order].T.numpy(), aspect="auto", interpolation="nearest", extent=extent)
        fig.colorbar(image, ax=ax, label="KL (nats)")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        if latent <= 25:  # few enough rows to name each dimension
            ax.set_yticks(range(1, latent + 1), [f"z{dim + 1}" for dim in order.tolist()])
            ax.set_ylabel("latent dimension, sorted by final KL")
        else:
            ax.yaxis.set_major_locator(MaxNLocator(integer=True))
            ax.set_ylabel("latent dimension (rank by final KL)")
        ax.set_xlabel("epoch")
        ax.set_title(f"Test-set KL per latent dimension over {epochs} epochs ({latent} dimensions, sorted by final KL)")
    return path
