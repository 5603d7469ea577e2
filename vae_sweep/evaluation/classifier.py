"""A small CNN classifier of the dataset, whose features and class probabilities score VAE samples (FID, IS)."""

from __future__ import annotations

import hashlib
import itertools
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vae_sweep.core.data import CHUNK_ROWS, MNIST_SHAPE, Split, batch_indices, to_float
from vae_sweep.core.io import save_atomically
from vae_sweep.core.memory import release_freed_memory
from vae_sweep.core.metrics import (
    frechet_distance_of_statistics,
    gaussian_statistics,
    inception_score,
    inception_score_splits,
)

# Two epochs with a linearly decaying learning rate reach about 98.7-98.8% test accuracy on MNIST;
# one epoch, or two at a constant rate, land at or just under 98.5%.
EPOCHS = 2
FEATURES = 128
CLASSES = 10
# The smallest image side its two 3x3 convolutions and 2x2 pooling leave a feature map of.
MIN_SIDE = 6
# Images per forward pass when scoring a set. Sets are cut into runs of 1000 images (an accelerator scores each run in
# one pass, its memory is not the job's); the CPU cuts each run again into passes of 50 to 99 images: 1000 images'
# activations added ~350 MB to a job's peak memory. Every image gets the same outputs bit for bit either way, and
# faster, as long as no pass is smaller than its run: the CPU's matrix products of fewer than 16 rows take another
# kernel, and round differently.
SCORING_RUN = 1000
SCORING_PASS_CPU = 50


