"""What the benchmark's sections share: the run's context, statistics, machine facts, the dense matmul rate, the
job's own training settings, and launching `python -m vae_sweep` as a measured subprocess."""

from __future__ import annotations

import dataclasses
import datetime
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Sequence, TypeVar

import torch
from torch import nn

from vae_sweep import names

REPO = Path(__file__).resolve().parents[1]
TRAIN_IMAGES, TEST_IMAGES = 60_000, 10_000
MATMUL_SIZE = 2048

# (label, hidden sizes, latent): the default model at the study's latents, and pytorch/examples' VAE shape.
MODELS = (
    ("default [512,256], latent 2", (512, 256), 2),
    ("default [512,256], latent 100", (512, 256), 100),
    ("default [512,256], latent 200", (512, 256), 200),
    ("pytorch/examples [400], latent 20", (400,), 20),
)

Row = TypeVar("Row")


class Context:
    """What one benchmark run hands each section: the options, the sections measured so far, a scratch folder."""

    def __init__(self, args, sections: dict):
        self.args = args
        # Sections read earlier ones: efficiency relates epoch times to its matmul rate, sweep adds memory's eval cost.
        self.sections = sections
        self.loads: list[float] = []
        self._data = None
        self.tmp = Path(tempfile.mkdtemp(prefix="vae-bench-"))
        # Quick runs train and evaluate on the first images only and scale the times to a full epoch.
        self.n_train = 10_000 if args.quick else TRAIN_IMAGES
        self.n_test = 2_000 if args.quick else TEST_IMAGES

    def data(self):
        """MNIST as vae_sweep loads it (in-memory tensors), cut to the run's image counts."""
        if self._data is None:
            from vae_sweep.core.data import Split, load

            train, test = load("mnist", self.args.data_root, download=False)
            train = Split(train.images[: self.n_train], train.labels[: self.n_train])
            test = Split(test.images[: self.n_test], test.labels[: self.n_test])
            self._data = train, test
        return self._data

    def note_load(self) -> None:
        self.loads.append(loadavg())


@dataclasses.dataclass(frozen=True)
class Section:
    """One section of the benchmark: what it measures, and how RESULTS.md shows what it measured."""

    name: str
    measure: Callable[[Context], dict]
    render: Callable[[dict, dict], list[str]]  # (its results, the whole results.json) -> Markdown lines
    default: bool = True  # run when --only does not name the sections
    target: str | None = None
    targets: Callable[[dict], list[tuple[str, bool | None]]] | None = None  # its results -> (measured, met) rows


# ---- statistics ---------------------------------------------------------------------------------------------------


def summary(samples: list[float]) -> dict:
    """Median, range and relative spread of repeated measurements (all samples kept for results.json)."""
    median = statistics.median(samples)
    return {
        "median": median,
        "min": min(samples),
        "max": max(samples),
        "spread": (max(samples) - min(samples)) / median if median else float("nan"),
        "n": len(samples),
        "samples": samples,
    }


def alternated(variants: Sequence[Row], repeat: int) -> Sequence[Row]:
    """The compared variants in ABAB… order, flipped each repetition, so that neither always runs first."""
    return variants if repeat % 2 == 0 else variants[::-1]


def fmt_s(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f} s"


def spread(stats: dict) -> str:
    return f"±{100 * stats['spread'] / 2:.0f}%"


# ---- the machine --------------------------------------------------------------------------------------------------


def loadavg() -> float:
    """The 1-minute load average: how busy the (shared) machine was."""
    try:
        return float(Path("/proc/loadavg").read_text().split()[0])
    except OSError:
        return float("nan")


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def git_state() -> str:
    """The commit and whether the tree had local changes (read-only git calls)."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain"], cwd=REPO, capture_output=True, text=True).stdout
        return commit + (" (with uncommitted changes)" if dirty.strip() else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def now_iso() -> str:
    return datetime.datetime.now().astimezone().isoformat(timespec="seconds")


def machine_facts(load_start: float, loads: list[float], began: float) -> dict:
    """The machine, software and load a run measured on, for the table at the top of RESULTS.md."""
    import torchvision

    return {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "usable_cores": len(os.sched_getaffinity(0)),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "python": platform.python_version(),
        "threads": torch.get_num_threads(),
        "git": git_state(),
        "date": now_iso(),
        "load_start": load_start,
        "load_min": min(loads),
        "load_max": max(loads),
        "load_end": loadavg(),
        "total_s": time.perf_counter() - began,
    }


# ---- the dense matmul rate ----------------------------------------------------------------------------------------


def matmul_operands(n: int = MATMUL_SIZE) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    a, b, out = torch.randn(n, n, generator=generator), torch.randn(n, n, generator=generator), torch.empty(n, n)
    torch.mm(a, b, out=out)  # warm-up
    return a, b, out


def matmul_sample(a: torch.Tensor, b: torch.Tensor, out: torch.Tensor) -> float:
    """FLOP/s of one dense float32 torch.mm."""
    start = time.perf_counter()
    torch.mm(a, b, out=out)
    return 2 * a.shape[0] * a.shape[1] * b.shape[1] / (time.perf_counter() - start)


def matmul_rate(repeats: int = 5) -> float:
    """The single-thread dense float32 matmul rate (FLOP/s, median of `repeats` samples)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        operands = matmul_operands()
        return statistics.median(matmul_sample(*operands) for _ in range(repeats))
    finally:
        torch.set_num_threads(threads)


def seconds_per_call(work: Callable[[], object], repeats: int) -> float:
    """Mean seconds of one call of `work`, over `repeats` calls after one untimed warm-up call."""
    work()
    began = time.perf_counter()
    for _ in range(repeats):
        work()
    return (time.perf_counter() - began) / repeats


