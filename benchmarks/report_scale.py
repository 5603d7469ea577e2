"""How long `python -m vae_sweep.report` takes on a sweep of 500 runs; the target is under 30 s.

.venv/bin/python benchmarks/report_scale.py [--keep DIR]

Seeds a temporary SQLite store with one sweep of latent x epochs x seeds = 10 x 5 x 10 finished runs, each with the
params of the full config, a 10-epoch history of every per-epoch metric, final and quality metrics, and figures of
the real ones' sizes; then times the bare report command on it, logging to MLflow included. Seeding is not timed.
Every history has 10 epochs whatever the run's budget: the report's cost grows with runs and metrics, not epochs.
"""

from __future__ import annotations

import argparse
import itertools
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import matplotlib
import numpy as np
from mlflow.entities import Metric, Param
from mlflow.tracking import MlflowClient
from omegaconf import OmegaConf

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from vae_sweep import names  # noqa: E402
from vae_sweep.config import Config, flatten  # noqa: E402
from vae_sweep.tracking.mlflow_tracker import BATCH_LIMIT  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

LATENTS = (2, 5, 10, 16, 20, 32, 50, 64, 100, 200)
EPOCHS = (10, 20, 50, 100, 200)
SEEDS = range(10)
HISTORY_EPOCHS = 10
TARGET_S = 30.0
# name -> figure size in inches, as vae_sweep.evaluation.figures draws them.
FIGURES = {names.FIG_RECONSTRUCTIONS: (11, 3), names.FIG_SAMPLES: (7, 7.5), names.FIG_LATENT_SCATTER: (8, 6.5)}
FIGURES_2D = {**FIGURES, names.FIG_MANIFOLD: (9, 9)}


def draw_figures(folder: Path, sizes: dict[str, tuple[float, float]]) -> Path:
    """Grey-level grids of the real figures' sizes, so that downloading and embedding them costs what it would."""
    folder.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(0).random((56, 56))
    for name, size in sizes.items():
        fig, ax = plt.subplots(figsize=size)
        ax.imshow(pixels, cmap="gray", interpolation="nearest")
        ax.set_title(name)
        fig.savefig(folder / name, dpi=100, bbox_inches="tight")
        plt.close(fig)
    return folder


def config_params(latent: int, epochs: int, seed: int, root: Path, job: int) -> list[Param]:
    """The flattened default config, as a job logs it, at this sweep point."""
    config = OmegaConf.to_container(OmegaConf.structured(Config), enum_to_str=True)
    params = flatten(config)
    params.update({"model.latent": latent, "training.epochs": epochs, "training.seed": seed})
    params.update({f"paths.{key}": str(root / key) for key in ("root_dir", "data_dir", "checkpoint_dir")})
    params.update({"paths.output_dir": str(root / "multirun" / str(job)), "data.root": str(root / "data")})
    params.update({"eval.classifier_dir": str(root / "classifiers"), "tracking.uri": "sqlite:///mlflow.db"})
    return [Param(key, str(value)) for key, value in params.items()]


def metrics_of(latent: int, epochs: int, seed: int) -> list[Metric]:
    """Loss falling with latent size and budget towards a floor, a little noise per seed."""
    noise = np.random.default_rng(seed * 1000 + latent).normal(0, 0.5)
    final_loss = 100 + 40 / math.sqrt(latent) + 200 / epochs + noise
    kl = 5 * math.log1p(latent)
    metrics = []
    for step in range(1, HISTORY_EPOCHS + 1):
        loss = final_loss + 3 * (HISTORY_EPOCHS - step)
        values = {
            names.epoch_key("train", "recon"): loss - 2 - kl,
            names.epoch_key("train", "kl"): kl,
            names.TRAIN_LOSS: loss - 2,
            names.TEST_RECON: loss - kl,
            names.TEST_KL: kl,
            names.TEST_LOSS: loss,
            names.KL_WEIGHT: 1.0,
            names.EPOCH_TIME: 1.5,
        }
        metrics += [Metric(key, value, 0, step) for key, value in values.items()]
    # The last epoch's values are the run's latest ones: the report reads those.
    final = {names.Q_IWAE_GREY: final_loss - 3, names.Q_IWAE_K: 100, names.Q_GAP: 2.0}
    final.update({names.Q_ACTIVE_UNITS: min(latent, 14), names.Q_FID: 20 / math.sqrt(latent) + 5})
    final.update({names.Q_IS: 9 - 3 / math.sqrt(latent), names.Q_FID_REFERENCE: 1.2})
    final.update({names.Q_IS_REFERENCE: 9.7, names.TRAIN_TIME: 60.0 * epochs})
    return metrics + [Metric(key, value, 0, HISTORY_EPOCHS) for key, value in final.items()]


def seed_store(root: Path) -> str:
    """The store's URI, holding one finished sweep of len(LATENTS) x len(EPOCHS) x len(SEEDS) runs."""
    uri = f"sqlite:///{root / 'mlflow.db'}"
    client = MlflowClient(uri)
    experiment_id = client.create_experiment("vae_sweep", artifact_location=(root / "mlruns").as_uri())
    figures = {False: draw_figures(root / "figures", FIGURES), True: draw_figures(root / "figures-2d", FIGURES_2D)}
    sweep = str(root / "multirun" / "2026-01-01" / "00-00-00")
    for job, (latent, epochs, seed) in enumerate(itertools.product(LATENTS, EPOCHS, SEEDS)):
        tags = {names.TAG_SWEEP_ID: sweep, names.TAG_SWEEP_JOB: str(job)}
        name = f"latent={latent} epochs={epochs} seed={seed}"
        run_id = client.create_run(experiment_id, run_name=name, tags=tags).info.run_id
        params = config_params(latent, epochs, seed, root, job)
        for start in range(0, len(params), BATCH_LIMIT):
            client.log_batch(run_id, params=params[start : start + BATCH_LIMIT])
        client.log_batch(run_id, metrics=metrics_of(latent, epochs, seed))
        client.log_artifacts(run_id, str(figures[latent == 2]), names.ARTIFACT_FIGURES)
        client.set_terminated(run_id)
    return uri


def time_report(uri: str, workdir: Path) -> float:
    """Seconds the bare report command takes, interpreter start included, as a user would wait for it."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "MLFLOW_TRACKING_URI": uri}
    start = time.perf_counter()
    result = subprocess.run(
        [sys.executable, "-m", "vae_sweep.report"], cwd=workdir, env=env, capture_output=True, text=True
    )
    elapsed = time.perf_counter() - start
    if result.returncode != 0:
        sys.exit(f"the report failed:\n{result.stderr}")
    print(result.stdout.splitlines()[-1])
    return elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--keep", type=Path, help="seed the store here and keep it (default: a temporary folder)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        root = args.keep or Path(scratch)
        root.mkdir(parents=True, exist_ok=True)
        runs = len(LATENTS) * len(EPOCHS) * len(SEEDS)
        start = time.perf_counter()
        uri = seed_store(root)
        print(f"seeded {runs} runs in {time.perf_counter() - start:.1f} s")
        elapsed = time_report(uri, root)
    print(f"report on {runs} runs: {elapsed:.1f} s (target < {TARGET_S:.0f} s)")
    return 0 if elapsed < TARGET_S else 1


if __name__ == "__main__":
    sys.exit(main())
