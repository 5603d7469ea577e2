"""The training loop: epochs of seeded mini-batches over in-memory tensors, each evaluated on whole splits (the test
set, and the validation split where one is held out)."""

from __future__ import annotations

import logging
import sys
import time
from dataclasses import dataclass, field
from typing import Callable, Mapping, Protocol

import torch
from torch import Tensor
from tqdm import tqdm

from vae_sweep import names
from vae_sweep.core.data import Split, batch_indices, binarize
from vae_sweep.core.metrics import active_units
from vae_sweep.core.models import VAEModel
from vae_sweep.core.optim import stepper
from vae_sweep.errors import NonFiniteLoss

log = logging.getLogger(__name__)

TERMS = names.TERMS


class EpochSink(Protocol):
    """Where the loop reports each epoch (the tracker); the loop knows nothing else about it."""

    def log_epoch(self, epoch: int, metrics: dict[str, float]) -> None: ...


def kl_weight(epoch: int, beta: float, warmup_epochs: int) -> float:
    """Weight of the KL term in 1-based `epoch`: a linear ramp to beta over the warm-up epochs, then beta."""
    if warmup_epochs <= 0:
        return beta
    return beta * min(1.0, epoch / warmup_epochs)


def _first_bad_batch(per_batch: Tensor) -> int:
    return int((~torch.isfinite(per_batch).all(dim=1)).nonzero()[0, 0]) + 1


@dataclass(frozen=True)
class EpochSettings:
    """What one pass over the training images reads (FitSettings.for_epoch gives a job's)."""

    batch_size: int
    dynamic_binarize: bool = False
    grad_clip: float = 0.0
    progress: bool = False


def train_epoch(
    model: VAEModel,
    optimizer: torch.optim.Optimizer,
    train: Split,
    settings: EpochSettings,
    generator: torch.Generator,
    weight: float,
    epoch: int,
) -> dict[str, float]:
    """One pass over the training images; returns each term averaged over all images of the epoch."""
    model.train()
    batches = batch_indices(len(train), settings.batch_size, generator)
    step = stepper(optimizer)
    # Per-batch sums stay on the device; one transfer at the end avoids a sync per batch.
    per_batch = []
    for index in tqdm(batches, desc=f"epoch {epoch}", leave=False, disable=not settings.progress):
        x = train.rows(index.to(train.images.device))
        if settings.dynamic_binarize:
            x = binarize(x)
        terms = model.objective(x, weight)
        optimizer.zero_grad(set_to_none=True)
        terms["loss"].backward()
        if settings.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), settings.grad_clip)
        step()
        per_batch.append(torch.stack([terms[name].detach() for name in TERMS]) * len(index))
    stacked = torch.stack(per_batch).cpu()
    if not torch.isfinite(stacked).all():
        raise NonFiniteLoss(
            f"Non-finite loss in epoch {epoch}, batch {_first_bad_batch(stacked)} of {len(batches)}; "
            "lower optimizer.lr or set training.grad_clip."
        )
    totals = stacked.sum(dim=0) / len(train)
    return dict(zip(TERMS, totals.tolist(), strict=True))


@dataclass
class LatentUsage:
    """What an evaluation's encoder pass says about latent usage, kept from its batches at no extra pass."""

    means: Tensor  # (N, latent) posterior means
    kl_per_dim: Tensor  # (latent,) KL of each dimension averaged over the images, in nats (see VAEModel.kl_per_dim)

    @property
    def active_units(self) -> int:
        return active_units(self.means)


@torch.no_grad()
def evaluate_with_posterior(
    model: VAEModel, split: Split, batch_size: int, seed: int, weight: float = 1.0
) -> tuple[dict[str, float], LatentUsage]:
    """evaluate()'s terms, and the posterior means and per-dimension KL its encoder pass computed."""
    model.eval()
    device = split.images.device
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        totals = torch.zeros(len(TERMS), device=device)
        kl_totals = torch.zeros(model.latent, device=device)
        means = []
        for x in split.chunks(batch_size):
            posterior = model.encode(x)
            terms = model.objective(x, weight, posterior)
            totals += torch.stack([terms[name] for name in TERMS]) * len(x)
            kl_totals += model.kl_per_dim(posterior).sum(0)
            means.append(posterior.mean)
    terms = dict(zip(TERMS, (totals / len(split)).tolist(), strict=True))
    return terms, LatentUsage(torch.cat(means), kl_totals / len(split))


def evaluate(model: VAEModel, split: Split, batch_size: int, seed: int, weight: float = 1.0) -> dict[str, float]:
    """Each term averaged over the whole split, with the posterior noise drawn from a fixed seed.

    The fixed seed makes the numbers comparable between epochs and runs, and leaves the training RNG untouched.
    """
    return evaluate_with_posterior(model, split, batch_size, seed, weight)[0]


# The evaluation split whose posterior gives the epoch's active units and per-dimension KL.
USAGE_SPLIT = "test"


