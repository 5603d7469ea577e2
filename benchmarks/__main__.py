"""`python -m benchmarks [--quick] [--only epoch,...]`: measure vae_sweep and write RESULTS.md and results.json.

Sections (run in this order; `--only` picks some):
  epoch       one epoch of vae_sweep's fit() (train_epoch + full test-set evaluate on in-memory tensors, the
              optimizer optim.build_optimizer makes), alternated epoch by epoch with the conventional
              torchvision/DataLoader loop of pytorch/examples
  efficiency  model FLOPs per second as a fraction of the dense float32 matmul rate (torch.mm), same threads
  tracking    fit() epochs with a NullTracker vs an MlflowTracker on a temporary SQLite store, alternated
  memory      peak resident memory of one `python -m vae_sweep training.epochs=1` job (a subprocess)
  sweep       `python -m vae_sweep -m experiment=seed training.epochs=2` under several launcher/thread settings,
              and the full sweep extrapolated from the measured per-epoch times
  jobs        (not run by default) whole-job wall time with tracking.enabled=true vs false
  full_sweep  (not run by default, ~20 min) the real `python -m vae_sweep -m experiment=seed`, every epoch, figure
              and end-of-run metric: with an empty classifier cache, as a machine's first sweep runs it, then again
              with the classifier cached

`--only SECTIONS --merge` re-runs some sections and keeps the others from the results.json beside --out;
`--render` only rewrites the markdown from that results.json.

Every figure is the median over repetitions; the spread (max - min) / median says how noisy it was. Torch's
intra-op threads are set explicitly (`--threads`, default 1): on a small shared machine, more OpenMP threads than
free cores makes every parallel region wait for a descheduled thread, which can slow an epoch tens of times.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
import yaml
from torch import nn

REPO = Path(__file__).resolve().parents[1]
ALL_SECTIONS = ("epoch", "efficiency", "tracking", "memory", "sweep", "jobs", "full_sweep")
DEFAULT_SECTIONS = ("epoch", "efficiency", "tracking", "memory", "sweep")
TRAIN_IMAGES, TEST_IMAGES = 60_000, 10_000

# (label, hidden sizes, latent): the default model at the study's latents, and pytorch/examples' VAE shape.
MODELS = (
    ("default [512,256], latent 2", (512, 256), 2),
    ("default [512,256], latent 100", (512, 256), 100),
    ("default [512,256], latent 200", (512, 256), 200),
    ("pytorch/examples [400], latent 20", (400,), 20),
)
EXAMPLES_MODEL = MODELS[3][0]
EFFICIENCY_MODEL = MODELS[1][0]

TARGETS = {
    "examples_ratio": "epoch time of the pytorch/examples shape <= 0.35 x the conventional loop",
    "efficiency": ">= 60% of the dense float32 matmul rate, default model at latent 100",
    "tracking": "tracking overhead <= 2% of an epoch",
    "memory": "peak resident memory of one training job <= 1.2 GB",
    "sweep": "full experiment=seed sweep <= 10 minutes",
}

# (label, extra overrides, training.threads, concurrent jobs): how the sweep is launched.
SWEEP_SETTINGS = (
    ("basic launcher (sequential), threads 2", ("hydra/launcher=basic",), 2, 1),
    ("joblib n_jobs=2, threads 1", ("hydra/launcher=joblib", "hydra.launcher.n_jobs=2"), 1, 2),
    ("joblib n_jobs=3, threads 1", ("hydra/launcher=joblib", "hydra.launcher.n_jobs=3"), 1, 3),
)
EXTRA_SWEEP_SETTING = ("basic launcher (sequential), threads 1", ("hydra/launcher=basic",), 1, 1)


# ----------------------------------------------------------------------------------------------------------------
# Helpers


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


def repo_defaults() -> dict:
    """Batch sizes and learning rate as conf/ sets them, so the benchmark measures what a job runs."""
    training = yaml.safe_load((REPO / "conf/training/default.yaml").read_text())
    adam = yaml.safe_load((REPO / "conf/optimizer/adam.yaml").read_text())
    return {
        "batch_size": training["batch_size"],
        "eval_batch_size": training["eval_batch_size"],
        "eval_seed": training["eval_seed"],
        "lr": float(adam["lr"]),
    }


def seed_study() -> list[tuple[int, int]]:
    """(latent, epochs) of each job of experiment=seed, read from conf/ in job order."""
    experiment = yaml.safe_load((REPO / "conf/experiment/seed.yaml").read_text())
    names = str(experiment["hydra"]["sweeper"]["params"]["+study"]).split(",")
    jobs = []
    for name in names:
        study = yaml.safe_load((REPO / "conf/study" / f"{name.strip()}.yaml").read_text())
        jobs.append((int(study["model"]["latent"]), int(study["training"]["epochs"])))
    return jobs


def job_training_node(epochs: int = 0):
    """The `training` node a job gets from conf/training/default.yaml (progress bar off), for vae_sweep's fit()."""
    from omegaconf import OmegaConf

    from vae_sweep.config import TrainingConfig

    node = OmegaConf.merge(OmegaConf.structured(TrainingConfig), OmegaConf.load(REPO / "conf/training/default.yaml"))
    node.progress, node.epochs = False, epochs
    return node


def job_optimizer(model: nn.Module) -> torch.optim.Optimizer:
    """The optimizer a job builds: vae_sweep.optim.build_optimizer on conf/optimizer/adam.yaml."""
    from omegaconf import OmegaConf

    from vae_sweep.config import OptimizerConfig
    from vae_sweep.core.optim import build_optimizer

    node = OmegaConf.merge(OmegaConf.structured(OptimizerConfig), OmegaConf.load(REPO / "conf/optimizer/adam.yaml"))
    return build_optimizer(model, node)


def optimizer_flags(optimizer: torch.optim.Optimizer) -> str:
    flags = {key: optimizer.defaults.get(key) for key in ("lr", "foreach", "fused")}
    return f"{type(optimizer).__name__}(" + ", ".join(f"{key}={value}" for key, value in flags.items()) + ")"


def denormals_flushed() -> bool:
    """Whether this thread flushes denormal floats to zero (torch.set_flush_denormal has no getter)."""
    return bool(torch.tensor([1e-39], dtype=torch.float32).mul(1.0).item() == 0.0)


