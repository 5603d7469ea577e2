"""Images per epoch: what the model makes of fixed inputs as it trains, a slider of frames in the MLflow UI."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from vae_sweep import names
from vae_sweep.core.data import MNIST_SHAPE, Split, to_float
from vae_sweep.core.model import VAE
from vae_sweep.evaluation.figures import image_grid
from vae_sweep.tracking.runs import MlflowTracker, NullTracker

INPUTS = 8  # test images, shown over their reconstructions
DRAWS = 16  # prior draws
SCALE = 3  # pixels per image pixel: 28-pixel digits are too small to read in the UI's image cards


def _picture(images: torch.Tensor, nrow: int, shape: Sequence[int]) -> np.ndarray:
    grid = image_grid(images, nrow=nrow, shape=shape)
    return (grid.repeat(SCALE, axis=0).repeat(SCALE, axis=1) * 255).round().astype(np.uint8)


class EpochFrames:
    """Reconstructions of the first test images and decodings of fixed prior draws, at the first epoch, every
    `every` epochs and the last: the same inputs in every frame and every run, so that frames compare.

    The draws come from their own generator, so logging frames leaves the training RNG, and the result, untouched.
    """

    def __init__(
        self,
        model: VAE,
        test: Split,
        tracker: MlflowTracker | NullTracker,
        every: int,
        epochs: int,
        shape: Sequence[int] = MNIST_SHAPE,
    ):
        self.model, self.tracker, self.every, self.epochs, self.shape = model, tracker, every, epochs, shape
        device = test.images.device
        self.inputs = to_float(test.images[:INPUTS])
        self.draws = torch.randn(DRAWS, model.latent, generator=torch.Generator().manual_seed(0)).to(device)

    def due(self, epoch: int) -> bool:
        return self.every > 0 and (epoch == 1 or epoch % self.every == 0 or epoch == self.epochs)

    @torch.no_grad()
    def __call__(self, epoch: int) -> None:
        if not self.due(epoch):
            return
        training = self.model.training
        self.model.eval()
        means, _ = self.model.encode(self.inputs)
        pairs = torch.cat([self.inputs, self.model.decode(means)])
        self.tracker.log_image(_picture(pairs, INPUTS, self.shape), names.IMAGE_RECONSTRUCTIONS, epoch)
        draws = _picture(self.model.decode(self.draws), DRAWS // 2, self.shape)
        self.tracker.log_image(draws, names.IMAGE_SAMPLES, epoch)
        self.model.train(training)