@dataclass
class FitSettings:
    """What fit() reads: the `training` node's loop settings, and whether each batch is binarized afresh."""

    epochs: int
    batch_size: int
    eval_batch_size: int
    seed: int
    eval_seed: int
    beta: float = 1.0
    kl_warmup_epochs: int = 0
    grad_clip: float = 0.0
    progress: bool = False
    dynamic_binarize: bool = False

    @classmethod
    def of(cls, training, dynamic_binarize: bool = False) -> "FitSettings":
        """From a `training` config node (or any object with its attributes)."""
        keys = [name for name in cls.__dataclass_fields__ if name != "dynamic_binarize"]
        return cls(**{key: getattr(training, key) for key in keys}, dynamic_binarize=dynamic_binarize)

    def for_epoch(self) -> EpochSettings:
        """The pass's settings; a progress bar only where stderr is a terminal (a log file would fill with them)."""
        progress = self.progress and sys.stderr.isatty()
        return EpochSettings(self.batch_size, self.dynamic_binarize, self.grad_clip, progress)


@dataclass
class Hooks:
    """Where fit() reports and what it asks, each optional but the sink.

    checkpoint(history) runs before the epoch is reported, so a report never gets ahead of what a resumed job would
    know; on_usage(epoch, usage) gets each epoch's latent usage on USAGE_SPLIT; lr_at(epoch) sets the epoch's
    learning rate; should_stop(epoch, metrics) ends training after a reported epoch (a search's pruner).
    """

    sink: EpochSink
    checkpoint: Callable[[list[dict[str, float]]], None] | None = None
    on_usage: Callable[[int, LatentUsage], None] | None = None
    lr_at: Callable[[int], float] | None = None
    should_stop: Callable[[int, dict[str, float]], bool] | None = None


@dataclass
class Start:
    """Where training starts: the batch-order generator and the epochs already done (both from a checkpoint when
    resuming)."""

    generator: torch.Generator
    history: list[dict[str, float]] = field(default_factory=list)


def _summary_line(epoch: int, epochs: int, metrics: dict[str, float], splits) -> str:
    def terms(split: str) -> str:
        loss, recon, kl = (metrics[names.epoch_key(split, term)] for term in ("loss", "recon", "kl"))
        return f"{split} loss {loss:.2f} (recon {recon:.2f}, kl {kl:.2f})"

    parts = [f"epoch {epoch}/{epochs}", *(terms(split) for split in ("train", *splits))]
    return " | ".join(parts) + f" | {metrics[names.EPOCH_TIME]:.1f} s"


def epoch_metrics(
    model: VAEModel, train_terms: dict[str, float], evaluation: Mapping[str, Split], settings: FitSettings
) -> tuple[dict[str, float], LatentUsage]:
    """The epoch's train terms and each evaluation split's, with the latent usage on USAGE_SPLIT."""
    metrics = {names.epoch_key("train", term): value for term, value in train_terms.items()}
    usage = None
    for split, images in evaluation.items():
        # Evaluated at weight beta, not the warm-up's weight, so that epochs stay comparable during warm-up.
        terms, split_usage = evaluate_with_posterior(
            model, images, settings.eval_batch_size, settings.eval_seed, settings.beta
        )
        metrics.update({names.epoch_key(split, term): value for term, value in terms.items()})
        # With beta != 1 the loss weighs the KL by beta; the negative ELBO in nats weighs it by 1.
        metrics[names.epoch_key(split, names.ELBO)] = terms["recon"] + terms["kl"]
        if split == USAGE_SPLIT:
            usage = split_usage
            metrics[names.ACTIVE_UNITS] = usage.active_units
    return metrics, usage


def fit(
    model: VAEModel,
    optimizer: torch.optim.Optimizer,
    train: Split,
    evaluation: Mapping[str, Split],
    settings: FitSettings,
    hooks: Hooks,
    start: Start | None = None,
) -> list[dict[str, float]]:
    """Train up to settings.epochs epochs; report and return each epoch's train and evaluation terms.

    `evaluation` maps a split's name to its images (the metric keys' split: "test"). A resumed job passes the Start
    its checkpoint restored and carries on after the last epoch in that history.
    """
    # Adam's moments for weights that never get a gradient (MNIST's blank border pixels) decay into denormal floats,
    # which the CPU handles through slow microcode: ~0.75x the epoch time once flushed, with bitwise-equal histories.
    # This covers the calling thread and the threads it starts from now on; a job sets it before its intra-op threads
    # exist (vae_sweep.jobs.runtime.set_cpu_threads).
    torch.set_flush_denormal(True)
    start = start if start is not None else Start(torch.Generator().manual_seed(settings.seed))
    history = list(start.history)
    for epoch in range(len(history) + 1, settings.epochs + 1):
        began = time.perf_counter()
        weight = kl_weight(epoch, settings.beta, settings.kl_warmup_epochs)
        if hooks.lr_at is not None:
            for group in optimizer.param_groups:
                group["lr"] = hooks.lr_at(epoch)
        train_terms = train_epoch(model, optimizer, train, settings.for_epoch(), start.generator, weight, epoch)
        metrics, usage = epoch_metrics(model, train_terms, evaluation, settings)
        metrics[names.KL_WEIGHT] = weight
        metrics[names.LR] = optimizer.param_groups[0]["lr"]
        metrics[names.EPOCH_TIME] = time.perf_counter() - began
        history.append({"epoch": epoch, **metrics})
        if hooks.on_usage is not None and usage is not None:
            hooks.on_usage(epoch, usage)
        if hooks.checkpoint is not None:
            hooks.checkpoint(history)
        hooks.sink.log_epoch(epoch, metrics)
        log.info(_summary_line(epoch, settings.epochs, metrics, evaluation))
        if hooks.should_stop is not None and hooks.should_stop(epoch, metrics):
            log.info(f"Stopped after epoch {epoch} of {settings.epochs}: pruned by the search.")
            break
    return history