def scoring_passes(n: int, device: torch.device, batch_size: int | None = None) -> list[tuple[int, int]]:
    """(start, stop) of each forward pass over n images: batch_size at a time if given, else as above."""
    if batch_size:
        return [(start, min(start + batch_size, n)) for start in range(0, n, batch_size)]
    passes = []
    for run in range(0, n, SCORING_RUN):
        size = min(SCORING_RUN, n - run)
        if device.type != "cpu":
            passes.append((run, run + size))
            continue
        cuts = [run + cut * SCORING_PASS_CPU for cut in range(max(1, size // SCORING_PASS_CPU))] + [run + size]
        passes += list(itertools.pairwise(cuts))  # the last pass of a run takes its remainder
    return passes


class SmallCNN(nn.Module):
    """The PyTorch MNIST example's net: two 3x3 convolutions, max-pooling, a 128-unit hidden layer, dropout.

    Pixels are standardized with the training set's mean and deviation, kept as buffers so a cached net has them.
    Images of another `shape` (C, H, W; H and W at least 6) or number of `classes` get the same layers, sized to fit.
    """

    def __init__(
        self,
        pixel_mean: float = 0.0,
        pixel_std: float = 1.0,
        shape: Sequence[int] = MNIST_SHAPE,
        classes: int = CLASSES,
    ):
        super().__init__()
        self.shape = tuple(shape)
        self.register_buffer("pixel_mean", torch.tensor(pixel_mean))
        self.register_buffer("pixel_std", torch.tensor(pixel_std))
        pooled = ((shape[1] - 4) // 2) * ((shape[2] - 4) // 2)
        self.body = nn.Sequential(
            nn.Conv2d(shape[0], 32, 3),
            nn.ReLU(),
            nn.Conv2d(32, 64, 3),
            # Pooling before the ReLU gives the same values and gradients as after it (max and ReLU commute, and the
            # ReLU's zero gradient covers the same elements), for a quarter of the ReLU's work.
            nn.MaxPool2d(2),
            nn.ReLU(),
            nn.Dropout(0.25),
            nn.Flatten(),
            nn.Linear(64 * pooled, FEATURES),
            nn.ReLU(),
        )
        self.head = nn.Sequential(nn.Dropout(0.5), nn.Linear(FEATURES, classes))
        # oneDNN's convolutions, backward above all, are faster on channels-last weights: a training step of 128 at
        # 1 thread took 203 ms against 269 ms (medians, alternated, 2026-12-03).
        self.to(memory_format=torch.channels_last)

    def features(self, x: Tensor) -> Tensor:
        """Penultimate activations (N, 128) of flat (N, C*H*W) images in [0, 1]."""
        standardized = (x - self.pixel_mean) / self.pixel_std
        return self.body(standardized.reshape(-1, *self.shape))

    def forward(self, x: Tensor) -> Tensor:
        """Class logits (N, classes)."""
        return self.head(self.features(x))


@torch.no_grad()
def accuracy(model: SmallCNN, split: Split, batch_size: int | None = None) -> float:
    """Fraction of the split's images the model labels correctly, in scoring_passes."""
    model.eval()
    correct = sum(
        int((model(to_float(split.images[start:stop])).argmax(-1) == split.labels[start:stop]).sum())
        for start, stop in scoring_passes(len(split), split.images.device, batch_size)
    )
    return correct / len(split)


def _train_epoch(model: SmallCNN, optimizer, schedule, train: Split, batch_size: int, generator) -> None:
    model.train()
    for index in batch_indices(len(train), batch_size, generator):
        index = index.to(train.images.device)
        loss = F.cross_entropy(model(train.rows(index)), train.labels[index])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()


def train_classifier(
    train: Split,
    test: Split,
    epochs: int = EPOCHS,
    seed: int = 0,
    batch_size: int = 128,
    threads: int | None = None,
    shape: Sequence[int] = MNIST_SHAPE,
) -> tuple[SmallCNN, float]:
    """A SmallCNN trained on `train` (on the images' device), and its accuracy on `test`.

    Adam, with the learning rate falling linearly from 1e-3 to 0 over all steps; `threads` caps torch's CPU threads.
    """
    device = train.images.device
    previous_threads = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        # A private RNG state: the seed fixes initialization and dropout without disturbing the caller's draws.
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            torch.manual_seed(seed)
            model = SmallCNN(*train.pixel_statistics(), shape, class_count(train)).to(device)
            optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
            steps = epochs * math.ceil(len(train) / batch_size)
            schedule = torch.optim.lr_scheduler.LinearLR(optimizer, 1.0, 0.0, total_iters=steps)
            generator = torch.Generator().manual_seed(seed)
            for _ in range(epochs):
                _train_epoch(model, optimizer, schedule, train, batch_size, generator)
        return model, accuracy(model, test)
    finally:
        torch.set_num_threads(previous_threads)


def fingerprint(train: Split, test: Split) -> str:
    """MD5 of the images (as float32 pixels) and labels of both splits: a cached classifier is only reused on the very
    same data. The images go in a chunk at a time, which gives the digest of the whole float tensor."""
    digest = hashlib.md5()
    for split in (train, test):
        for chunk in split.chunks(CHUNK_ROWS):
            digest.update(chunk.detach().cpu().contiguous().numpy())
        digest.update(split.labels.detach().cpu().contiguous().numpy())
    return digest.hexdigest()


@dataclass
class Scorer:
    """A trained classifier and what every job compares its samples with, computed once with it and cached."""

    model: SmallCNN
    accuracy: float  # on the test set
    test_statistics: tuple[Tensor, Tensor]  # Gaussian fitted to the test set's features: what samples are scored on
    real_fid: float  # the test set against as many training images: the floor a perfect model would reach
    real_inception_score: float  # of the test set
    newly_trained: bool  # by this call, rather than loaded from the cache: worth logging with the run


def reference(model: SmallCNN, train: Split, test: Split) -> dict:
    """The test set's feature statistics and the scores of real data, as cached beside the classifier."""
    test_features, test_probs = features_and_probs(model, test.images)
    train_features, _ = features_and_probs(model, train.images[: len(test)])
    test_mean, test_cov = gaussian_statistics(test_features)
    return {
        "test_mean": test_mean,
        "test_cov": test_cov,
        "fid": frechet_distance_of_statistics((test_mean, test_cov), gaussian_statistics(train_features)),
        "inception_score": inception_score(test_probs),
    }


def class_count(train: Split) -> int:
    return int(train.labels.max()) + 1


def load_or_train(
    dataset_name: str, train: Split, test: Split, cache_dir: str | os.PathLike, shape: Sequence[int] = MNIST_SHAPE
) -> Scorer:
    """The classifier cached as cache_dir/<dataset>_cnn.pt when it was trained on this data, else a new one.

    The reference scores are cached with it: they are the same for every job, and cost as much as scoring its
    samples three times over.
    """
    path = Path(cache_dir) / f"{dataset_name}_cnn.pt"
    data_md5 = fingerprint(train, test)
    payload, newly_trained = None, False
    if path.exists():
        cached = torch.load(path, map_location=train.images.device, weights_only=True)
        if cached["fingerprint"] == data_md5:
            payload = cached
    if payload is None:
        release_freed_memory()  # training's activations are the largest of the job: start it from a trimmed heap
        model, test_accuracy = train_classifier(train, test, shape=shape)
        newly_trained = True
        payload = {"state_dict": model.state_dict(), "accuracy": test_accuracy, "fingerprint": data_md5}
    model = SmallCNN(shape=shape, classes=class_count(train)).to(train.images.device)
    model.load_state_dict(payload["state_dict"])
    model.eval()
    if "reference" not in payload:  # new, or cached before the reference was
        payload["reference"] = reference(model, train, test)
        save_atomically(payload, path)
    real = payload["reference"]
    statistics = (real["test_mean"], real["test_cov"])
    return Scorer(model, payload["accuracy"], statistics, real["fid"], real["inception_score"], newly_trained)


@torch.no_grad()
def features_and_probs(model: SmallCNN, images: Tensor, batch_size: int | None = None) -> tuple[Tensor, Tensor]:
    """Penultimate features (N, 128) and class probabilities (N, 10) of float or uint8 images, on the classifier's
    device, in scoring_passes."""
    model.eval()
    device = next(model.parameters()).device
    # Filled in place: a small result kept from each pass would land between the next passes' large activations and
    # split the freed space, and the C heap was seen to grow by a pass's activations at every pass (job: 2.5 GB).
    features = torch.empty(len(images), FEATURES, device=device)
    for start, stop in scoring_passes(len(images), device, batch_size):
        features[start:stop] = model.features(to_float(images[start:stop]).to(device))
    return features, F.softmax(model.head(features), dim=-1)


def sample_quality(scorer: Scorer, samples: Tensor) -> dict[str, float]:
    """FID of samples against the test set in the classifier's feature space, and the samples' inception score: of
    the whole set, and the mean and deviation over splits as Salimans et al. (2016) report it.

    Both use this dataset's classifier, not Inception-v3, so they compare runs here but not with published FIDs.
    """
    sample_features, sample_probs = features_and_probs(scorer.model, samples)
    split_mean, split_std = inception_score_splits(sample_probs)
    return {
        "fid": frechet_distance_of_statistics(gaussian_statistics(sample_features), scorer.test_statistics),
        "inception_score": inception_score(sample_probs),
        "inception_score_mean": split_mean,
        "inception_score_std": split_std,
    }
