"""Images per epoch: what the model makes of fixed inputs as it trains, a slider of frames in the MLflow UI."""

from __future__ import annotations

import numpy as np
import torch

from vae_sweep import names
from vae_sweep.core.data import Split, to_float
from vae_sweep.core.models import VAEModel
from vae_sweep.evaluation.grids import image_grid
from vae_sweep.tracking.runs import Tracker

INPUTS = 8  # test images, shown over their reconstructions
DRAWS = 16  # prior draws
SCALE = 3  # pixels per image pixel: 28-pixel digits are too small to read in the UI's image cards


def _picture(images: torch.Tensor, nrow: int, shape: tuple[int, ...]) -> np.ndarray:
    grid = image_grid(images, nrow=nrow, shape=shape)
    return (grid.repeat(SCALE, axis=0).repeat(SCALE, axis=1) * 255).round().astype(np.uint8)


class EpochFrames:
    """Reconstructions of the first test images and decodings of prior draws, at the first epoch, every `every`
    epochs and the last: the same inputs and the same noise in every frame and every run, so that frames compare.

    The draws come from the model's own prior (a VampPrior changes as it trains, so they are drawn afresh each frame)
    through their own generator, so logging frames leaves the training RNG, and the result, untouched.
    """

    def __init__(self, model: VAEModel, test: Split, tracker: Tracker, every: int, epochs: int):
        self.model, self.tracker, self.every, self.epochs = model, tracker, every, epochs
        self.inputs = to_float(test.images[:INPUTS])

    def due(self, epoch: int) -> bool:
        return self.every > 0 and (epoch == 1 or epoch % self.every == 0 or epoch == self.epochs)

    @torch.no_grad()
    def __call__(self, epoch: int) -> None:
        if not self.due(epoch):
            return
        training = self.model.training
        self.model.eval()
        shape = self.model.shape
        pairs = torch.cat([self.inputs, self.model.pixel_means(self.model.encode(self.inputs).mean)])
        self.tracker.log_image(_picture(pairs, INPUTS, shape), names.IMAGE_RECONSTRUCTIONS, epoch)
        draws = self.model.sample(DRAWS, torch.Generator(self.inputs.device).manual_seed(0))
        self.tracker.log_image(_picture(draws, DRAWS // 2, shape), names.IMAGE_SAMPLES, epoch)
        self.model.train(training)
