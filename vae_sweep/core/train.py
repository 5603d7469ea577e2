"""The training loop: epochs of seeded mini-batches over in-memory tensors, evaluated on the full test set (and the
validation split, where one is held out)."""

from __future__ import annotations

import logging
import sys
import time
from dataclasses import dataclass
from typing import Callable, Iterable, Protocol

import torch
from torch import Tensor
from tqdm import tqdm

from vae_sweep import names
from vae_sweep.core.data import Split, batch_indices, binarize
from vae_sweep.core.metrics import active_units
from vae_sweep.core.model import VAE, kl_per_dim, loss_terms
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


def train_epoch(
    model: VAE,
    optimizer: torch.optim.Optimizer,
    train: Split,
    batch_size: int,
    generator: torch.Generator,
    weight: float,
    dynamic_binarize: bool,
    progress: bool,
    epoch: int,
    grad_clip: float = 0.0,
) -> dict[str, float]:
    """One pass over the training images; returns each term averaged over all images of the epoch."""
    model.train()
    batches = batch_indices(len(train), batch_size, generator)
    step = stepper(optimizer)
    # Per-batch sums stay on the device; one transfer at the end avoids a sync per batch.
    per_batch = []
    for index in tqdm(batches, desc=f"epoch {epoch}", leave=False, disable=not progress):
        x = train.rows(index.to(train.images.device))
        if dynamic_binarize:
            x = binarize(x)
        logits, mu, logvar = model(x)
        terms = loss_terms(x, logits, mu, logvar, weight)
        optimizer.zero_grad(set_to_none=True)
        terms["loss"].backward()
        if grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
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
class Posterior:
    """What the test evaluation's encoder pass says about latent usage, kept from its batches at no extra pass."""

    means: Tensor  # (N, latent) posterior means
    kl_per_dim: Tensor  # (latent,) KL of each dimension averaged over the images, in nats

    @property
    def active_units(self) -> int:
        return active_units(self.means)


@torch.no_grad()
def evaluate_with_posterior(
    model: VAE, split: Split, batch_size: int, seed: int, weight: float = 1.0
) -> tuple[dict[str, float], Posterior]:
    """evaluate()'s terms, and the posterior means and per-dimension KL its encoder pass computed."""
    model.eval()
    device = split.images.device
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        totals = torch.zeros(len(TERMS), device=device)
        kl_totals = torch.zeros(model.latent, device=device)
        means = []
        for x in split.chunks(batch_size):
            logits, mu, logvar = model(x)
            terms = loss_terms(x, logits, mu, logvar, weight)
            totals += torch.stack([terms[name] for name in TERMS]) * len(x)
            kl_totals += kl_per_dim(mu, logvar).sum(0)
            means.append(mu)
    terms = dict(zip(TERMS, (totals / len(split)).tolist(), strict=True))
    return terms, Posterior(torch.cat(means), kl_totals / len(split))


def evaluate(model: VAE, split: Split, batch_size: int, seed: int, weight: float = 1.0) -> dict[str, float]:
    """Each term averaged over the whole split, with the posterior noise drawn from a fixed seed.

    The fixed seed makes the numbers comparable between epochs and runs, and leaves the training RNG untouched.
    """
    return evaluate_with_posterior(model, split, batch_size, seed, weight)[0]


def _summary_line(epoch: int, epochs: int, metrics: dict[str, float], splits: Iterable[str]) -> str:
    def terms(split: str) -> str:
        loss, recon, kl = (metrics[names.epoch_key(split, term)] for term in ("loss", "recon", "kl"))
        return f"{split} loss {loss:.2f} (recon {recon:.2f}, kl {kl:.2f})"

    parts = [terms(split) for split in ("train", *splits)]
    return f"epoch {epoch}/{epochs} | {' | '.join(parts)} | {metrics[names.EPOCH_TIME]:.1f} s"


