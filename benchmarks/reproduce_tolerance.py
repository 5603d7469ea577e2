"""`python -m benchmarks.reproduce_tolerance`: how far apart two trainings of one config land when only float
rounding differs, the figure behind reproduce's cross-machine tolerance (vae_sweep.analysis.reproduce).

Each setting trains twice on real MNIST in fresh processes, at 1 and at 2 torch threads (a change of summation order
of the kind another machine or BLAS brings), without tracking or the end-of-run evaluation. Per loss term it prints
the largest absolute and relative difference between the two histories over all epochs and at the last one, and
writes them as JSON (--out) for benchmarks/RESULTS.md's "Reproduce tolerance" section.

  python -m benchmarks.reproduce_tolerance --epochs 10 --out /tmp/tolerance.json
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from benchmarks.common import REPO, loadavg, run_process, subprocess_env, vae_sweep_command
from vae_sweep import names
from vae_sweep.analysis.reproduce import read_history

# The study's first point and one of its large latents.
SETTINGS = (("latent 2", ("model.latent=2",)), ("latent 100", ("model.latent=100",)))
THREADS = (1, 2)
KEYS = tuple(names.epoch_key(split, term) for term in names.TERMS for split in names.SPLITS)


def train(folder: Path, overrides: tuple[str, ...], threads: int, epochs: int, data_root: Path) -> list[dict]:
    run_dir = folder / f"threads{threads}"
    command = vae_sweep_command(
        *overrides, f"training.epochs={epochs}", f"training.threads={threads}", "tracking.enabled=false",
        "eval.enabled=false", f"hydra.run.dir={run_dir}", f"paths.checkpoint_dir={folder / 'checkpoints'}",
    )  # fmt: skip
    result = run_process(command, folder, subprocess_env(data_root), 3600, folder / f"threads{threads}.log")
    if result["returncode"] != 0:
        raise SystemExit("\n".join(result["log_tail"]))
    return read_history(run_dir / names.HISTORY)


def differences(first: list[dict], second: list[dict]) -> dict[str, dict[str, float]]:
    """Per loss term: the largest |difference| over the epochs and at the last one, absolute (nats) and relative."""
    table = {}
    for key in KEYS:
        gaps = [abs(a[key] - b[key]) for a, b in zip(first, second, strict=True)]
        relative = [gap / abs(a[key]) for gap, a in zip(gaps, first, strict=True)]
        table[key] = {"max_nats": max(gaps), "last_nats": gaps[-1], "max_relative": max(relative)}
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--data-root", type=Path, default=REPO / "data")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    results = {"epochs": args.epochs, "load_start": loadavg(), "settings": {}}
    for label, overrides in SETTINGS:
        with tempfile.TemporaryDirectory(prefix="vae-tolerance-") as scratch:
            histories = [train(Path(scratch), overrides, threads, args.epochs, args.data_root) for threads in THREADS]
        results["settings"][label] = differences(*histories)
        for key, row in results["settings"][label].items():
            print(f"{label:<12}{key:<18}max {row['max_nats']:.4f} nats (rel {row['max_relative']:.2e}), "
                  f"last epoch {row['last_nats']:.4f}")  # fmt: skip
    results["load_end"] = loadavg()
    args.out.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
