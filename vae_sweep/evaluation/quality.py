"""End-of-run quality of a trained VAE: train-test gap, IWAE bound, active units, KL per dimension, sample quality."""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from filelock import FileLock
from torch import Tensor

from vae_sweep.core import metrics
from vae_sweep.core.data import Split
from vae_sweep.core.model import VAE
from vae_sweep.core.train import evaluate
from vae_sweep.evaluation import classifier

log = logging.getLogger(__name__)


def generalisation(model: VAE, train: Split, test: Split, training) -> dict[str, float]:
    """Train and test loss of the final model, evaluated the same way, and their gap (nats)."""
    train_loss = evaluate(model, train, training.eval_batch_size, training.eval_seed, training.beta)["loss"]
    test_loss = evaluate(model, test, training.eval_batch_size, training.eval_seed, training.beta)["loss"]
    return {
        "quality/train_loss": train_loss,
        "quality/test_loss": test_loss,
        "quality/train_test_gap": test_loss - train_loss,
    }


def likelihood(model: VAE, test: Split, eval_cfg) -> dict[str, float]:
    bound = metrics.iwae_bound(model, test.images, eval_cfg.iwae_k, eval_cfg.iwae_batch_size, eval_cfg.seed)
    return {"quality/iwae_bound": bound, "quality/iwae_nll": -bound, "quality/iwae_k": eval_cfg.iwae_k}


def latent_usage(means: Tensor, logvars: Tensor) -> tuple[dict[str, float], Tensor]:
    kl = metrics.kl_per_dimension(means, logvars)
    return {"quality/active_units": metrics.active_units(means), "quality/kl_max_dim": kl.max().item()}, kl


def load_classifier(dataset: str, train: Split, test: Split, cache_dir: Path) -> classifier.Scorer:
    """The dataset's classifier, trained once; the lock keeps parallel jobs from training it side by side."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    with FileLock(str(cache_dir / f"{dataset}.lock")):
        return classifier.load_or_train(dataset, train, test, cache_dir)


def sample_quality(model: VAE, scorer: classifier.Scorer, test: Split, eval_cfg) -> dict[str, float]:
    """FID and inception score of prior samples, beside the same scores of real data for scale."""
    generator = torch.Generator(test.images.device).manual_seed(eval_cfg.seed)
    samples = model.sample(eval_cfg.samples, generator)
    scores = classifier.sample_quality(scorer, samples)
    return {
        "quality/fid": scores["fid"],
        "quality/inception_score": scores["inception_score"],
        "quality/fid_reference": scorer.real_fid,
        "quality/inception_score_reference": scorer.real_inception_score,
    }
