"""The Bernoulli likelihood: torch's binary_cross_entropy_with_logits, which vae_sweep used until issue 24, against
vae_sweep.core.models.likelihood.bernoulli_nll, alternated in one process at the run's thread count: the loss alone
(forward and backward), the elementwise functions each rests on, a pass of train_epoch for three model shapes and the
IWAE bound, the last two with the objectives' and metrics' bernoulli_nll swapped for torch's."""

from __future__ import annotations

import contextlib
import time
from typing import Callable

import torch
import torch.nn.functional as F

from benchmarks.common import (
    TEST_IMAGES,
    TRAIN_IMAGES,
    Context,
    Section,
    alternated,
    job_model,
    job_optimizer,
    matmul_rate,
    seconds_per_call,
    spread,
    summary,
)
from vae_sweep.core import metrics
from vae_sweep.core.models import objectives
from vae_sweep.core.models.likelihood import bernoulli_nll


def torch_bce(logits: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """What the objectives and the IWAE bound computed before: torch's loss, summed over each image's pixels."""
    return F.binary_cross_entropy_with_logits(logits, x.expand_as(logits), reduction="none").sum(-1)


TORCH, OURS = "torch's binary_cross_entropy_with_logits", "bernoulli_nll"
LIKELIHOODS: dict[str, Callable] = {TORCH: torch_bce, OURS: bernoulli_nll}
# label -> (model keys, batch, dynamic binarization, training images timed)
SHAPES = {
    "[16], latent 2, batch 128 (the start-up tiny job)": ({"hidden": [16], "latent": 2}, 128, False, 30_000),
    "[512, 256], latent 2, batch 128 (the default job)": ({"hidden": [512, 256], "latent": 2}, 128, False, 12_800),
    "Burda's 784-200-200-50 tanh, batch 20, dynamic": (
        {"hidden": [200, 200], "latent": 50, "activation": "tanh"},
        20,
        True,
        6_000,
    ),
}
IWAE_K, IWAE_IMAGES = 100, 500
ELEMENTWISE = {"log1p": torch.log1p, "log": torch.log, "exp": torch.exp, "sigmoid": torch.sigmoid}


@contextlib.contextmanager
def likelihood(function: Callable):
    """The objectives and the IWAE bound computing -log p(x|z) with `function` while inside."""
    before = objectives.bernoulli_nll, metrics.bernoulli_nll
    objectives.bernoulli_nll = metrics.bernoulli_nll = function
    try:
        yield
    finally:
        objectives.bernoulli_nll, metrics.bernoulli_nll = before


def loss_alone(repeats: int) -> dict:
    """ns per element of each loss, forward and backward on a (128, 784) batch, and of the functions beneath."""
    generator = torch.Generator().manual_seed(0)
    logits = (torch.randn(128, 784, generator=generator) * 4).requires_grad_()
    x = torch.bernoulli(torch.rand(128, 784, generator=generator), generator=generator)
    times: dict[str, list[float]] = {label: [] for label in LIKELIHOODS}
    for repeat in range(repeats):
        for label in alternated(list(LIKELIHOODS), repeat):

            def step(function=LIKELIHOODS[label]):
                function(logits, x).sum().backward()

            times[label].append(seconds_per_call(step, 200) / logits.numel() * 1e9)
    positive = logits.detach().abs()
    functions = {
        name: seconds_per_call(lambda f=f: f(positive), 200) / logits.numel() * 1e9 for name, f in ELEMENTWISE.items()
    }
    return {"ns_per_element": {label: summary(samples) for label, samples in times.items()}, "functions": functions}


def epoch_passes(ctx: Context) -> dict:
    """Seconds per 60,000-image pass of train_epoch for each shape and likelihood, alternated, each likelihood with
    its own model and optimizer from the same seed."""
    from vae_sweep.core.data import Split
    from vae_sweep.core.train import EpochSettings, train_epoch

    train, _ = ctx.data()
    results = {}
    for shape, (keys, batch, dynamic, images) in SHAPES.items():
        part = Split(train.images[:images], train.labels[:images])
        made = {label: _model_and_optimizer(keys) for label in LIKELIHOODS}
        settings = EpochSettings(batch_size=batch, dynamic_binarize=dynamic)
        warm_up = Split(part.images[: 10 * batch], part.labels[: 10 * batch])  # first calls allocate and dispatch
        for label in LIKELIHOODS:
            with likelihood(LIKELIHOODS[label]):
                train_epoch(*made[label], warm_up, settings, torch.Generator().manual_seed(0), 1.0, 0)
        times: dict[str, list[float]] = {label: [] for label in LIKELIHOODS}
        for repeat in range(ctx.args.repeats):
            for label in alternated(list(LIKELIHOODS), repeat):
                with likelihood(LIKELIHOODS[label]):
                    began = time.perf_counter()
                    generator = torch.Generator().manual_seed(repeat)
                    train_epoch(*made[label], part, settings, generator, 1.0, 0)
                    times[label].append((time.perf_counter() - began) * TRAIN_IMAGES / len(part))
        results[shape] = {label: summary(samples) for label, samples in times.items()}
        ctx.note_load()
    return results


def _model_and_optimizer(keys: dict) -> tuple:
    torch.manual_seed(0)
    model = job_model(**keys)
    return model, job_optimizer(model)


def iwae_seconds(ctx: Context) -> dict:
    """Seconds of the IWAE bound (k = 100, as eval.iwae_k) over the whole test set, from its first images, with the
    default job's model."""
    _, test = ctx.data()
    model = job_model()
    times: dict[str, list[float]] = {label: [] for label in LIKELIHOODS}
    for repeat in range(ctx.args.repeats):
        for label in alternated(list(LIKELIHOODS), repeat):
            with likelihood(LIKELIHOODS[label]):
                began = time.perf_counter()
                metrics.iwae_bound(model, test.images[:IWAE_IMAGES], IWAE_K)
                times[label].append((time.perf_counter() - began) * TEST_IMAGES / IWAE_IMAGES)
    return {label: summary(samples) for label, samples in times.items()}


def measure(ctx: Context) -> dict:
    torch.set_flush_denormal(True)  # as a job does
    torch.set_num_threads(ctx.args.threads)
    return {
        "threads": ctx.args.threads,
        "matmul_gflops": matmul_rate() / 1e9,
        "loss": loss_alone(ctx.args.repeats),
        "epoch_pass_s": epoch_passes(ctx),
        "iwae_s": iwae_seconds(ctx),
    }


def _row(label: str, stats: dict, unit: str) -> str:
    before, after = stats[TORCH]["median"], stats[OURS]["median"]
    return (
        f"| {label} | {before:.2f} {unit} ({spread(stats[TORCH])}) | {after:.2f} {unit} ({spread(stats[OURS])}) | "
        f"{after / before:.2f} |"
    )


def render(results: dict, _: dict) -> list[str]:
    functions = ", ".join(f"{name} {ns:.2f}" for name, ns in results["loss"]["functions"].items())
    out = [
        "## The Bernoulli likelihood: torch's loss against bernoulli_nll",
        "",
        f"{results['threads']} thread(s), single-thread matmul rate {results['matmul_gflops']:.0f} GFLOP/s; medians "
        "(spread) of the two alternated. Training passes are scaled to 60,000 images from the first few thousand, "
        f"the IWAE bound (k = {IWAE_K}, the default job's model) to the 10,000 test images from {IWAE_IMAGES}.",
        "",
        f"| what | {TORCH} | {OURS} | ratio |",
        "|---|---|---|---|",
        _row("the loss alone, forward + backward, (128, 784)", results["loss"]["ns_per_element"], "ns/element"),
    ]
    out += [_row(f"a pass of {shape}", stats, "s") for shape, stats in results["epoch_pass_s"].items()]
    out += [
        _row(f"IWAE bound, k = {IWAE_K}, 10,000 images", results["iwae_s"], "s"),
        "",
        f"Beneath them, ns per element on a (128, 784) tensor: {functions}. torch's loss computes log_sigmoid, "
        "which rests on log1p; bernoulli_nll takes log(1 + exp(-|l|)).",
        "",
    ]
    return out


SECTION = Section("likelihood", measure, render, default=False)
