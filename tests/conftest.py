import copy
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace
from typing import Iterator

# xdist's workers share the machine's cores: each takes its share as torch threads, and so do the processes its tests
# start (a test that needs another count sets OMP_NUM_THREADS itself). With more threads than that, OpenMP's threads
# spin-wait on cores the other workers hold, and burn the CPU time the suite is short of.
if os.environ.get("PYTEST_XDIST_WORKER_COUNT"):
    _share = max(1, len(os.sched_getaffinity(0)) // int(os.environ["PYTEST_XDIST_WORKER_COUNT"]))
    os.environ.setdefault("OMP_NUM_THREADS", str(_share))

# A shell without job control (a script's `pytest &`, some CI runners) starts its background commands with SIGINT
# ignored, and every process the tests start would inherit that: Python then never raises KeyboardInterrupt, and the
# tests of Ctrl-C would fail for the way they were launched. Restored here, as a terminal's process has it; nothing
# can press Ctrl-C at such a process anyway. (An ignored SIGHUP, under nohup, is left as it was asked for.)
if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

import numpy as np
import pytest
from mlflow.entities import Run
from mlflow.tracking import MlflowClient
from omegaconf import DictConfig, OmegaConf, open_dict

from vae_sweep import names

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"

# xdist hands whole files to its workers, each a new file once it has two tests left, in the order of this list and then
# by test count (`--no-loadscope-reorder` keeps it): the longest files first (per-file wall time, 2026-12-06). By test
# count alone, as xdist orders them, a long file could start last while the other worker had nothing left to take: in
# a simulation of that scheduler over one run's measured durations, each varied by 15%, one worker sat idle at the end
# for 50 s or more in one run of ten (the slowest 538 s against a median of 439 s); in this order, 4 s (458 s, 433 s).
LONGEST_FILES = (
    "test_classifier.py", "test_search.py", "test_scale.py", "test_signals.py", "test_tracking.py",
    "test_reproduce.py", "test_resume.py", "test_report.py", "test_team_server.py", "test_imports.py",
)  # fmt: skip


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    missing = [name for name in LONGEST_FILES if not (REPO / "tests" / name).exists()]
    if missing:
        raise pytest.UsageError(f"tests/conftest.py LONGEST_FILES names files that do not exist: {missing}")
    rank = {name: place for place, name in enumerate(LONGEST_FILES)}
    counts = Counter(item.path.name for item in items)
    # A stable sort: each file's tests keep their order, so its module-scoped fixtures are set up once.
    items.sort(key=lambda item: (rank.get(item.path.name, len(rank)), -counts[item.path.name], item.path.name))


def write_idx(path: Path, array: np.ndarray) -> None:
    """An uncompressed IDX file of unsigned bytes, as torchvision reads it."""
    header = bytes([0, 0, 8, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    path.write_bytes(header + array.astype(np.uint8).tobytes())


def make_mnist_like(root: Path, train: int = 600, test: int = 200, folder: str = "MNIST", seed: int = 0) -> Path:
    """Ten blurry class prototypes plus noise: learnable in a few epochs, so losses must fall."""
    rng = np.random.default_rng(seed)
    prototypes = rng.random((10, 28, 28)) ** 3
    raw = root / folder / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for prefix, count in (("train", train), ("t10k", test)):
        labels = np.arange(count) % 10
        images = prototypes[labels] + 0.15 * rng.standard_normal((count, 28, 28))
        write_idx(raw / f"{prefix}-images-idx3-ubyte", np.clip(images * 255, 0, 255))
        write_idx(raw / f"{prefix}-labels-idx1-ubyte", labels)
    return root


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("data")
    make_mnist_like(root)
    make_mnist_like(root, folder="FashionMNIST", seed=1)
    return root


FRESH = "fresh_workdir"


@pytest.fixture(scope="session")
def shared_cache(tmp_path_factory) -> Path:
    """The per-user cache of one test process: each dataset's FID classifier is trained there once (~4 s), as on a
    user's machine, and later jobs load it."""
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="session")
def blank_store(tmp_path_factory) -> Path:
    """An MLflow SQLite store with its tables made and nothing in them: MLflow's migrations cost ~2 s per new store."""
    folder = tmp_path_factory.mktemp("blank-store")
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(folder)  # MLflow places the default experiment's artifacts under the working directory
        MlflowClient(f"sqlite:///{folder / 'mlflow.db'}").search_experiments()
    return folder / "mlflow.db"


@pytest.fixture
def workdir(request, tmp_path, tiny_data, monkeypatch, shared_cache, blank_store) -> Path:
    """A project root for CLI runs: outputs, multirun/ and mlflow.db land here, the FID classifier's cache in the
    test process's own (never the real user's). It starts with an empty store and the classifiers earlier tests
    trained; a test marked `fresh_workdir` starts as on a new machine: no store and an empty cache of its own."""
    fresh = request.node.get_closest_marker(FRESH) is not None
    monkeypatch.setenv("VAE_SWEEP_DATA_DIR", str(tiny_data))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache" if fresh else shared_cache))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    if not fresh:
        shutil.copy(blank_store, tmp_path / "mlflow.db")
    return tmp_path


def run_cli(module: str, *args: str, cwd: Path, timeout: int = 600) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(REPO), HYDRA_FULL_ERROR="")
    env.pop("HYDRA_FULL_ERROR")
    return subprocess.run(
        [sys.executable, "-m", module, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )


@pytest.fixture
def cli_in_process(monkeypatch, capsys):
    """`python -m vae_sweep ARGS` from `cwd`, run in this process: for commands that end before training, where a
    subprocess would only add seconds of imports. Returns what run_cli does (exit code, stdout, stderr)."""
    from hydra.core.global_hydra import GlobalHydra

    from vae_sweep.__main__ import main
    from vae_sweep.cli import main_with_clean_errors

    def run(*args: str, cwd: Path) -> subprocess.CompletedProcess:
        monkeypatch.chdir(cwd)
        monkeypatch.setattr(sys, "argv", ["vae_sweep", *args])
        monkeypatch.setenv("HYDRA_FULL_ERROR", "")  # then removed: main_with_clean_errors sets it, undo clears it
        monkeypatch.delenv("HYDRA_FULL_ERROR")
        GlobalHydra.instance().clear()
        capsys.readouterr()
        try:
            main_with_clean_errors(main)
            code = 0
        except SystemExit as stop:
            code = stop.code if isinstance(stop.code, int) else 1
        finally:
            GlobalHydra.instance().clear()
        out = capsys.readouterr()
        return subprocess.CompletedProcess(["vae_sweep", *args], code, out.out, out.err)

    return run


def experiment_runs(
    uri: str, experiment: str = "vae_sweep", filter_string: str = "", parents: bool = False
) -> tuple[MlflowClient, list[Run]]:
    """A client on the store and the job runs of one of its experiments (matching an MLflow filter, if given); with
    `parents`, the sweeps' parent runs instead; none where the store has no such experiment."""
    client = MlflowClient(uri)
    found = client.get_experiment_by_name(experiment)
    runs = client.search_runs([found.experiment_id], filter_string) if found else []
    return client, [run for run in runs if (names.TAG_SWEEP_KIND in run.data.tags) == parents]


def training_settings(**changes) -> SimpleNamespace:
    """The `training` config node that fit() reads, small by default, for tests that call it directly."""
    values = dict(
        epochs=3, batch_size=64, eval_batch_size=100, seed=0, eval_seed=7, progress=False, beta=1.0,
        kl_warmup_epochs=0, grad_clip=0.0,
    )  # fmt: skip
    return SimpleNamespace(**{**values, **changes})


MNIST_SHAPE = (1, 28, 28)


def small_model(latent: int = 3, hidden=(64,), shape=MNIST_SHAPE, **keys):
    """A model as `model.latent=... model.hidden=[...]` (and any other `model` keys) would build it."""
    from vae_sweep.core.models import build_model

    return build_model({"name": "mlp", "latent": latent, "hidden": list(hidden), **keys}, shape)


def fit_plainly(model, optimizer, train, test, settings, sink, dynamic=False, start=None, **hooks):
    """fit() with a test split, a `training`-like node and hooks by name, as the tests call it."""
    from vae_sweep.core.train import FitSettings, Hooks, fit

    return fit(model, optimizer, train, {"test": test}, FitSettings.of(settings, dynamic), Hooks(sink, **hooks), start)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="session")
def postgres_storage() -> Iterator[str]:
    """One PostgreSQL server for the session's tests of a PostgreSQL storage (skipped where none can start): the
    URL of its empty database; tests on it use their own study names."""
    from tests import postgres

    reason = postgres.unavailable_reason()
    if reason:
        pytest.skip(reason)
    with postgres.postgres_server(free_port(), "optuna") as storage:
        yield storage


@contextmanager
def serve_mlflow(
    backend_uri: str, artifacts: Path, log: Path, team_folder: Path | None = None, admin_password: str = ""
) -> Iterator[str]:
    """`mlflow server` on a free loopback port, up once /health answers; yields its URI.

    With `team_folder`, the team's server that asks for a login, started as the README says
    (scripts/team_server.sh, its accounts in that folder, the admin's password `admin_password`).
    """
    port = free_port()
    options = [
        "--host", "127.0.0.1", "--port", str(port), "--workers", "1", "--backend-store-uri", backend_uri,
        "--artifacts-destination", str(artifacts),
    ]  # fmt: skip
    if team_folder is None:
        command, env = [sys.executable, "-m", "mlflow", "server", *options], None
    else:
        command = ["bash", str(REPO / "scripts" / "team_server.sh"), str(team_folder), *options]
        env = dict(os.environ, PYTHON=sys.executable, MLFLOW_AUTH_ADMIN_PASSWORD=admin_password)
    uri = f"http://127.0.0.1:{port}"
    with open(log, "w") as output:
        server = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT, env=env)
    try:
        deadline = time.monotonic() + 180
        while True:
            try:
                urllib.request.urlopen(f"{uri}/health", timeout=2).close()
                break
            except OSError:
                assert server.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
                time.sleep(0.5)
        yield uri
    finally:
        server.terminate()
        server.wait(timeout=30)