def linear_flops(model: nn.Module) -> int:
    """Forward FLOPs of one image through the model's Linear layers (2 * in * out each; elementwise ops left out)."""
    return sum(2 * m.in_features * m.out_features for m in model.modules() if isinstance(m, nn.Linear))


def matmul_sample(a: torch.Tensor, b: torch.Tensor, out: torch.Tensor) -> float:
    """FLOP/s of one dense float32 torch.mm."""
    start = time.perf_counter()
    torch.mm(a, b, out=out)
    return 2 * a.shape[0] * a.shape[1] * b.shape[1] / (time.perf_counter() - start)


def matmul_operands(n: int = 2048) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    a, b, out = torch.randn(n, n, generator=generator), torch.randn(n, n, generator=generator), torch.empty(n, n)
    torch.mm(a, b, out=out)  # warm-up
    return a, b, out


def makespan(durations: list[float], workers: int) -> float:
    """Wall time of jobs handed in order to the first free of `workers` (how Hydra's launchers schedule them)."""
    free = [0.0] * workers
    for duration in durations:
        slot = free.index(min(free))
        free[slot] += duration
    return max(free)


def subprocess_env(data_root: Path) -> dict:
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


def store_runs(store: Path) -> list[dict]:
    """Each MLflow run of a store: job number, latent, span, per-epoch times and time after the last epoch."""
    from mlflow.tracking import MlflowClient

    if not store.exists():
        return []
    client = MlflowClient(tracking_uri=f"sqlite:///{store}")
    experiments = [e.experiment_id for e in client.search_experiments()]
    rows = []
    for run in client.search_runs(experiments):
        history = sorted(client.get_metric_history(run.info.run_id, "epoch_time_s"), key=lambda m: m.step)
        start, end = run.info.start_time / 1000, (run.info.end_time or 0) / 1000
        last_epoch = max((m.timestamp for m in history), default=0) / 1000
        rows.append(
            {
                "job": int(run.data.tags.get("sweep.job", 0)),
                "latent": int(run.data.params["model.latent"]),
                "status": run.info.status,
                "span_s": end - start if end else None,
                "epoch_times_s": [m.value for m in history],
                "after_training_s": end - last_epoch if end and last_epoch else None,
                "before_training_s": (last_epoch - start - sum(m.value for m in history)) if last_epoch else None,
            }
        )
    return sorted(rows, key=lambda row: row["job"])


# ----------------------------------------------------------------------------------------------------------------
# The conventional loop, as pytorch/examples' vae/main.py writes it (DataLoader of ToTensor images, summed BCE on
# sigmoid outputs + KL, loss.item() per batch), on the same VAE module so that only the loop differs.


def conventional_loss(recon: torch.Tensor, x: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    bce = F.binary_cross_entropy(recon, x, reduction="sum")
    kld = -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp())
    return bce + kld


def conventional_train(model, optimizer, loader, pixels: int, max_batches: int | None = None) -> float:
    model.train()
    train_loss, images = 0.0, 0
    for batch, (data, _) in enumerate(loader):
        if max_batches is not None and batch >= max_batches:
            break
        data = data.view(-1, pixels)
        optimizer.zero_grad()
        logits, mu, logvar = model(data)
        loss = conventional_loss(torch.sigmoid(logits), data, mu, logvar)
        loss.backward()
        train_loss += loss.item()
        optimizer.step()
        images += len(data)
    return train_loss / max(images, 1)


def conventional_test(model, loader, pixels: int) -> float:
    model.eval()
    test_loss = 0.0
    with torch.no_grad():
        for data, _ in loader:
            data = data.view(-1, pixels)
            logits, mu, logvar = model(data)
            test_loss += conventional_loss(torch.sigmoid(logits), data, mu, logvar).item()
    return test_loss / len(loader.dataset)


# ----------------------------------------------------------------------------------------------------------------
# Sections


