"""End-of-run quality of a trained VAE: train-test gap, IWAE bound, active units, KL per dimension, sample quality."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Sequence

import torch
from filelock import FileLock
from torch import Tensor

from vae_sweep import names
from vae_sweep.core import metrics
from vae_sweep.core.data import MNIST_SHAPE, Split
from vae_sweep.core.models import Posterior, VAEModel
from vae_sweep.core.train import evaluate
from vae_sweep.evaluation import classifier

log = logging.getLogger(__name__)


def generalisation(model: VAEModel, train: Split, test: Split, training) -> dict[str, float]:
    """Train and test loss of the final model, evaluated the same way, and their gap (nats)."""
    train_loss = evaluate(model, train, training.eval_batch_size, training.eval_seed, training.beta)["loss"]
    test_loss = evaluate(model, test, training.eval_batch_size, training.eval_seed, training.beta)["loss"]
    return {names.Q_TRAIN_LOSS: train_loss, names.Q_TEST_LOSS: test_loss, names.Q_GAP: test_loss - train_loss}


def likelihood(model: VAEModel, test: Split, eval_cfg, binarized: bool) -> dict[str, float]:
    """The IWAE bound L_k on the test set (its first eval.iwae_images), with k and the images it averages over.

    Only on binary pixels is -L_k a bound on a negative log-likelihood; on grey levels the Bernoulli "likelihood" of
    a pixel of level 0.5 is at most 1/2 whatever the model, so -L_k is a number of nats with no likelihood behind it,
    named for that (names.Q_IWAE_GREY).
    """
    images = test.images[: eval_cfg.iwae_images]
    bound = metrics.iwae_bound(model, images, eval_cfg.iwae_k, eval_cfg.iwae_batch_size, eval_cfg.seed)
    return {
        names.Q_IWAE_BOUND: bound,
        names.Q_IWAE_NLL if binarized else names.Q_IWAE_GREY: -bound,
        names.Q_IWAE_K: eval_cfg.iwae_k,
        names.Q_IWAE_IMAGES: len(images),
    }


def latent_usage(posterior: Posterior, kl: Tensor) -> dict[str, float]:
    """Active units, the largest per-dimension KL and the dimensions whose KL is about 0 (against the model's own
    prior: metrics.kl_per_dimension)."""
    return {
        names.Q_ACTIVE_UNITS: metrics.active_units(posterior.mean),
        names.Q_KL_MAX_DIM: kl.max().item(),
        names.Q_PRIOR_DIMS: int((kl < names.PRIOR_KL_NATS).sum()),
    }


def load_classifier(
    dataset: str, train: Split, test: Split, cache_dir: Path, shape: Sequence[int] = MNIST_SHAPE
) -> classifier.Scorer:
    """The dataset's classifier, trained once; the lock keeps parallel jobs from training it side by side."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    with FileLock(str(cache_dir / f"{dataset}.lock")):
        return classifier.load_or_train(dataset, train, test, cache_dir, shape)


def sample_quality(model: VAEModel, scorer: classifier.Scorer, test: Split, eval_cfg) -> dict[str, float]:
    """FID and inception score of prior samples, beside the same scores of real data for scale."""
    generator = torch.Generator(test.images.device).manual_seed(eval_cfg.seed)
    samples = model.sample(eval_cfg.samples, generator)
    scores = classifier.sample_quality(scorer, samples)
    return {
        names.Q_FID: scores["fid"],
        names.Q_IS: scores["inception_score"],
        names.Q_IS_MEAN: scores["inception_score_mean"],
        names.Q_IS_STD: scores["inception_score_std"],
        names.Q_SAMPLES: eval_cfg.samples,
        names.Q_FID_REFERENCE: scorer.real_fid,
        names.Q_IS_REFERENCE: scorer.real_inception_score,
    }
