"""Scale-out: threads per job, parallel and submitit launchers, and a team MLflow server on PostgreSQL."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from tests import postgres
from tests.conftest import REPO, experiment_runs, run_cli, serve_mlflow
from tests.test_resume import runs_of, start
from tests.test_tracking import check_complete_run
from vae_sweep import names
from vae_sweep.config import register_configs
from vae_sweep.core.models import schemas
from vae_sweep.jobs.runtime import threads_per_job
from vae_sweep.report import main as report_command

GRID = ["model.latent=2,3", "training.epochs=1,2", "model.hidden=[32]"]


@pytest.mark.parametrize(
    ("launcher", "cores", "threads"),
    [
        ({"n_jobs": 2}, 8, 4),
        ({"n_jobs": 3}, 8, 2),
        ({"n_jobs": 16}, 8, 1),
        ({"n_jobs": -1}, 8, 1),
        ({"n_jobs": -2}, 8, 1),
        ({"n_jobs": -7}, 8, 4),
        ({"cpus_per_task": 4, "timeout_min": 60}, 64, 4),
        ({"cpus_per_task": None, "timeout_min": 60}, 64, None),
        ({"_target_": "hydra._internal.core_plugins.basic_launcher.BasicLauncher"}, 8, None),
    ],
)
def test_threads_per_job_shares_the_cores_among_parallel_jobs(launcher, cores, threads):
    assert threads_per_job(launcher, cores) == threads
    assert threads_per_job(OmegaConf.create(launcher), cores) == threads


def hydra_launcher(*overrides: str):
    register_configs(schemas())
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        return compose("config", overrides=list(overrides), return_hydra_config=True).hydra.launcher


def test_each_launcher_option_gives_its_jobs_their_share_of_threads():
    assert threads_per_job(hydra_launcher(), 16) is None
    assert threads_per_job(hydra_launcher("hydra/launcher=joblib", "hydra.launcher.n_jobs=4"), 16) == 4
    assert threads_per_job(hydra_launcher("hydra/launcher=submitit_local"), 16) is None
    slurm = hydra_launcher("hydra/launcher=slurm", "hydra.launcher.partition=gpu")
    assert (slurm.partition, slurm.cpus_per_task, slurm.gpus_per_node, slurm.mem_gb) == ("gpu", 4, 0, 8)
    assert threads_per_job(slurm, 16) == 4


# In a fresh process: 2 intra-op threads, then a parallel product of a denormal float (made from its bits) and 1e30:
# 0 in a thread that treats denormal inputs as zero, 1.5e-9 in one that does not. Prints the nonzero products.
DENORMALS_LEFT = """
import sys, torch
from vae_sweep.jobs.runtime import set_cpu_threads
if sys.argv[1] == "late":
    torch.set_num_threads(2)
    torch.ones(1 << 20).mul(2.0)  # a parallel operation starts the intra-op threads