def evaluate_splits(model: VAE, splits: dict[str, Split], training) -> tuple[dict[str, float], Posterior]:
    """Every split's terms and negative ELBO, by names.epoch_key, and the test split's posterior.

    The loss is the plain ELBO's (weight = beta) so that epochs stay comparable during warm-up; with beta != 1 it
    weighs the KL by beta, the negative ELBO in nats by 1.
    """
    metrics, posterior = {}, None
    for split, images in splits.items():
        terms, seen = evaluate_with_posterior(
            model, images, training.eval_batch_size, training.eval_seed, training.beta
        )
        metrics.update({names.epoch_key(split, term): value for term, value in terms.items()})
        metrics[names.epoch_key(split, names.ELBO)] = terms["recon"] + terms["kl"]
        if split == "test":
            posterior = seen
    return metrics, posterior


def fit(
    model: VAE,
    optimizer: torch.optim.Optimizer,
    train: Split,
    evaluated: Split | dict[str, Split],  # split name -> images evaluated every epoch ("test", "val"); a Split: test
    training,  # the `training` node of the config
    sink: EpochSink,
    dynamic_binarize: bool = False,
    generator: torch.Generator | None = None,
    history: list[dict[str, float]] | None = None,
    on_epoch_end: Callable[[list[dict[str, float]]], None] | None = None,
    lr_at: Callable[[int], float] | None = None,
    on_posterior: Callable[[int, Posterior], None] | None = None,
    should_stop: Callable[[int, dict[str, float]], bool] | None = None,
) -> list[dict[str, float]]:
    """Train up to training.epochs epochs; report and return each epoch's train terms and each evaluated split's.

    A resumed job passes the batch-order generator and the history restored from its checkpoint and carries on
    after the last epoch in that history. `on_epoch_end` (the checkpoint) runs before the epoch is reported, so
    a report never gets ahead of what a resumed job would know.
    `lr_at` (epoch -> learning rate) sets the rate of each epoch; `on_posterior` gets each epoch's test posterior
    (the per-dimension KL history) before the epoch is reported. `should_stop` (epoch, metrics) ends training after
    a reported epoch when it says so (a search's pruner).
    """
    # Adam's moments for weights that never get a gradient (MNIST's blank border pixels) decay into denormal floats,
    # which the CPU handles through slow microcode: ~0.75x the epoch time once flushed, with bitwise-equal histories.
    # This covers the calling thread and the threads it starts from now on; a job sets it before its intra-op threads
    # exist (vae_sweep.jobs.runtime.set_cpu_threads).
    torch.set_flush_denormal(True)
    generator = generator if generator is not None else torch.Generator().manual_seed(training.seed)
    splits = evaluated if isinstance(evaluated, dict) else {"test": evaluated}
    history = list(history or [])
    progress = training.progress and sys.stderr.isatty()
    for epoch in range(len(history) + 1, training.epochs + 1):
        start = time.perf_counter()
        weight = kl_weight(epoch, training.beta, training.kl_warmup_epochs)
        if lr_at is not None:
            for group in optimizer.param_groups:
                group["lr"] = lr_at(epoch)
        train_terms = train_epoch(
            model,
            optimizer,
            train,
            training.batch_size,
            generator,
            weight,
            dynamic_binarize,
            progress,
            epoch,
            training.grad_clip,
        )
        metrics = {names.epoch_key("train", term): value for term, value in train_terms.items()}
        evaluation, posterior = evaluate_splits(model, splits, training)
        metrics.update(evaluation)
        metrics[names.ACTIVE_UNITS] = posterior.active_units
        metrics[names.KL_WEIGHT] = weight
        metrics[names.LR] = optimizer.param_groups[0]["lr"]
        metrics[names.EPOCH_TIME] = time.perf_counter() - start
        history.append({"epoch": epoch, **metrics})
        if on_posterior is not None:
            on_posterior(epoch, posterior)
        if on_epoch_end is not None:
            on_epoch_end(history)
        sink.log_epoch(epoch, metrics)
        log.info(_summary_line(epoch, training.epochs, metrics, splits))
        if should_stop is not None and should_stop(epoch, metrics):
            log.info(f"Stopped after epoch {epoch} of {training.epochs}: pruned by the search.")
            break
    return history
