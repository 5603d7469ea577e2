"""Whole-job tracking overhead (not run by default): the wall time of a 2-epoch job with tracking.enabled=true vs
false, alternated."""

from __future__ import annotations

import statistics

from benchmarks.common import (
    Context,
    Section,
    alternated,
    fmt_s,
    run_process,
    spread,
    subprocess_env,
    summary,
    vae_sweep_command,
)


def measure(ctx: Context) -> dict:
    env = subprocess_env(ctx.args.data_root)
    threads = f"training.threads={ctx.args.threads}"
    walls: dict[str, list[float]] = {"true": [], "false": []}
    pairs = 1 if ctx.args.quick else 2
    for repeat in range(pairs):
        for enabled in alternated(["true", "false"], repeat):
            folder = ctx.tmp / f"job-{enabled}-{repeat}"
            folder.mkdir()
            command = vae_sweep_command(
                "training.epochs=2", threads, f"tracking.enabled={enabled}", "eval.enabled=false"
            )
            result = run_process(command, folder, env, ctx.args.job_timeout, folder / "job.log")
            walls[enabled].append(result["wall_s"])
            ctx.note_load()
    return {
        "tracking_on_s": summary(walls["true"]),
        "tracking_off_s": summary(walls["false"]),
        "ratio": statistics.median(walls["true"]) / statistics.median(walls["false"]),
    }


def render(jobs: dict, results: dict) -> list[str]:
    return [
        "## Whole-job tracking overhead (optional)",
        "",
        "`python -m vae_sweep training.epochs=2 eval.enabled=false tracking.enabled=true|false`, alternated:",
        "",
        f"- tracking on: {fmt_s(jobs['tracking_on_s']['median'])} {spread(jobs['tracking_on_s'])}; off: "
        f"{fmt_s(jobs['tracking_off_s']['median'])} {spread(jobs['tracking_off_s'])}; ratio {jobs['ratio']:.3f}",
        "",
    ]


SECTION = Section("jobs", measure, render, default=False)