class Bench:
    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.defaults = repo_defaults()
        self.results: dict = {"sections": {}}
        self.loads: list[float] = []
        self._data = None
        self.tmp = Path(tempfile.mkdtemp(prefix="vae-bench-"))
        # Quick runs train and evaluate on the first images only and scale the times to a full epoch.
        self.n_train = 10_000 if args.quick else TRAIN_IMAGES
        self.n_test = 2_000 if args.quick else TEST_IMAGES

    def data(self):
        if self._data is None:
            from vae_sweep.core.data import Split, load

            train, test = load("mnist", self.args.data_root, download=False)
            train = Split(train.images[: self.n_train], train.labels[: self.n_train])
            test = Split(test.images[: self.n_test], test.labels[: self.n_test])
            self._data = train, test
        return self._data

    def note_load(self) -> None:
        self.loads.append(loadavg())

    # -- 1, 2: epoch time, ours vs conventional --------------------------------------------------------------------

    def epoch(self) -> dict:
        from torch.utils.data import Subset
        from torchvision import datasets, transforms

        root = str(self.args.data_root)
        conv_train = datasets.MNIST(root, train=True, transform=transforms.ToTensor(), download=False)
        conv_test = datasets.MNIST(root, train=False, transform=transforms.ToTensor(), download=False)
        if self.args.quick:
            conv_train, conv_test = Subset(conv_train, range(self.n_train)), Subset(conv_test, range(self.n_test))
        mm = matmul_operands()
        matmul: list[float] = []
        models = {}
        for label, hidden, latent in MODELS:
            models[label] = figures = self._compare(hidden, latent, conv_train, conv_test, mm, matmul)
            print(
                f"  {label}: ours {figures['ours']['epoch']['median']:.2f} s, conventional "
                f"{figures['conventional']['epoch']['median']:.2f} s, ratio {figures['ratio']:.3f}",
                flush=True,
            )
        return {"models": models, "interleaved_matmul_flops": summary(matmul)}

    def _compare(self, hidden, latent, conv_train, conv_test, mm, matmul: list[float]) -> dict:
        """Epochs of vae_sweep's loop and of the conventional loop on one model shape, alternated."""
        from torch.utils.data import DataLoader

        from vae_sweep.core.data import Split
        from vae_sweep.core.model import PIXELS, VAE
        from vae_sweep.core.train import evaluate, fit, train_epoch
        from vae_sweep.tracking.runs import NullTracker

        train, test = self.data()
        batch, eval_batch, lr = self.defaults["batch_size"], self.defaults["eval_batch_size"], self.defaults["lr"]
        train_scale, test_scale = TRAIN_IMAGES / self.n_train, TEST_IMAGES / self.n_test
        torch.manual_seed(0)
        ours = VAE(latent, hidden)
        torch.manual_seed(0)
        conv = VAE(latent, hidden)
        ours_opt = job_optimizer(ours)  # as a job builds it (conf/optimizer/adam.yaml)
        conv_opt = torch.optim.Adam(conv.parameters(), lr=lr)  # as pytorch/examples builds it
        generator = torch.Generator().manual_seed(0)
        training = job_training_node()
        history: list[dict[str, float]] = []
        settings = {}
        loader = DataLoader(conv_train, batch_size=batch, shuffle=True, generator=torch.Generator().manual_seed(0))
        test_loader = DataLoader(conv_test, batch_size=batch, shuffle=False)
        # Warm-up (not timed): a few batches of each loop.
        warm = Split(train.images[:1280], train.labels[:1280])
        train_epoch(ours, ours_opt, warm, batch, torch.Generator().manual_seed(1), 1.0, False, False, 0)
        evaluate(ours, Split(test.images[:eval_batch], test.labels[:eval_batch]), eval_batch, 0)
        conventional_train(conv, conv_opt, loader, PIXELS, max_batches=10)
        times = {name: {"train": [], "test": [], "epoch": [], "cpu": []} for name in ("ours", "conventional")}
        cpu = [0.0]  # process CPU time of the last epoch, set by the run functions
        losses = {}

        def run_ours(epoch: int) -> tuple[float, float]:
            # One epoch of vae_sweep's fit() (train_epoch + evaluate, and whatever process settings fit makes).
            training.epochs = len(history) + 1
            start, cpu_start = time.perf_counter(), time.process_time()
            history[:] = fit(ours, ours_opt, train, test, training, NullTracker(), generator=generator, history=history)
            epoch_s, cpu[0] = time.perf_counter() - start, time.process_time() - cpu_start
            settings["ours"] = {"optimizer": optimizer_flags(ours_opt), "denormals_flushed": denormals_flushed()}
            # The test part on its own, once more, to split the epoch into training and evaluation.
            start = time.perf_counter()
            evaluate(ours, test, training.eval_batch_size, training.eval_seed, training.beta)
            test_s = time.perf_counter() - start
            losses["ours"] = {"train": history[-1]["train/loss"], "test": history[-1]["test/loss"]}
            return epoch_s - test_s, test_s

        def run_conv(epoch: int) -> tuple[float, float]:
            torch.set_flush_denormal(False)  # a separate script would run with the process defaults
            settings["conventional"] = {
                "optimizer": optimizer_flags(conv_opt),
                "denormals_flushed": denormals_flushed(),
            }
            start, cpu_start = time.perf_counter(), time.process_time()
            train_loss = conventional_train(conv, conv_opt, loader, PIXELS)
            middle = time.perf_counter()
            test_loss = conventional_test(conv, test_loader, PIXELS)
            end = time.perf_counter()
            losses["conventional"] = {"train": train_loss, "test": test_loss}
            cpu[0] = time.process_time() - cpu_start
            return middle - start, end - middle

        variants: list[tuple[str, Callable[[int], tuple[float, float]]]] = [
            ("ours", run_ours),
            ("conventional", run_conv),
        ]
        for repeat in range(self.args.repeats):
            for name, run in variants if repeat % 2 == 0 else variants[::-1]:
                train_s, test_s = run(repeat + 1)
                # Process CPU time: the work itself, without the time other processes held the core.
                times[name]["cpu"].append(cpu[0] * train_scale)
                train_s, test_s = train_s * train_scale, test_s * test_scale
                times[name]["train"].append(train_s)
                times[name]["test"].append(test_s)
                times[name]["epoch"].append(train_s + test_s)
            matmul.append(matmul_sample(*mm))
            self.note_load()
        ours_epochs, conv_epochs = times["ours"]["epoch"], times["conventional"]["epoch"]
        return {
            "hidden": list(hidden),
            "latent": latent,
            "forward_flops_per_image": linear_flops(ours),
            "ours": {key: summary(values) for key, values in times["ours"].items()},
            "conventional": {key: summary(values) for key, values in times["conventional"].items()},
            "ours_images_per_s": TRAIN_IMAGES / statistics.median(times["ours"]["train"]),
            "conventional_images_per_s": TRAIN_IMAGES / statistics.median(times["conventional"]["train"]),
            "ratio": statistics.median(ours_epochs) / statistics.median(conv_epochs),
            "paired_ratio": summary([a / b for a, b in zip(ours_epochs, conv_epochs, strict=True)]),
            "last_losses_per_image": losses,
            "settings": settings,
        }

    # -- 3: efficiency ---------------------------------------------------------------------------------------------

    def efficiency(self) -> dict:
        mm = matmul_operands()
        samples = []
        for _ in range(max(9, self.args.repeats)):
            samples.append(matmul_sample(*mm))
        self.note_load()
        result = {"matmul_size": 2048, "matmul_flops": summary(samples)}
        epoch = self.results["sections"].get("epoch")
        if not epoch or "models" not in epoch:
            result["note"] = "run with the epoch section to relate epoch times to this rate"
            return result
        # Rate: the median of all matmul samples of this run (standalone and interleaved between epochs).
        all_samples = samples + epoch["interleaved_matmul_flops"]["samples"]
        rate = statistics.median(all_samples)
        result["matmul_flops_all"] = summary(all_samples)
        per_model = {}
        for label, figures in epoch["models"].items():
            forward = figures["forward_flops_per_image"]
            flops = 3 * forward * TRAIN_IMAGES + forward * TEST_IMAGES
            per_model[label] = {}
            for loop in ("ours", "conventional"):
                achieved = flops / figures[loop]["epoch"]["median"]
                per_model[label][loop] = {"flops_per_s": achieved, "fraction_of_matmul": achieved / rate}
            per_model[label]["epoch_flops"] = flops
        result["models"] = per_model
        return result

    # -- 4: tracking overhead --------------------------------------------------------------------------------------

    def tracking(self) -> dict:
        from vae_sweep.config import ModelConfig, TrainingConfig
        from vae_sweep.core.model import VAE
        from vae_sweep.core.train import fit
        from vae_sweep.tracking.runs import MlflowTracker, NullTracker
        from vae_sweep.tracking.store import connect

        train, test = self.data()
        folder = self.tmp / "tracking"
        folder.mkdir()
        start = time.perf_counter()
        client, experiment = connect(f"sqlite:///{folder}/mlflow.db", "benchmark", str(folder / "mlruns"))
        connect_s = time.perf_counter() - start
        params = {f"training.{k}": v for k, v in dataclasses.asdict(TrainingConfig()).items()}
        params.update({f"model.{k}": v for k, v in dataclasses.asdict(ModelConfig()).items()})
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
            model = VAE(latent, hidden)
            variants[name] = {
                "model": model,
                "optimizer": job_optimizer(model),
                "generator": torch.Generator().manual_seed(0),
                "history": [],
                "sink": sink,
                "times": [],
            }
        training = job_training_node()
        names = ["null", "mlflow"]
        for repeat in range(self.args.repeats):
            for name in names if repeat % 2 == 0 else names[::-1]:
                variant = variants[name]
                training.epochs = len(variant["history"]) + 1
                begin = time.perf_counter()
                variant["history"] = fit(
                    variant["model"],
                    variant["optimizer"],
                    train,
                    test,
                    training,
                    variant["sink"],
                    generator=variant["generator"],
                    history=variant["history"],
                )
                variant["times"].append(time.perf_counter() - begin)
            self.note_load()
        # More log_epoch calls alone, for a steadier latency than one per epoch gives.
        metrics = {key: value for key, value in variants["mlflow"]["history"][-1].items() if key != "epoch"}
        extra = []
        for step in range(20):
            begin = time.perf_counter()
            tracker.log_epoch(1000 + step, metrics)
            extra.append(time.perf_counter() - begin)
        start = time.perf_counter()
        tracker.end("FINISHED")
        end_s = time.perf_counter() - start
        scale = TRAIN_IMAGES / self.n_train  # quick runs: epochs on a subset; relate the latency to a full epoch
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

    # -- 6: peak memory of one job ---------------------------------------------------------------------------------

    def job_args(self, *overrides: str, multirun: bool = False) -> list[str]:
        return [sys.executable, "-m", "vae_sweep", *(["-m"] if multirun else []), "training.progress=false", *overrides]

    def memory(self) -> dict:
        env = subprocess_env(self.args.data_root)
        cache = self.args.classifier_cache
        cache.mkdir(parents=True, exist_ok=True)
        threads = f"training.threads={self.args.threads}"
        variants = [("default job (eval on)", ("eval.enabled=true",)), ("eval.enabled=false", ("eval.enabled=false",))]
        if self.args.quick:
            variants = variants[1:]  # the end-of-run evaluation alone takes over a minute
        jobs = {}
        for label, extra in variants:
            folder = self.tmp / f"memory-{len(jobs)}"
            folder.mkdir()
            cold = not (cache / "mnist_cnn.pt").exists() and "eval.enabled=true" in extra
            args = self.job_args("training.epochs=1", threads, f"eval.classifier_dir={cache}", *extra)
            result = run_process(args, folder, env, self.args.job_timeout, folder / "job.log")
            runs = store_runs(folder / "mlflow.db")
            result["run"] = runs[0] if runs else None
            result["classifier_trained_in_job"] = cold
            jobs[label] = result
            self.note_load()
            peak = result["maxrss_bytes"]
            print(f"  {label}: {result['wall_s']:.1f} s, peak RSS {(peak or 0) / 1e9:.2f} GB", flush=True)
        # What the imports alone hold: the floor under any job's peak.
        imports = {}
        for label, code in (("import torch", "import torch"), ("import vae_sweep.jobs.task", "import vae_sweep.jobs.task")):
            folder = self.tmp / f"imports-{len(imports)}"
            folder.mkdir()
            done = run_process([sys.executable, "-c", code], folder, env, 120, folder / "import.log")
            imports[label] = done["maxrss_bytes"]
        result = {"jobs": jobs, "imports_maxrss_bytes": imports}
        on, off = jobs.get("default job (eval on)"), jobs.get("eval.enabled=false")
        if on and off and on["run"] and off["run"] and on["run"]["after_training_s"] and off["run"]["after_training_s"]:
            result["eval_cost_s"] = on["run"]["after_training_s"] - off["run"]["after_training_s"]
        if off and off["run"] and off["run"]["epoch_times_s"]:
            result["lone_job_epoch_s"] = off["run"]["epoch_times_s"][0]
        return result

    # -- 5: sweep wall time ----------------------------------------------------------------------------------------

    def sweep(self) -> dict:
        env = subprocess_env(self.args.data_root)
        epochs = 1 if self.args.quick else 2
        settings = SWEEP_SETTINGS[1:2] if self.args.quick else SWEEP_SETTINGS
        if self.args.extra_sweep:
            settings = (*settings, EXTRA_SWEEP_SETTING)
        evaluation = "eval.enabled=true" if self.args.sweep_eval else "eval.enabled=false"
        study = seed_study()
        memory = self.results["sections"].get("memory") or {}
        eval_cost = None if self.args.sweep_eval else memory.get("eval_cost_s")
        lone_epoch = memory.get("lone_job_epoch_s")
        results = {}
        for label, launcher, threads, workers in settings:
            folder = self.tmp / f"sweep-{len(results)}"
            folder.mkdir()
            args = self.job_args(
                "experiment=seed",
                f"training.epochs={epochs}",
                f"training.threads={threads}",
                evaluation,
                f"eval.classifier_dir={self.args.classifier_cache}",
                *launcher,
                multirun=True,
            )
            result = run_process(args, folder, env, self.args.sweep_timeout, folder / "sweep.log")
            result["runs"] = runs = store_runs(folder / "mlflow.db")
            self.note_load()
            print(f"  {label}: {result['wall_s']:.1f} s (exit {result['returncode']})", flush=True)
            finished = [run for run in runs if run["status"] == "FINISHED" and run["span_s"]]
            if result["returncode"] == 0 and len(finished) == len(study):
                # Each job's span grows by the extra epochs at its own measured per-epoch time; what the launcher
                # adds around the jobs (start-up, imports) stays as measured.
                spans = [run["span_s"] for run in finished]
                launcher_s = result["wall_s"] - makespan(spans, workers)
                # The last epoch: the later epochs are slower (see the note under the epoch table), so the last
                # measured one is the closest to what the remaining epochs will take.
                latent2 = [run["epoch_times_s"][-1] for run in finished if run["latent"] == 2]
                slowdown = latent2[0] / lone_epoch if latent2 and lone_epoch else 1.0
                full = []
                for run, (_, full_epochs) in zip(finished, study, strict=True):
                    per_epoch = run["epoch_times_s"][-1]
                    extra_eval = eval_cost * slowdown if eval_cost else 0.0
                    full.append(run["span_s"] + (full_epochs - epochs) * per_epoch + extra_eval)
                    run["full_epochs"], run["per_epoch_s"] = full_epochs, per_epoch
                result["launcher_overhead_s"] = launcher_s
                result["extrapolated_full_s"] = launcher_s + makespan(full, workers)
                result["eval_added_s"] = eval_cost * slowdown if eval_cost else 0.0
            results[label] = result
        return {
            "epochs": epochs,
            "study": study,
            "evaluation": evaluation,
            "eval_cost_s": eval_cost,
            "settings": results,
        }

    # -- optional: the full sweep, measured ------------------------------------------------------------------------

    def full_sweep(self) -> dict:
        """`experiment=seed` as shipped, from a fresh directory: first with an empty classifier cache (a machine's
        first sweep, which trains the FID/IS classifier), then again with the classifier that run cached."""
        cold = self.tmp / "full-sweep"
        result = self.one_full_sweep(cold, cold / "classifiers", "cold")
        result["warm"] = self.one_full_sweep(self.tmp / "full-sweep-warm", cold / "classifiers", "warm")
        return {"overrides": self.args.full_sweep_args, **result}

    def one_full_sweep(self, folder: Path, classifiers: Path, label: str) -> dict:
        folder.mkdir()
        args = self.job_args(
            "experiment=seed", f"eval.classifier_dir={classifiers}", *self.args.full_sweep_args, multirun=True
        )
        env = subprocess_env(self.args.data_root)
        result = run_process(args, folder, env, self.args.full_sweep_timeout, folder / "sweep.log")
        result["runs"] = runs = store_runs(folder / "mlflow.db")
        self.note_load()
        from mlflow.tracking import MlflowClient

        client = MlflowClient(tracking_uri=f"sqlite:///{folder / 'mlflow.db'}")
        stored_runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
        for run, stored in zip(runs, sorted(stored_runs, key=lambda r: int(r.data.tags["sweep.job"])), strict=False):
            run["figures"] = sorted(a.path for a in client.list_artifacts(stored.info.run_id, "figures"))
            run["quality_metrics"] = sorted(k for k in stored.data.metrics if k.startswith("quality/"))
        result["complete"] = (
            result["returncode"] == 0
            and len(runs) == 3
            and all(r["status"] == "FINISHED" and r["figures"] and "quality/fid" in r["quality_metrics"] for r in runs)
        )
        print(f"  full sweep, {label}: {result['wall_s'] / 60:.1f} min (exit {result['returncode']})", flush=True)
        return result

    # -- optional: whole-job tracking overhead ---------------------------------------------------------------------

    def jobs(self) -> dict:
        env = subprocess_env(self.args.data_root)
        threads = f"training.threads={self.args.threads}"
        walls: dict[str, list[float]] = {"true": [], "false": []}
        pairs = 1 if self.args.quick else 2
        for repeat in range(pairs):
            for enabled in ("true", "false") if repeat % 2 == 0 else ("false", "true"):
                folder = self.tmp / f"job-{enabled}-{repeat}"
                folder.mkdir()
                args = self.job_args("training.epochs=2", threads, f"tracking.enabled={enabled}", "eval.enabled=false")
                result = run_process(args, folder, env, self.args.job_timeout, folder / "job.log")
                walls[enabled].append(result["wall_s"])
                self.note_load()
        return {
            "tracking_on_s": summary(walls["true"]),
            "tracking_off_s": summary(walls["false"]),
            "ratio": statistics.median(walls["true"]) / statistics.median(walls["false"]),
        }


