"""The full sweep, measured (~20 min, not run by default): the real `python -m vae_sweep -m experiment=seed`, every
epoch, figure and end-of-run metric, first with an empty classifier cache, as a machine's first sweep runs it, then
again with the classifier that run cached."""

from __future__ import annotations

import os
import statistics
from pathlib import Path

from benchmarks.common import (
    TEST_IMAGES,
    TRAIN_IMAGES,
    Context,
    Section,
    fmt_s,
    job_model,
    matmul_rate,
    run_process,
    store_runs,
    subprocess_env,
    vae_sweep_command,
)
from benchmarks.sections.epoch import linear_flops
from benchmarks.sections.sweep import TARGET, TARGET_S, seed_study
from vae_sweep import names


def artifacts(client, run) -> dict:
    """What a finished job leaves besides its epochs: its figures and its end-of-run quality metrics."""
    return {
        "figures": sorted(a.path for a in client.list_artifacts(run.info.run_id, names.ARTIFACT_FIGURES)),
        "quality_metrics": sorted(k for k in run.data.metrics if k.startswith(names.QUALITY)),
    }


def study_flops() -> float:
    """The seed study's matrix-product FLOPs: per epoch, forward and backward over the training images and a forward
    pass over the test images (the efficiency section's count), summed over every job's epochs."""
    total = 0.0
    for latent, epochs in seed_study():
        forward = linear_flops(job_model(latent))
        total += epochs * (3 * forward * TRAIN_IMAGES + forward * TEST_IMAGES)
    return total


def measure(ctx: Context) -> dict:
    rate_before = matmul_rate()
    cold = ctx.tmp / "full-sweep"
    result = one_full_sweep(ctx, cold, cold / "classifiers", "cold")
    result["warm"] = one_full_sweep(ctx, ctx.tmp / "full-sweep-warm", cold / "classifiers", "warm")
    rates = [rate_before / 1e9, matmul_rate() / 1e9]
    cores = len(os.sched_getaffinity(0))
    floor_s = study_flops() / (cores * max(rates) * 1e9)
    print(f"  compute floor at {max(rates):.0f} GFLOP/s a core: {floor_s / 60:.1f} min", flush=True)
    return {"overrides": ctx.args.full_sweep_args, "matmul_gflops": rates, "cores": cores, "floor_s": floor_s, **result}


def one_full_sweep(ctx: Context, folder: Path, classifiers: Path, label: str) -> dict:
    folder.mkdir()
    command = vae_sweep_command(
        "experiment=seed", f"eval.classifier_dir={classifiers}", *ctx.args.full_sweep_args, multirun=True
    )
    env = subprocess_env(ctx.args.data_root)
    result = run_process(command, folder, env, ctx.args.full_sweep_timeout, folder / "sweep.log")
    result["runs"] = runs = store_runs(folder / "mlflow.db", artifacts)
    ctx.note_load()
    result["complete"] = (
        result["returncode"] == 0
        and len(runs) == len(seed_study())
        and all(r["status"] == "FINISHED" and r["figures"] and names.Q_FID in r["quality_metrics"] for r in runs)
    )
    print(f"  full sweep, {label}: {result['wall_s'] / 60:.1f} min (exit {result['returncode']})", flush=True)
    return result


def _command(full: dict) -> str:
    return " ".join(["experiment=seed", *full["overrides"]])


def targets(full: dict) -> list[tuple[str, bool | None]]:
    floor = f"; the matrix products alone: {full['floor_s'] / 60:.1f} min" if "floor_s" in full else ""
    rows = []
    for label, measured in (("empty classifier cache", full), ("classifier cached", full.get("warm"))):
        if measured and "wall_s" in measured:
            complete = measured["complete"]
            rows.append(
                (
                    f"{measured['wall_s'] / 60:.1f} min (measured, {label}"
                    f"{'' if complete else ', NOT complete'}: {_command(full)}{floor})",
                    complete and measured["wall_s"] <= TARGET_S,
                )
            )
    return rows


def render(full: dict, results: dict) -> list[str]:
    warm = full.get("warm") or {}
    out = [
        "## 5b. The full sweep, measured",
        "",
        f"`python -m vae_sweep -m {_command(full)}`, each time from a fresh working "
        "directory (its own SQLite store): first with an **empty classifier cache**, as a machine's first sweep, "
        f"where the first job to finish trains the FID/IS classifier: **{full['wall_s'] / 60:.1f} min** wall, "
        f"exit {full['returncode']}{'' if full['complete'] else ' — NOT complete (see the table)'}"
        + (
            f"; then with the classifier that run cached, as every later sweep: **{warm['wall_s'] / 60:.1f} min**"
            f", exit {warm['returncode']}{'' if warm['complete'] else ' — NOT complete'}."
            if "wall_s" in warm
            else "."
        ),
        "",
        *_floor(full),
        "| sweep | job | latent | status | epochs | median epoch | span | after the last epoch | figures "
        "| quality metrics |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for label, measured in (("empty cache", full), ("cached", warm)):
        for r in measured.get("runs", []):
            epochs = r["epoch_times_s"]
            out.append(
                f"| {label} | {r['job']} | {r['latent']} | {r['status']} | {len(epochs)} "
                f"| {fmt_s(statistics.median(epochs)) if epochs else 'n/a'} | {fmt_s(r['span_s'])} "
                f"| {fmt_s(r['after_training_s'])} | {len(r.get('figures', []))} "
                f"| {len(r.get('quality_metrics', []))} |"
            )
    out.append("")
    return out


def _floor(full: dict) -> list[str]:
    if "floor_s" not in full:
        return []
    before, after = full["matmul_gflops"]
    # The count the floor was measured with (floor x cores x rate), not a recount of today's conf/.
    tflop = full["floor_s"] * full["cores"] * max(before, after) / 1e3
    return [
        f"Single-thread matmul rate {before:.0f} GFLOP/s before, {after:.0f} after. The study's matrix products "
        f"alone ({tflop:.0f} TFLOP: forward and backward over the training images, forward over the "
        f"test images, every epoch of the three jobs) take **{full['floor_s'] / 60:.1f} min** of {full['cores']} "
        "cores at the faster rate, with nothing else running and no core idle: the floor under any schedule.",
        "",
    ]


SECTION = Section("full_sweep", measure, render, default=False, target=TARGET, targets=targets)