def compose_job(root: Path, *overrides: str) -> DictConfig:
    """The config `python -m vae_sweep OVERRIDES` would run with, launched from `root`, ready for an in-process job.

    As lightning-hydra-template's tests do: compose with Hydra's own config, fill in what Hydra fills in at launch
    (its run directory) and make it the current Hydra config.
    """
    from hydra import compose, initialize_config_module
    from hydra.core.hydra_config import HydraConfig

    from vae_sweep.config import register_configs
    from vae_sweep.core.models import schemas

    register_configs(schemas())
    with initialize_config_module("vae_sweep.conf", version_base="1.3"):
        cfg = compose("config", overrides=list(overrides), return_hydra_config=True)
    output_dir = root / "outputs" / "in-process"
    with open_dict(cfg):
        cfg.hydra.runtime.cwd = str(root)
        cfg.hydra.runtime.output_dir = str(output_dir)
        cfg.hydra.run.dir = str(output_dir)
        cfg.hydra.job.num = 0
    HydraConfig.instance().set_config(cfg)
    # What Hydra's run_job writes into a job folder; jobs log it as the run's config.
    hydra_dir = output_dir / ".hydra"
    hydra_dir.mkdir(parents=True, exist_ok=True)
    task = copy.deepcopy(cfg)
    with open_dict(task):
        del task["hydra"]
    OmegaConf.save(task, hydra_dir / "config.yaml")
    OmegaConf.save({"hydra": cfg.hydra}, hydra_dir / "hydra.yaml")
    OmegaConf.save(OmegaConf.create(list(overrides)), hydra_dir / "overrides.yaml")
    return cfg


def train_in_process(root: Path, *overrides: str) -> dict[str, float]:
    """One job as `python -m vae_sweep OVERRIDES` from `root` would train it, but in this process; its final metrics."""
    from vae_sweep.jobs.task import run

    cfg = compose_job(root, *overrides)
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(root)
        return run(cfg)