set_cpu_threads(2)
denormal = torch.full((1 << 20,), 1 << 20, dtype=torch.int32).view(torch.float32)
print(int((denormal.mul(1e30) != 0).sum()))
"""


@pytest.mark.parametrize("when, flushed_everywhere", [("first", True), ("late", False)])
def test_cpu_threads_set_first_all_flush_denormals(when, flushed_everywhere):
    result = subprocess.run([sys.executable, "-c", DENORMALS_LEFT, when], capture_output=True, text=True, cwd=REPO)
    assert result.returncode == 0, result.stderr
    left = int(result.stdout)
    # Set late, only the main thread's share is flushed: what the job avoids by setting it first.
    assert (left == 0) == flushed_everywhere, left


def test_seed_experiment_runs_its_three_jobs_side_by_side_unless_another_launcher_is_named():
    side_by_side = hydra_launcher("experiment=seed")
    assert side_by_side._target_.endswith("JoblibLauncher") and side_by_side.n_jobs == 3
    assert threads_per_job(side_by_side, 2) == 1 and threads_per_job(side_by_side, 12) == 4
    assert hydra_launcher("experiment=seed", "hydra/launcher=basic")._target_.endswith("BasicLauncher")
    assert hydra_launcher("experiment=seed", "hydra/launcher=slurm").cpus_per_task == 4
    assert hydra_launcher("experiment=seed", "hydra.launcher.n_jobs=2").n_jobs == 2


@pytest.mark.parametrize("preset", sorted(path.stem for path in (REPO / "conf" / "experiment").glob("*.yaml")))
def test_every_preset_runs_one_job_at_a_time_on_request(preset):
    # A preset's launcher settings belong in a launcher option, or naming another launcher fails to compose.
    assert hydra_launcher(f"experiment={preset}", "hydra/launcher=basic")._target_.endswith("BasicLauncher")


def test_families_runs_two_jobs_at_a_time():
    assert hydra_launcher("experiment=families").n_jobs == 2


def test_postgres_is_found_in_debians_versioned_folders_or_reported_missing(tmp_path, monkeypatch):
    monkeypatch.setattr(postgres.shutil, "which", lambda name: None)
    monkeypatch.setattr(postgres, "DEBIAN_VERSIONS", tmp_path)
    assert postgres.unavailable_reason().startswith("PostgreSQL is not installed")
    for version in ("9", "15", "16"):
        (tmp_path / version / "bin").mkdir(parents=True)
        (tmp_path / version / "bin" / "initdb").touch()
    assert postgres.binaries() == tmp_path / "16" / "bin"


@pytest.fixture(scope="module")
def team_server(tmp_path_factory, postgres_storage) -> Iterator[tuple[str, Path]]:
    """The team's MLflow server as the README starts it: backed by PostgreSQL, asking for a login, which every job
    started from here gives as the admin. Yields its URI and artifact folder."""
    folder = tmp_path_factory.mktemp("team-server")
    password = "admin-pass-5b8d"
    # Its own database on the session's PostgreSQL server: a cluster of its own would only add an initdb and a start.
    database = postgres.create_database(postgres_storage, "mlflow")
    with serve_mlflow(database, folder / "artifacts", folder / "server.log", folder / "accounts", password) as uri:
        with pytest.MonkeyPatch.context() as patch:
            patch.setenv("MLFLOW_TRACKING_USERNAME", "admin")
            patch.setenv("MLFLOW_TRACKING_PASSWORD", password)
            yield uri, folder / "artifacts"


def sweep(workdir: Path, server: str, experiment: str, *overrides: str) -> subprocess.CompletedProcess:
    """A sweep tracked on the team server, which stores the artifacts; the quality metrics are left out, as nothing
    here checks them."""
    return run_cli(
        "vae_sweep", "-m", *overrides, "eval.enabled=false", f"tracking.uri={server}",
        f"tracking.experiment={experiment}", cwd=workdir,
    )  # fmt: skip


def check_grid_finished(server: str, experiment: str, artifacts: Path) -> None:
    """Four complete runs, one per grid point, with their artifacts stored by the server."""
    client, runs = experiment_runs(server, experiment)
    points = sorted((run.data.params["model.latent"], run.data.params["training.epochs"]) for run in runs)
    assert points == [("2", "1"), ("2", "2"), ("3", "1"), ("3", "2")]
    assert sorted(run.data.tags["sweep.job"] for run in runs) == ["0", "1", "2", "3"]
    for run in runs:
        check_complete_run(client, run, epochs=int(run.data.params["training.epochs"]))
        assert run.info.artifact_uri.startswith("mlflow-artifacts:")
        assert list(artifacts.rglob(f"{run.info.run_id}/artifacts/checkpoint/checkpoint.pt"))


@pytest.mark.slow
def test_a_submitit_sweep_tracked_on_postgres_finishes_every_run(workdir, team_server, monkeypatch, capsys):
    server, artifacts = team_server
    result = sweep(workdir, server, "submitit_local", "hydra/launcher=submitit_local", *GRID)
    assert result.returncode == 0, result.stderr
    check_grid_finished(server, "submitit_local", artifacts)
    (sweep_dir,) = workdir.glob("multirun/*/*")
    assert len(list((sweep_dir / ".submitit").glob("*/*_result.pkl"))) == 4
    # In this process: the report reads the store, and a process of its own would only add seconds of imports.
    monkeypatch.chdir(workdir)
    options = ["--experiment", "submitit_local", "--all", "--no-log", "--out", str(workdir / "report")]
    report = report_command(["--tracking-uri", server, *options])
    assert report == 0, capsys.readouterr().err


@pytest.mark.slow
def test_a_joblib_sweep_tracked_on_postgres_finishes_every_run(workdir, team_server):
    server, artifacts = team_server
    result = sweep(workdir, server, "joblib", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", *GRID)
    assert result.returncode == 0, result.stderr
    check_grid_finished(server, "joblib", artifacts)


@pytest.mark.slow
def test_a_failing_submitit_job_is_failed_and_ends_the_sweep_non_zero(workdir, team_server):
    server, _ = team_server
    result = sweep(
        workdir, server, "submitit_failure", "hydra/launcher=submitit_local", "optimizer.lr=1e-3,1e4",
        "training.epochs=1", "model.hidden=[32]", "tracking.figures=false",
    )  # fmt: skip
    assert result.returncode == 1
    assert "1 of 2 jobs failed" in result.stderr and "Non-finite loss in epoch 1, batch" in result.stderr
    _, runs = experiment_runs(server, "submitit_failure")
    status = {run.data.params["optimizer.lr"]: run.info.status for run in runs}
    assert status == {"0.001": "FINISHED", "10000.0": "FAILED"}
    failed = next(run for run in runs if run.info.status == "FAILED")
    assert failed.data.tags["error"].startswith("NonFiniteLoss: Non-finite loss in epoch 1")


def wait_for_training_pid(workdir: Path, process: subprocess.Popen, epochs: str, timeout: float = 300) -> int:
    """The pid of the job training `epochs` epochs, once it has logged an epoch."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and process.poll() is None:
        # Submitted jobs mean the store exists: opening it while the sweep creates it would race.
        if list(workdir.glob("multirun/*/*/.submitit")):
            client, runs = runs_of(workdir)
            for run in runs:
                if run.data.params.get("training.epochs") == epochs and names.TAG_PID in run.data.tags:
                    if client.get_metric_history(run.info.run_id, names.TRAIN_LOSS):
                        return int(run.data.tags[names.TAG_PID])
        time.sleep(0.2)
    process.kill()
    output, errors = process.communicate()
    pytest.fail(f"the job never logged an epoch (exit {process.returncode}):\n{output}\n{errors}")


