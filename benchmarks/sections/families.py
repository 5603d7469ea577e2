"""Model families: seconds per training epoch of each family, objective and prior beside the default MLP-ELBO's,
alternated epoch by epoch in one process (batch 128, dynamic binarization, the job's optimizer)."""

from __future__ import annotations

import time

import torch

from benchmarks.common import TRAIN_IMAGES, Context, Section, alternated, job_optimizer, spread, summary

BASELINE = "mlp elbo"
# label -> `model` keys: the defaults of each family, and the objectives and prior on the default MLP.
VARIANTS = {
    BASELINE: {"name": "mlp", "latent": 2},
    "mlp iwae k=5": {"name": "mlp", "latent": 2, "objective": "iwae", "samples": 5},
    "mlp elbo, vamp K=500": {"name": "mlp", "latent": 2, "prior": "vamp"},
    "conv elbo": {"name": "conv", "latent": 2},
    "conv iwae k=5": {"name": "conv", "latent": 2, "objective": "iwae", "samples": 5},
}


def measure(ctx: Context) -> dict:
    from vae_sweep.core.data import SHAPES
    from vae_sweep.core.models import build_model
    from vae_sweep.core.train import EpochSettings, train_epoch

    train, _ = ctx.data()
    torch.set_flush_denormal(True)  # as fit() does
    settings = EpochSettings(batch_size=128, dynamic_binarize=True)
    models = {}
    for label, keys in VARIANTS.items():
        torch.manual_seed(0)
        model = build_model(keys, SHAPES["mnist"])
        models[label] = (model, job_optimizer(model))
    times: dict[str, list[float]] = {label: [] for label in VARIANTS}
    for repeat in range(ctx.args.repeats):
        for label in alternated(list(VARIANTS), repeat):
            model, optimizer = models[label]
            began = time.perf_counter()
            train_epoch(model, optimizer, train, settings, torch.Generator().manual_seed(repeat), 1.0, repeat)
            times[label].append((time.perf_counter() - began) * TRAIN_IMAGES / len(train))
        ctx.note_load()
    return {"epoch_s": {label: summary(samples) for label, samples in times.items()}, "images": len(train)}


def render(families: dict, results: dict) -> list[str]:
    base = families["epoch_s"][BASELINE]["median"]
    out = [
        "## Model families: seconds per training epoch",
        "",
        f"One training epoch (train_epoch only, no evaluation) of each variant's defaults, scaled to {TRAIN_IMAGES:,} "
        f"images from {families['images']:,}, alternated in one process; median (spread).",
        "",
        "| model | s / epoch | × mlp elbo |",
        "|---|---|---|",
    ]
    for label, stats in families["epoch_s"].items():
        out.append(f"| {label} | {stats['median']:.1f} ({spread(stats)}) | {stats['median'] / base:.2f} |")
    return out + [""]


SECTION = Section("families", measure, render, default=False)