# ----------------------------------------------------------------------------------------------------------------
# Report


def fmt_s(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f} s"


def spread(stats: dict) -> str:
    return f"±{100 * stats['spread'] / 2:.0f}%"


def verdict(ok: bool | None) -> str:
    return "n/a" if ok is None else ("**met**" if ok else "**not met**")


def evaluate_targets(sections: dict) -> list[tuple[str, str, bool | None]]:
    rows: list[tuple[str, str, bool | None]] = []
    epoch = sections.get("epoch", {}).get("models", {})
    if EXAMPLES_MODEL in epoch:
        ratio = epoch[EXAMPLES_MODEL]["ratio"]
        rows.append((TARGETS["examples_ratio"], f"{ratio:.3f} x", ratio <= 0.35))
    efficiency = sections.get("efficiency", {}).get("models", {})
    if EFFICIENCY_MODEL in efficiency:
        fraction = efficiency[EFFICIENCY_MODEL]["ours"]["fraction_of_matmul"]
        rows.append((TARGETS["efficiency"], f"{100 * fraction:.0f}%", fraction >= 0.60))
    tracking = sections.get("tracking")
    if tracking and "ratio" in tracking:
        overhead = tracking["ratio"] - 1
        estimate = tracking["log_epoch_fraction_of_epoch"]
        rows.append(
            (
                TARGETS["tracking"],
                f"{100 * overhead:+.1f}% (paired epochs); {100 * estimate:.2f}% (log_epoch latency / epoch)",
                estimate <= 0.02 and overhead <= 0.02,
            )
        )
    memory = sections.get("memory", {}).get("jobs", {})
    if memory:
        label = "default job (eval on)" if "default job (eval on)" in memory else next(iter(memory))
        peak = memory[label]["maxrss_bytes"] or 0
        rows.append((TARGETS["memory"], f"{peak / 1e9:.2f} GB ({label})", peak <= 1.2e9))
    full = sections.get("full_sweep")
    if full and "wall_s" in full:
        for label, measured in (("empty classifier cache", full), ("classifier cached", full.get("warm"))):
            if measured and "wall_s" in measured:
                complete = measured["complete"]
                rows.append(
                    (
                        TARGETS["sweep"],
                        f"{measured['wall_s'] / 60:.1f} min (measured, {label}"
                        f"{'' if complete else ', NOT complete'}: experiment=seed {' '.join(full['overrides'])})",
                        complete and measured["wall_s"] <= 600,
                    )
                )
    sweep = sections.get("sweep", {}).get("settings", {})
    estimates = {label: s["extrapolated_full_s"] for label, s in sweep.items() if "extrapolated_full_s" in s}
    if estimates:
        best = min(estimates, key=estimates.get)
        rows.append(
            (
                TARGETS["sweep"],
                f"{estimates[best] / 60:.1f} min (extrapolated; best setting: {best})",
                estimates[best] <= 600,
            )
        )
    return rows


