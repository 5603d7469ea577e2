"""Start-up: a tiny job from command to exit against `python -c "import torch"`, alternated, and what `--cfg job`
(compose and print the config, no training) costs beside them: the floor every command of vae_sweep pays."""

from __future__ import annotations

import statistics
import sys
from pathlib import Path

from benchmarks.common import (
    Context,
    Section,
    alternated,
    matmul_rate,
    run_process,
    spread,
    subprocess_env,
    summary,
    vae_sweep_command,
)
from vae_sweep import names
from vae_sweep.analysis.reproduce import read_history

TARGET = 'a tiny job from command to exit <= 2.5x `python -c "import torch"` (medians, alternated)'
LIMIT = 2.5
TORCH = 'python -c "import torch"'
CONFIG = "python -m vae_sweep --cfg job"
TINY = "tiny job"
TINY_OVERRIDES = ("training.epochs=1", "model.hidden=[16]", "eval.enabled=false", "tracking.enabled=false")


def commands(env: dict, baseline: Path | None) -> dict[str, tuple[list[str], dict]]:
    """label -> (command, environment); with a baseline checkout, its tiny job too (its code first on the path)."""
    runs = {
        TORCH: ([sys.executable, "-c", "import torch"], env),
        CONFIG: ([sys.executable, "-m", "vae_sweep", "--cfg", "job"], env),
        TINY: (vae_sweep_command(*TINY_OVERRIDES), env),
    }
    if baseline is not None:
        runs[f"{TINY} ({baseline.name})"] = (vae_sweep_command(*TINY_OVERRIDES), dict(env, PYTHONPATH=str(baseline)))
    return runs


def epoch_seconds(folder: Path) -> list[float]:
    """The epoch times a job wrote to its history.csv under `folder` (none for a command that trains nothing)."""
    return [row[names.EPOCH_TIME] for history in folder.rglob(names.HISTORY) for row in read_history(history)]


def measure(ctx: Context) -> dict:
    runs = commands(subprocess_env(ctx.args.data_root), ctx.args.startup_baseline)
    walls: dict[str, list[float]] = {label: [] for label in runs}
    exits: dict[str, set[int]] = {label: set() for label in runs}
    epochs: dict[str, list[float]] = {label: [] for label in runs}
    rate_before = matmul_rate()
    for repeat in range(ctx.args.repeats):
        for index, label in alternated(list(enumerate(runs)), repeat):
            folder = ctx.tmp / f"startup-{repeat}-{index}"
            folder.mkdir()
            command, env = runs[label]
            result = run_process(command, folder, env, ctx.args.job_timeout, folder / "run.log")
            walls[label].append(result["wall_s"])
            exits[label].add(result["returncode"])
            epochs[label].extend(epoch_seconds(folder))
            ctx.note_load()
        print(f"  start-up repeat {repeat + 1}: " + ", ".join(f"{k} {v[-1]:.2f} s" for k, v in walls.items()))
    torch_median = statistics.median(walls[TORCH])
    return {
        "wall_s": {label: summary(samples) for label, samples in walls.items()},
        "exit_codes": {label: sorted(codes) for label, codes in exits.items()},
        "epoch_s": {label: statistics.median(samples) for label, samples in epochs.items() if samples},
        "ratio_to_torch": {label: statistics.median(samples) / torch_median for label, samples in walls.items()},
        "matmul_gflops": [rate_before / 1e9, matmul_rate() / 1e9],
        "overrides": list(TINY_OVERRIDES),
    }


def targets(startup: dict) -> list[tuple[str, bool | None]]:
    ratio = startup["ratio_to_torch"][TINY]
    return [(f"{ratio:.2f}x ({startup['wall_s'][TINY]['median']:.2f} s)", ratio <= LIMIT)]


def render(startup: dict, results: dict) -> list[str]:
    before, after = startup["matmul_gflops"]
    times = len(startup["wall_s"][TORCH]["samples"])
    out = [
        "## Start-up: a tiny job against importing torch",
        "",
        f"Each command run as a subprocess from its own empty folder, the three alternated, {times} times; the tiny "
        f"job is `python -m vae_sweep {' '.join(startup['overrides'])}` (one epoch of a 16-unit model on MNIST, no "
        f"evaluation, no tracking). Single-thread matmul rate {before:.0f} GFLOP/s before, {after:.0f} after.",
        "",
        "| command | median wall | spread | × `import torch` | of it, the epoch | exit |",
        "|---|---|---|---|---|---|",
    ]
    for label, stats in startup["wall_s"].items():
        codes = ",".join(str(code) for code in startup["exit_codes"][label])
        ratio = startup["ratio_to_torch"][label]
        epoch = startup.get("epoch_s", {}).get(label)
        epoch_text = "" if epoch is None else f"{epoch:.2f} s"
        out.append(f"| `{label}` | {stats['median']:.2f} s | {spread(stats)} | {ratio:.2f} | {epoch_text} | {codes} |")
    out.append("")
    return out


SECTION = Section("startup", measure, render, target=TARGET, targets=targets)
