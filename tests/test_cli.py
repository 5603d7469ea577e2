"""End-to-end: `python -m vae_sweep` as a user runs it, on tiny generated IDX files."""

import csv
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml


def job_dirs(workdir: Path) -> list[Path]:
    return sorted(p.parent.parent for p in workdir.glob("multirun/*/*/*/.hydra/config.yaml"))


def read_history(job: Path) -> list[dict[str, float]]:
    with open(job / "history.csv") as handle:
        return [{k: float(v) for k, v in row.items()} for row in csv.DictReader(handle)]


@pytest.fixture
def own_threads():
    """Jobs trained in this process set its torch threads; the worker's later tests get theirs back."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


# The sweeps below train in this process: what they check is the jobs' folders, which a process of its own would only
# reach after seconds of imports.
@pytest.mark.slow
def test_multirun_trains_one_job_per_sweep_point(workdir, cli_in_process, own_threads):
    result = cli_in_process(
        "-m",
        "model.latent=2,3",
        "training.epochs=1,2",
        "model.hidden=[64]",
        "tracking.enabled=false",
        "eval.enabled=false",
        "tracking.figures=false",
        cwd=workdir,
    )
    assert result.returncode == 0, result.stderr
    jobs = job_dirs(workdir)
    assert len(jobs) == 4
    seen = set()
    for job in jobs:
        cfg = yaml.safe_load((job / ".hydra" / "config.yaml").read_text())
        latent, epochs = cfg["model"]["latent"], cfg["training"]["epochs"]
        seen.add((latent, epochs))
        history = read_history(job)
        assert [row["epoch"] for row in history] == list(range(1, epochs + 1))
        for row in history:
            assert 0 < row["loss/kl/test"] and 0 < row["loss/recon/test"] < 784 * 0.7  # below a coin flip per pixel
        assert history[-1]["loss/test"] <= history[0]["loss/test"]
        assert (job / "checkpoint.pt").exists() and (job / "train.log").exists()
    assert seen == {(2, 1), (2, 2), (3, 1), (3, 2)}


@pytest.mark.slow
def test_seed_experiment_is_exactly_three_jobs(workdir, cli_in_process, own_threads):
    result = cli_in_process(
        "-m",
        "experiment=seed",
        # One after another here rather than in three joblib workers, each paying its imports: the jobs are the
        # sweeper's, whichever launcher runs them (test_scale checks the experiment's own launcher).
        "hydra/launcher=basic",
        "training.epochs=1",
        "model.hidden=[32]",
        "tracking.enabled=false",
        "eval.enabled=false",
        "tracking.figures=false",
        cwd=workdir,
    )
    assert result.returncode == 0, result.stderr
    latents = sorted(
        yaml.safe_load((job / ".hydra/config.yaml").read_text())["model"]["latent"] for job in job_dirs(workdir)
    )
    assert latents == [2, 100, 200]


@pytest.mark.parametrize(
    "override, expected",
    [
        ("model.latent=0", "model.latent: 0; allowed: an integer >= 1"),
        ("model.latent=abc", "Value 'abc' of type 'str' could not be converted to Integer"),
        ("training.epochs=-1", "training.epochs: -1; allowed: an integer >= 1"),
        ("model.foo=1", "Could not override 'model.foo'"),
        ("model=foo", "Could not find 'model/foo'"),
        ("model.activation=gelu", "expected one of [relu, tanh]"),
        ("optimizer.lr=-1", "optimizer.lr: -1.0; allowed: a finite number > 0"),
    ],
)
def test_bad_input_ends_in_one_clear_message(workdir, cli_in_process, override, expected):
    result = cli_in_process(override, "tracking.enabled=false", cwd=workdir)
    assert result.returncode == 1
    assert expected in result.stderr
    assert "Traceback" not in result.stderr
    assert result.stderr.startswith("error: ")


def test_a_bad_sweep_point_stops_the_sweep_before_any_job(workdir, cli_in_process):
    result = cli_in_process("-m", "model.latent=2,0", "tracking.enabled=false", cwd=workdir)
    assert result.returncode == 1
    assert "model.latent: 0" in result.stderr and "sweep point: model.latent=0" in result.stderr
    assert job_dirs(workdir) == []


def test_a_preset_that_sweeps_is_refused_as_one_sweep_point(workdir, cli_in_process):
    # Hydra would run burda_iwae's defaults alone: one config, not its five rows.
    # Scaled down so that, were the point accepted, its jobs would end in seconds.
    scaled = ("optimizer.schedule_pass_scale=0.001", "training.epochs=9", "model.hidden=[16]", "eval.enabled=false")
    result = cli_in_process("-m", "experiment=burda_vae,burda_iwae", *scaled, "tracking.enabled=false", cwd=workdir)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "experiment=burda_iwae is itself a sweep" in result.stderr and "+burda_row=vae_k1" in result.stderr
    assert "experiment=burda_vae is" not in result.stderr
    assert job_dirs(workdir) == []


def test_missing_data_offline_is_one_message(workdir, tmp_path, cli_in_process):
    result = cli_in_process(f"data.root={tmp_path}/empty", "data.download=false", "tracking.enabled=false", cwd=workdir)
    assert result.returncode == 1
    assert result.stderr.startswith("error: mnist data not found in") and "Traceback" not in result.stderr


# The imports' objects frozen or not; an object in a reference cycle that only a garbage collection frees; the exit.
EXIT_WITH_A_CYCLE = """
import atexit, gc, sys
from vae_sweep.cli import collect_only_new_objects
if sys.argv[1] == "frozen":
    collect_only_new_objects()
print("imports frozen", gc.get_freeze_count() > 0)
atexit.register(lambda: print("handler ran", flush=True))
class Loop:
    def __init__(self):
        self.me = self
    def __del__(self):
        print("collected", flush=True)
Loop()
"""


@pytest.mark.parametrize("mode, collected", [("frozen", False), ("plain", True)])
def test_a_command_ends_without_the_final_collection_but_with_its_handlers(mode, collected):
    ended = subprocess.run([sys.executable, "-c", EXIT_WITH_A_CYCLE, mode], capture_output=True, text=True, check=True)
    assert "handler ran" in ended.stdout
    assert ("collected" in ended.stdout) is collected
    assert ("imports frozen True" in ended.stdout) is not collected