def now_iso() -> str:
    return datetime.datetime.now().astimezone().isoformat(timespec="seconds")


def measured_by(date: str, argv: list[str], code: str) -> dict:
    return {"date": date, "argv": argv, "code": code}


def write_markdown(results: dict, path: Path) -> None:
    machine, sections = results["machine"], results["sections"]
    out = ["# vae_sweep benchmark results", ""]
    out.append(f"Written by `python -m benchmarks {' '.join(results['argv'])}` on {machine['date']}.")
    runs: dict[tuple, list[str]] = {}
    for name, section in sections.items():
        if "measured" in section:
            measured = section["measured"]
            runs.setdefault((measured["date"], " ".join(measured["argv"]), measured["code"]), []).append(name)
    if len(runs) > 1:
        out.append("Sections were measured in separate runs (start time, command, code):")
        out.append("")
        for (date, command, code), names in sorted(runs.items()):
            out.append(f"- {', '.join(names)}: {date}, `python -m benchmarks {command}`, code {code}")
    out.append("")
    out.append("How to make the epoch faster (variants measured against the code): [SPEEDUPS.md](SPEEDUPS.md).")
    out.append("")
    out += [
        "| machine | |",
        "|---|---|",
        f"| CPU | {machine['cpu']} |",
        f"| cores | {machine['cores']} (usable by this process: {machine['usable_cores']}) |",
        f"| torch | {machine['torch']} (torchvision {machine['torchvision']}), Python {machine['python']} |",
        f"| torch threads | {machine['threads']} (set explicitly with torch.set_num_threads) |",
        f"| code | {machine['git']} |",
        f"| load average (1 min) | start {machine['load_start']:.2f}, during {machine['load_min']:.2f}"
        f"–{machine['load_max']:.2f}, end {machine['load_end']:.2f} |",
        f"| total benchmark time | {machine['total_s'] / 60:.1f} min |",
        "",
    ]
    if results["quick"]:
        out += [
            "**Quick (smoke) run**: in-process figures are measured on the first 10 000 train / 2 000 test images and "
            "scaled to a full epoch; fewer repetitions; one sweep setting with 1 epoch; memory without the end-of-run "
            "evaluation. Use a full run for figures to rely on.",
            "",
        ]
    out += [
        "Every figure is the median over the repetitions; ± is half the range (max − min) relative to the median, "
        "a direct measure of how noisy this (shared) machine was during the run. Compared variants were alternated "
        "within the run (ABAB…, order flipped each repetition).",
        "",
        "## Targets",
        "",
        "| target | measured | |",
        "|---|---|---|",
    ]
    for target, measured, ok in evaluate_targets(sections):
        out.append(f"| {target} | {measured} | {verdict(ok)} |")
    out.append("")

    epoch = sections.get("epoch")
    if epoch and "models" in epoch:
        out += [
            "## 1–2. Epoch time: vae_sweep vs the conventional loop",
            "",
            "One epoch = one pass over the 60 000 training images (batch 128, Adam lr 1e-3) + the whole 10 000-image "
            "test set. *vae_sweep*: `train_epoch` + `evaluate` (eval batch 2000) on the in-memory tensors of "
            "`vae_sweep.data.load`. *conventional*: pytorch/examples' vae/main.py loop on the same VAE module: "
            "`torchvision.datasets.MNIST` + `ToTensor()` through `DataLoader(shuffle=True, batch_size=128, "
            "num_workers=0)`, `F.binary_cross_entropy(sigmoid(logits), x, reduction='sum')` + KL, `loss.item()` "
            "per batch, and a test DataLoader (batch 128). Images/s counts training images over the training part.",
            "",
            "vae_sweep's epochs run through its `fit()` (one epoch per call, `NullTracker`), with the optimizer "
            "`vae_sweep.optim.build_optimizer` makes from conf/optimizer/adam.yaml, so process settings that `fit` "
            "makes are included; the conventional loop runs with the process defaults, as its own script would. "
            "Here: "
            + "; ".join(
                f"{loop}: {info['optimizer']}, denormals flushed: {info['denormals_flushed']}"
                for loop, info in next(iter(epoch["models"].values())).get("settings", {}).items()
            )
            + ".",
            "",
            "| model | vae_sweep epoch | train img/s | conventional epoch | train img/s | ratio (medians) "
            "| ratio per pair (median, range) |",
            "|---|---|---|---|---|---|---|",
        ]
        for label, m in epoch["models"].items():
            ours, conv, paired = m["ours"]["epoch"], m["conventional"]["epoch"], m["paired_ratio"]
            out.append(
                f"| {label} | {fmt_s(ours['median'])} {spread(ours)} | {m['ours_images_per_s']:,.0f} "
                f"| {fmt_s(conv['median'])} {spread(conv)} | {m['conventional_images_per_s']:,.0f} "
                f"| {m['ratio']:.3f} | {paired['median']:.3f} ({paired['min']:.3f}–{paired['max']:.3f}) |"
            )
        out += [
            "",
            f"The {results['repeats']} epochs of each loop are epochs 1…{results['repeats']} of a fresh model. Where "
            "denormals are not flushed, epochs get slower from about the second one on: Adam's moment estimates for "
            "weights whose gradient is mostly zero (MNIST's always-black border pixels) decay into denormal floats, "
            "which the CPU handles slowly (about +35% CPU time per epoch for the default model at steady state, "
            "measured separately; see SPEEDUPS.md), so a long run's later epochs are slower than these. "
            "Epoch 1 → last, vae_sweep / conventional: "
            + "; ".join(
                f"{label.split(',')[-1].strip() if label != EXAMPLES_MODEL else '[400]/20'}: "
                f"{m['ours']['epoch']['samples'][0]:.2f}→{m['ours']['epoch']['samples'][-1]:.2f} / "
                f"{m['conventional']['epoch']['samples'][0]:.2f}→{m['conventional']['epoch']['samples'][-1]:.2f} s"
                for label, m in epoch["models"].items()
            )
            + ".",
            "",
            "Training and test parts of the medians, CPU time of the process (the work without the time other "
            "processes held the core), and the last epoch's losses (a sanity check):",
            "",
        ]
        out += [
            "| model | vae_sweep train / test | conventional train / test | CPU s per epoch (ours / conv) "
            "| last train loss (ours / conv) |"
        ]
        out += ["|---|---|---|---|---|"]
        for label, m in epoch["models"].items():
            losses = m["last_losses_per_image"]
            out.append(
                f"| {label} | {m['ours']['train']['median']:.2f} / {m['ours']['test']['median']:.2f} s "
                f"| {m['conventional']['train']['median']:.2f} / {m['conventional']['test']['median']:.2f} s "
                f"| {m['ours']['cpu']['median']:.2f} / {m['conventional']['cpu']['median']:.2f} s "
                f"| {losses['ours']['train']:.1f} / {losses['conventional']['train']:.1f} nats |"
            )
        out.append("")

    efficiency = sections.get("efficiency")
    if efficiency:
        rate = efficiency.get("matmul_flops_all", efficiency["matmul_flops"])
        out += [
            "## 3. Efficiency against the dense matmul rate",
            "",
            f"Dense float32 `torch.mm` 2048×2048, {machine['threads']} thread(s): "
            f"**{rate['median'] / 1e9:.1f} GFLOP/s** {spread(rate)} (median of {rate['n']} samples, standalone and "
            "interleaved between the epochs above). Model FLOPs per epoch = 3 × forward FLOPs × 60 000 (forward + "
            "backward) + forward FLOPs × 10 000 (test), forward FLOPs = Σ 2·in·out over the Linear layers; "
            "elementwise work, the loss and Adam are not counted.",
            "",
        ]
        if "models" in efficiency:
            out += ["| model | FLOPs/epoch | vae_sweep | % of matmul | conventional | % of matmul |"]
            out += ["|---|---|---|---|---|---|"]
            for label, m in efficiency["models"].items():
                ours, conv = m["ours"], m["conventional"]
                out.append(
                    f"| {label} | {m['epoch_flops'] / 1e9:.0f} G | {ours['flops_per_s'] / 1e9:.1f} GFLOP/s "
                    f"| {100 * ours['fraction_of_matmul']:.0f}% | {conv['flops_per_s'] / 1e9:.1f} GFLOP/s "
                    f"| {100 * conv['fraction_of_matmul']:.0f}% |"
                )
        else:
            out.append(efficiency.get("note", ""))
        out.append("")

    tracking = sections.get("tracking")
    if tracking and "ratio" in tracking:
        once = tracking["once_per_job_s"]
        out += [
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

    memory = sections.get("memory")
    if memory and "jobs" in memory:
        out += [
            "## 6. Peak memory of one training job",
            "",
            "`python -m vae_sweep training.epochs=1` (default model, latent 2; tracking on a SQLite store in a "
            "temporary working directory) as a subprocess of a small Python parent, which reports "
            "`getrusage(RUSAGE_CHILDREN).ru_maxrss` (the job's peak RSS, its own children included).",
            "",
            "| job | peak RSS | wall | after the last epoch (figures, checkpoint, quality metrics) |",
            "|---|---|---|---|",
        ]
        for label, job in memory["jobs"].items():
            after = job["run"]["after_training_s"] if job.get("run") else None
            cold = " (trained the FID classifier: cold cache)" if job["classifier_trained_in_job"] else ""
            peak = job["maxrss_bytes"] or 0
            out.append(
                f"| {label}{cold} | {peak / 1e9:.2f} GB ({peak / 2**20:.0f} MiB) "
                f"| {fmt_s(job['wall_s'])} (exit {job['returncode']}) | {fmt_s(after)} |"
            )
        imports = memory.get("imports_maxrss_bytes", {})
        if imports:
            out.append("")
            out.append(
                "For scale, a bare `python -c` with only the imports peaks at: "
                + ", ".join(f"`{label}` {(value or 0) / 1e9:.2f} GB" for label, value in imports.items())
                + f" (torch {torch.__version__}; a CUDA build loads its CUDA libraries even on a CPU-only machine)."
            )
        if memory.get("eval_cost_s") is not None:
            out.append("")
            out.append(f"The end-of-run evaluation (`eval.enabled=true`) costs {memory['eval_cost_s']:.1f} s per job.")
        out.append("")

    sweep = sections.get("sweep")
    if sweep and "settings" in sweep:
        study = ", ".join(f"latent {latent} × {epochs} epochs" for latent, epochs in sweep["study"])
        flushed = [
            m.get("settings", {}).get("ours", {}).get("denormals_flushed")
            for m in sections.get("epoch", {}).get("models", {}).values()
        ]
        if flushed and all(flushed):
            drift = (
                "vae_sweep flushes denormals, so its epoch time stays flat past the first epochs (see the epoch "
                "section); the extrapolation carries this machine's noise, not a known drift."
            )
        else:
            drift = (
                "Without denormal flushing it is an underestimate: epochs keep slowing down after the first two "
                "(denormal floats building up in Adam's state, see the epoch section), which short jobs do not reach."
            )
        out += [
            "## 5. Sweep wall time",
            "",
            f"`python -m vae_sweep -m experiment=seed training.epochs={sweep['epochs']} {sweep['evaluation']}` — the "
            f"three jobs of experiment=seed **scaled down to {sweep['epochs']} epoch(s) each** — as a subprocess in a "
            "fresh temporary working directory per setting (its own MLflow store), one measurement per setting.",
            "",
            "| setting | measured wall | epoch time by job, epochs 1…last (latent 2 / 100 / 200) "
            "| full sweep, extrapolated |",
            "|---|---|---|---|",
        ]
        for label, s in sweep["settings"].items():
            per_epoch = " / ".join(
                "…".join(f"{t:.1f}" for t in r["epoch_times_s"]) for r in s["runs"] if r["epoch_times_s"]
            )
            if s["timed_out"]:
                measured = f"> {s['wall_s']:.0f} s (killed at --sweep-timeout; {len(s['runs'])} job(s) started)"
            else:
                measured = f"{s['wall_s']:.0f} s (exit {s['returncode']})"
            full = f"{s['extrapolated_full_s'] / 60:.1f} min" if "extrapolated_full_s" in s else "n/a"
            out.append(f"| {label} | {measured} | {per_epoch or 'n/a'} s | {full} |")
        measured = {label: s["wall_s"] for label, s in sweep["settings"].items() if s["returncode"] == 0}
        if measured:
            best = min(measured, key=measured.get)
            out += ["", f"Best on this machine (measured, scaled-down sweep): **{best}**."]
        added = (
            f"plus the end-of-run evaluation measured in section 6 ({sweep['eval_cost_s']:.0f} s per job, scaled by "
            "the setting's slowdown of the latent-2 epoch against a lone job)"
            if sweep.get("eval_cost_s")
            else "with the evaluation as it ran in the sweep"
            if "true" in sweep["evaluation"]
            else "without the end-of-run evaluation (not measured in this run)"
        )
        out += [
            "",
            f"The full sweep ({study}) is an **extrapolation**, not a measurement: each job's measured span plus "
            "its remaining epochs at its own last measured epoch time, "
            f"{added}, scheduled as the launcher does (jobs in order to the first free worker), plus the launcher's "
            "own start-up as measured. " + drift,
            "",
        ]

    full = sections.get("full_sweep")
    if full and "wall_s" in full:
        warm = full.get("warm") or {}
        out += [
            "## 5b. The full sweep, measured",
            "",
            f"`python -m vae_sweep -m experiment=seed {' '.join(full['overrides'])}`, each time from a fresh working "
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

    jobs = sections.get("jobs")
    if jobs and "ratio" in jobs:
        out += [
            "## Whole-job tracking overhead (optional)",
            "",
            "`python -m vae_sweep training.epochs=2 eval.enabled=false tracking.enabled=true|false`, alternated:",
            "",
            f"- tracking on: {fmt_s(jobs['tracking_on_s']['median'])} {spread(jobs['tracking_on_s'])}; off: "
            f"{fmt_s(jobs['tracking_off_s']['median'])} {spread(jobs['tracking_off_s'])}; ratio {jobs['ratio']:.3f}",
            "",
        ]

    failed = {name: s["error"] for name, s in sections.items() if "error" in s}
    if failed:
        out += ["## Sections that failed", ""]
        for name, error in failed.items():
            out += [f"### {name}", "", "```", error.strip(), "```", ""]
    path.write_text("\n".join(out))


# ----------------------------------------------------------------------------------------------------------------


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.splitlines()[0])
    default_root = os.environ.get("VAE_SWEEP_DATA_DIR", "./data")
    parser.add_argument("--data-root", type=Path, default=Path(default_root), help=f"default: {default_root}")
    parser.add_argument("--repeats", type=int, default=None, help="repetitions per figure (default 5; quick: 2)")
    parser.add_argument("--quick", action="store_true", help="smoke run: subsets, fewer repetitions (~2 min)")
    parser.add_argument("--only", default=",".join(DEFAULT_SECTIONS), help=f"sections, of {','.join(ALL_SECTIONS)}")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "RESULTS.md")
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        # The flush-to-zero mode is per thread and fixed when a thread starts (vae_sweep.launcher.set_cpu_threads), so
        # the in-process alternation can only switch it on the main thread: above 1 thread, both loops' other threads
        # keep denormals, as a job of vae_sweep does not.
        help="torch intra-op threads in-process (default 1; above 1, only the main thread flushes denormals)",
    )
    parser.add_argument("--sweep-eval", action="store_true", help="keep the end-of-run evaluation in sweep jobs")
    parser.add_argument("--classifier-cache", type=Path, default=REPO / "benchmarks" / ".cache" / "classifiers")
    parser.add_argument("--extra-sweep", action="store_true", help="also time the basic launcher with threads 1")
    parser.add_argument("--sweep-timeout", type=float, default=180.0, help="seconds per sweep before it is killed")
    parser.add_argument("--job-timeout", type=float, default=480.0, help="seconds per single job")
    parser.add_argument(
        "--full-sweep-args", nargs="*", default=[], help="overrides for the full_sweep section (default: none)"
    )
    parser.add_argument("--full-sweep-timeout", type=float, default=1800.0, help="seconds before it is killed")
    parser.add_argument("--keep-tmp", action="store_true", help="keep the temporary working directories")
    parser.add_argument("--render", action="store_true", help="only rewrite --out from the results.json beside it")
    parser.add_argument(
        "--merge", action="store_true", help="keep the other sections of an existing results.json beside --out"
    )
    args = parser.parse_args(argv)
    args.sections = [name.strip() for name in args.only.split(",") if name.strip()]
    unknown = set(args.sections) - set(ALL_SECTIONS)
    if unknown:
        parser.error(f"unknown sections {sorted(unknown)}; choose from {','.join(ALL_SECTIONS)}")
    if args.repeats is None:
        args.repeats = 2 if args.quick else 5
    args.data_root = args.data_root.resolve()
    args.classifier_cache = args.classifier_cache.resolve()
    return args


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    if args.render:
        write_markdown(json.loads((args.out.parent / "results.json").read_text()), args.out)
        print(f"rewrote {args.out}")
        return
    torch.set_num_threads(args.threads)
    began, started, load_start = time.perf_counter(), now_iso(), loadavg()
    bench = Bench(args)
    import torchvision

    results = bench.results
    results.update({"argv": argv, "quick": args.quick, "repeats": args.repeats})
    previous = args.out.parent / "results.json"
    if args.merge and previous.exists():
        old = json.loads(previous.read_text())
        results["sections"] = {k: v for k, v in old["sections"].items() if k not in args.sections}
        for section in results["sections"].values():  # kept sections say when, by what and on which code
            section.setdefault("measured", measured_by(old["machine"]["date"], old["argv"], old["machine"]["git"]))
    for name in ALL_SECTIONS:
        if name not in args.sections:
            continue
        print(f"[{datetime.datetime.now():%H:%M:%S}] {name} (load {loadavg():.2f})", flush=True)
        start = time.perf_counter()
        try:
            results["sections"][name] = getattr(bench, name)()
        except Exception:
            traceback.print_exc()
            results["sections"][name] = {"error": traceback.format_exc()}
        results["sections"][name]["section_s"] = time.perf_counter() - start
        results["sections"][name]["measured"] = measured_by(started, argv, git_state())
        assert torch.get_num_threads() == args.threads, "a section changed torch's thread count"
    loads = bench.loads or [load_start]
    results["machine"] = {
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
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_markdown(results, args.out)
    (args.out.parent / "results.json").write_text(json.dumps(results, indent=1, default=str))
    if not args.keep_tmp:
        shutil.rmtree(bench.tmp, ignore_errors=True)
    print(f"wrote {args.out} and {args.out.parent / 'results.json'} in {results['machine']['total_s'] / 60:.1f} min")


if __name__ == "__main__":
    main()
