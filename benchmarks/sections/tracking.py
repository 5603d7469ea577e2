"""Tracking overhead: fit() epochs with a NullTracker vs an MlflowTracker on a temporary SQLite store, alternated,
and the latency of one log_epoch call."""

from __future__ import annotations

import dataclasses
import statistics
import time

import torch

from benchmarks.common import (
    MODELS,
    TRAIN_IMAGES,
    Context,
    Section,
    alternated,
    fit_epochs,
    fmt_s,
    job_model,
    job_optimizer,
    job_training_node,
    spread,
    summary,
)
from vae_sweep import names

TARGET = "tracking overhead <= 2% of an epoch"


def measure(ctx: Context) -> dict:
    from vae_sweep.config import TrainingConfig
    from vae_sweep.core.models.mlp import MLPSettings
    from vae_sweep.tracking.mlflow_tracker import MlflowTracker
    from vae_sweep.tracking.runs import NullTracker
    from vae_sweep.tracking.store import connect

    train, test = ctx.data()
    folder = ctx.tmp / "tracking"
    folder.mkdir()
    start = time.perf_counter()
    client, experiment = connect(f"sqlite:///{folder}/mlflow.db", "benchmark", str(folder / "mlruns"))
    connect_s = time.perf_counter() - start
    params = {f"training.{k}": v for k, v in dataclasses.asdict(TrainingConfig()).items()}
    params.update({f"model.{k}": v for k, v in dataclasses.asdict(MLPSettings()).items()})
    start = time.perf_counter()
    tracker = MlflowTracker.start(client, experiment, "benchmark", params, {"purpose": "benchmark"})
    start_s = time.perf_counter() - start
    log_epoch_s: list[float] = []

    class TimedSink:
        def log_epoch(self, epoch: int, metrics: dict[str, float]) -> None:
            begin = time.perf_counter()
            tracker.log_epoch(epoch, metrics)
            log_epoch_s.append(time.perf_counter() - begin)

    label, hidden, latent = MODELS[0]  # the default job's model
    variants = {}
    for name, sink in (("null", NullTracker()), ("mlflow", TimedSink())):
        torch.manual_seed(0)
        model = job_model(latent, hidden)
        variants[name] = {
            "model": model,
            "optimizer": job_optimizer(model),
            "generator": torch.Generator().manual_seed(0),
            "history": [],
            "sink": sink,
            "times": [],
        }
    training = job_training_node()
    for repeat in range(ctx.args.repeats):
        for name in alternated(["null", "mlflow"], repeat):
            variant = variants[name]
            training.epochs = len(variant["history"]) + 1
            begin = time.perf_counter()
            variant["history"] = fit_epochs(
                variant["model"], variant["optimizer"], train, test, training, variant["sink"], variant["generator"],
                variant["history"],
            )  # fmt: skip
            variant["times"].append(time.perf_counter() - begin)
        ctx.note_load()
    # More log_epoch calls alone, for a steadier latency than one per epoch gives.
    last = variants["mlflow"]["history"][-1]
    metrics = {key: last[key] for key in names.EPOCH_METRICS}
    extra = []
    for step in range(20):
        begin = time.perf_counter()
        tracker.log_epoch(1000 + step, metrics)
        extra.append(time.perf_counter() - begin)
    start = time.perf_counter()
    tracker.end("FINISHED")
    end_s = time.perf_counter() - start
    scale = TRAIN_IMAGES / ctx.n_train  # quick runs: epochs on a subset; relate the latency to a full epoch
    null, mlflow = variants["null"]["times"], variants["mlflow"]["times"]
    null_epoch = statistics.median(null) * scale
    return {
        "model": label,
        "null_epoch_s": summary([t * scale for t in null]),
        "mlflow_epoch_s": summary([t * scale for t in mlflow]),
        "ratio": statistics.median(mlflow) / statistics.median(null),
        "paired_ratio": summary([m / n for m, n in zip(mlflow, null, strict=True)]),
        "log_epoch_s": summary(log_epoch_s + extra),
        "log_epoch_fraction_of_epoch": statistics.median(log_epoch_s + extra) / null_epoch,
        "once_per_job_s": {"connect": connect_s, "start": start_s, "end": end_s},
    }


def targets(tracking: dict) -> list[tuple[str, bool | None]]:
    overhead = tracking["ratio"] - 1
    estimate = tracking["log_epoch_fraction_of_epoch"]
    return [
        (
            f"{100 * overhead:+.1f}% (paired epochs); {100 * estimate:.2f}% (log_epoch latency / epoch)",
            estimate <= 0.02 and overhead <= 0.02,
        )
    ]


def render(tracking: dict, results: dict) -> list[str]:
    once = tracking["once_per_job_s"]
    return [
        "## 4. Tracking overhead",
        "",
        f"`fit()` epochs of the {tracking['model']} model with a `NullTracker` and with an `MlflowTracker` on a "
        "temporary SQLite store (`connect` + `MlflowTracker.start`; `fit` calls `log_epoch` once per epoch), "
        "alternated epoch by epoch.",
        "",
        "| | median |",
        "|---|---|",
        f"| epoch, NullTracker | {fmt_s(tracking['null_epoch_s']['median'])} {spread(tracking['null_epoch_s'])} |",
        f"| epoch, MlflowTracker | {fmt_s(tracking['mlflow_epoch_s']['median'])} "
        f"{spread(tracking['mlflow_epoch_s'])} |",
        f"| ratio of medians / per pair | {tracking['ratio']:.3f} / {tracking['paired_ratio']['median']:.3f} "
        f"({tracking['paired_ratio']['min']:.3f}–{tracking['paired_ratio']['max']:.3f}) |",
        f"| one `log_epoch` call (SQLite) | {1000 * tracking['log_epoch_s']['median']:.1f} ms "
        f"({tracking['log_epoch_s']['n']} calls) = {100 * tracking['log_epoch_fraction_of_epoch']:.2f}% of an "
        "epoch |",
        f"| once per job: connect / start run / end run | {once['connect']:.2f} / {once['start']:.2f} / "
        f"{once['end']:.2f} s |",
        "",
        "The paired-epoch ratio carries the machine's noise (see ±); the `log_epoch` latency is the direct "
        "measure of what tracking adds to each epoch.",
        "",
    ]


SECTION = Section("tracking", measure, render, target=TARGET, targets=targets)