# ---- a job's own settings, for in-process epochs ------------------------------------------------------------------


def job_training_node(epochs: int = 0):
    """The `training` node a job gets from conf/training/default.yaml (progress bar off), for vae_sweep's fit()."""
    from omegaconf import OmegaConf

    from vae_sweep.config import TrainingConfig

    node = OmegaConf.merge(OmegaConf.structured(TrainingConfig), OmegaConf.load(REPO / "conf/training/default.yaml"))
    node.progress, node.epochs = False, epochs
    return node


def job_optimizer(model: nn.Module) -> torch.optim.Optimizer:
    """The optimizer a job builds: vae_sweep.core.optim.build_optimizer on conf/optimizer/adam.yaml."""
    from omegaconf import OmegaConf

    from vae_sweep.config import OptimizerConfig
    from vae_sweep.core.optim import build_optimizer

    node = OmegaConf.merge(OmegaConf.structured(OptimizerConfig), OmegaConf.load(REPO / "conf/optimizer/adam.yaml"))
    return build_optimizer(model, node)


def job_model(latent: int = 2, hidden: Sequence[int] = (512, 256), **model_keys) -> nn.Module:
    """The model `model.latent=... model.hidden=[...]` (and any other `model` keys) builds for MNIST."""
    from vae_sweep.core.data import SHAPES
    from vae_sweep.core.models import build_model

    return build_model({"name": "mlp", "latent": latent, "hidden": list(hidden), **model_keys}, SHAPES["mnist"])


def fit_epochs(model, optimizer, train, test, training, sink, generator, history) -> list[dict[str, float]]:
    """vae_sweep's fit() on a test split from a `training` node, carrying on after `history`."""
    from vae_sweep.core.train import FitSettings, Hooks, Start, fit

    return fit(
        model, optimizer, train, {"test": test}, FitSettings.of(training), Hooks(sink), Start(generator, history)
    )


# ---- `python -m vae_sweep` as a measured subprocess ---------------------------------------------------------------


def vae_sweep_command(*overrides: str, multirun: bool = False) -> list[str]:
    return [sys.executable, "-m", "vae_sweep", *(["-m"] if multirun else []), "training.progress=false", *overrides]


def subprocess_env(data_root: Path) -> dict:
    """This environment, with the checkout this benchmark belongs to first on the path (so a worktree's jobs run
    its own code) and nothing that would point the jobs at a store or output folder outside their working folder."""
    env = dict(os.environ)
    env["VAE_SWEEP_DATA_DIR"] = str(data_root)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    for name in ("MLFLOW_TRACKING_URI", "VAE_SWEEP_ROOT"):
        env.pop(name, None)
    return env


# A small parent for each measured command: a child's ru_maxrss also counts the memory of the process it was forked
# from (Linux records the pre-exec RSS), so the benchmark's own 1+ GB must not be that parent.
RSS_WRAPPER = (
    "import resource, subprocess, sys\n"
    "code = subprocess.call(sys.argv[2:])\n"
    "open(sys.argv[1], 'w').write(str(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss))\n"
    "sys.exit(code if code >= 0 else 128 - code)\n"
)


def run_process(args: list[str], cwd: Path, env: dict, timeout: float, log_path: Path) -> dict:
    """Run a command to the end: wall time, exit code and peak RSS of it and its children (ru_maxrss)."""
    rss_path = log_path.with_suffix(".maxrss")
    wrapped = [sys.executable, "-c", RSS_WRAPPER, str(rss_path), *args]
    with open(log_path, "w") as log:
        start = time.perf_counter()
        process = subprocess.Popen(
            wrapped, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        try:
            returncode, timed_out = process.wait(timeout=timeout), False
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)  # the process group this call started, nothing else
            returncode, timed_out = process.wait(), True
        wall = time.perf_counter() - start
    maxrss = int(rss_path.read_text()) * 1024 if rss_path.exists() else None  # Linux reports KiB
    return {
        "wall_s": wall,
        "returncode": returncode,
        "timed_out": timed_out,
        "maxrss_bytes": maxrss,
        "log_tail": log_path.read_text(errors="replace").splitlines()[-15:],
        "command": " ".join(args[1:]),
    }


def store_runs(store: Path, details: Callable | None = None) -> list[dict]:
    """Each MLflow run of a store, in job order: job number, latent, span, per-epoch times and time after the last
    epoch, plus what `details(client, run)` returns for it."""
    from mlflow.tracking import MlflowClient

    if not store.exists():
        return []
    client = MlflowClient(tracking_uri=f"sqlite:///{store}")
    experiments = [e.experiment_id for e in client.search_experiments()]
    rows = []
    for run in client.search_runs(experiments):
        if names.TAG_SWEEP_KIND in run.data.tags:
            continue  # a sweep's parent run: no job of its own
        history = sorted(client.get_metric_history(run.info.run_id, names.EPOCH_TIME), key=lambda m: m.step)
        start, end = run.info.start_time / 1000, (run.info.end_time or 0) / 1000
        last_epoch = max((m.timestamp for m in history), default=0) / 1000
        rows.append(
            {
                "job": int(run.data.tags.get(names.TAG_SWEEP_JOB, 0)),
                "latent": int(run.data.params["model.latent"]),
                "status": run.info.status,
                "span_s": end - start if end else None,
                "epoch_times_s": [m.value for m in history],
                "after_training_s": end - last_epoch if end and last_epoch else None,
                "before_training_s": (last_epoch - start - sum(m.value for m in history)) if last_epoch else None,
                **(details(client, run) if details else {}),
            }
        )
    return sorted(rows, key=lambda row: row["job"])