@pytest.mark.slow
def test_a_submitit_job_killed_outright_is_failed_and_the_other_jobs_finish(workdir, tiny_data):
    process = start(
        workdir, tiny_data, "-m", "hydra/launcher=submitit_local", "training.epochs=1,100000", "model.hidden=[32]",
        "eval.enabled=false", "tracking.figures=false",
    )  # fmt: skip
    try:
        os.kill(wait_for_training_pid(workdir, process, "100000"), signal.SIGKILL)
        output, errors = process.communicate(timeout=300)
    finally:
        process.kill()
    assert process.returncode == 1, errors
    assert "1 of 2 jobs failed" in errors and "killed without a result" in errors
    assert "Traceback" not in errors and "UncompletedJobError" not in errors.split("failed")[0]
    _, runs = runs_of(workdir)
    status = {run.data.params["training.epochs"]: run.info.status for run in runs}
    assert status == {"1": "FINISHED", "100000": "FAILED"}
    killed = next(run for run in runs if run.info.status == "FAILED")
    assert killed.data.tags["error"].startswith("killed without a result")
    assert killed.info.end_time is not None


def test_a_local_job_gone_without_a_result_is_failed_at_once(tmp_path, monkeypatch):
    from submitit.core import core
    from submitit.local.local import LocalJob

    from hydra_plugins.vae_sweep_sweeper.killed_jobs import _Outcome

    def no_waiting(seconds):
        raise AssertionError(f"waited {seconds} s for the result file of a job whose process had ended")

    monkeypatch.setattr(core._time, "sleep", no_waiting)
    ended = subprocess.Popen(["true"])
    ended.wait()
    killed = []
    job = LocalJob(tmp_path, "1", process=ended)
    outcome = _Outcome(job, lambda *args: killed.append(args) or "failed", ["a=1"], 7)
    assert outcome.results() == ["failed"]
    ((overrides, job_num, error),) = killed
    assert (overrides, job_num) == (["a=1"], 7) and "has not produced any output" in str(error)
