"""Stop signals, sent for real to real processes: each ends its job like Ctrl-C and leaves an honest record."""

import contextlib
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
from mlflow.tracking import MlflowClient

from tests.conftest import REPO, experiment_runs, make_mnist_like
from vae_sweep.core.signals import Stopped


def python(code: str, timeout: int = 60) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], env=env, capture_output=True, text=True, timeout=timeout
    )


def test_exit_codes_follow_the_shells_convention():
    assert [Stopped(s).exit_code for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)] == [130, 143, 129]
    assert str(Stopped(signal.SIGTERM)) == "stopped by SIGTERM"


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP, signal.SIGINT])
def test_a_stop_signal_raises_once_inside_a_stoppable_section_and_is_remembered_between_them(signum):
    result = python(f"""
        import os, signal, time
        from vae_sweep.core import signals
        signals.install()  # as a launcher's worker process does
        try:
            with signals.stoppable():
                os.kill(os.getpid(), {int(signum)})
                time.sleep(5)
        except signals.Stopped as stop:
            print("raised", stop.exit_code)
        os.kill(os.getpid(), {int(signum)})  # a second one: ignored while the first stop is carried out
        print("still here")
        try:
            with signals.stoppable():
                print("not reached")
        except signals.Stopped:
            print("a new section stops at once")
    """)
    assert result.stdout.split("\n")[:3] == [f"raised {128 + signum}", "still here", "a new section stops at once"]


def test_a_section_gives_the_handlers_it_replaced_back():
    result = python("""
        import os, signal
        from vae_sweep.core import signals
        try:
            with signals.stoppable():
                os.kill(os.getpid(), signal.SIGTERM)
        except signals.Stopped:
            print(signal.getsignal(signal.SIGTERM) == signal.SIG_DFL, signal.getsignal(signal.SIGINT).__name__)
        with signals.stoppable():
            print("a stop raised is not raised again")
    """)
    assert result.stdout.split("\n")[:2] == ["True default_int_handler", "a stop raised is not raised again"]


def test_a_signal_waits_for_a_held_section_and_an_ignored_one_stays_ignored():
    result = python("""
        import os, signal
        from vae_sweep.core import signals
        signal.signal(signal.SIGHUP, signal.SIG_IGN)  # as under nohup
        try:
            with signals.stoppable():
                os.kill(os.getpid(), signal.SIGHUP)
                with signals.held():
                    os.kill(os.getpid(), signal.SIGTERM)
                    print("held section finished")
                print("not reached")
        except signals.Stopped as stop:
            print(stop)
    """)
    assert result.stdout.split("\n")[:2] == ["held section finished", "stopped by SIGTERM"]


# ---- real jobs --------------------------------------------------------------------------------------------------


@pytest.fixture
def stop_data(tmp_path_factory):
    """Big enough that an epoch lasts long enough to stop a job in the middle of it."""
    return make_mnist_like(tmp_path_factory.mktemp("stop"), train=6000, test=500)


JOB = ("training.epochs=3", "eval.enabled=false", "tracking.figures=false")
# Loky starts the second worker's job ~3 s after the first's; at ~0.9 s an epoch on a quiet machine, three epochs ended
# the first job before the second's first checkpoint: six leave both jobs checkpointed and running together.
SWEEP = ("-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "model.latent=2,3", "training.epochs=6",
         "eval.enabled=false", "tracking.figures=false")  # fmt: skip


def launch(workdir: Path, data: Path, *args: str, python_code: str | None = None) -> subprocess.Popen:
    """`python -m vae_sweep ARGS` in workdir, or the same command run by `python_code` first."""
    env = dict(os.environ, PYTHONPATH=str(REPO), VAE_SWEEP_DATA_DIR=str(data))
    env.pop("MLFLOW_TRACKING_URI", None)
    command = ["-c", python_code, *args] if python_code else ["-m", "vae_sweep", *args]
    return subprocess.Popen(
        [sys.executable, *command], cwd=workdir, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def finish(process: subprocess.Popen, timeout: int = 300) -> tuple[str, str]:
    try:
        return process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        for pid in [process.pid, *descendants(process.pid)]:  # workers left behind would hold the pipes open
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        output, errors = process.communicate()
        pytest.fail(f"the process did not stop within {timeout} s:\n{output[-3000:]}\n{errors[-3000:]}")


def wait_for_checkpoints(workdir: Path, process: subprocess.Popen, count: int = 1, timeout: int = 300) -> None:
    deadline = time.monotonic() + timeout
    while len(list((workdir / "checkpoints").glob("*.pt"))) < count:
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            output, errors = process.communicate()
            pytest.fail(f"{count} checkpoint(s) never appeared (exit {process.returncode}):\n{output}\n{errors}")
        time.sleep(0.05)


def runs(workdir: Path) -> tuple[MlflowClient, list]:
    return experiment_runs(f"sqlite:///{workdir}/mlflow.db")


def steps(client: MlflowClient, run) -> list[int]:
    return sorted(metric.step for metric in client.get_metric_history(run.info.run_id, "loss/test"))


def assert_resumes_to_finished(workdir: Path, data: Path, *args: str, count: int = 1) -> None:
    """The same command again continues every stopped run into one FINISHED run with every epoch once."""
    before = {run.info.run_id: run.data.tags["torch.threads"] for run in runs(workdir)[1]}
    output, errors = finish(launch(workdir, data, *args))
    assert "resuming after epoch" in output + errors, errors[-3000:]
    client, finished = runs(workdir)
    assert len(finished) == count and {run.info.status for run in finished} == {"FINISHED"}, errors[-3000:]
    for run in finished:
        assert steps(client, run) == list(range(1, int(run.data.params["training.epochs"]) + 1))
        assert run.data.tags["torch.threads"] == before[run.info.run_id]
    assert not list((workdir / "checkpoints").glob("*"))


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP])
def test_sigterm_and_sighup_stop_a_run_like_ctrl_c_and_the_same_command_resumes_it(workdir, stop_data, signum):
    process = launch(workdir, stop_data, *JOB)
    wait_for_checkpoints(workdir, process)
    process.send_signal(signum)
    _, errors = finish(process, timeout=120)
    assert process.returncode == 128 + signum, errors[-3000:]
    assert f"interrupted by {signal.Signals(signum).name}" in errors and "Traceback" not in errors
    assert [run.info.status for run in runs(workdir)[1]] == ["KILLED"]
    assert len(list((workdir / "checkpoints").glob("*.pt"))) == 1
    assert_resumes_to_finished(workdir, stop_data, *JOB)


# The job as `python -m vae_sweep` runs it, stopped by SIGTERM as epoch 2 is reported, and sent a second SIGTERM as the
# checkpoint of that stop is being written (checkpoint_every=10: epochs 1-2 are not saved until the stop saves them).
SECOND_SIGNAL_DURING_THE_WRITE = """
import os, runpy, signal, sys
import torch
from vae_sweep.jobs import task

torch_save, report_epoch = torch.save, task.ContinuingSink.log_epoch

def save(state, path, *args, **kwargs):
    os.kill(os.getpid(), signal.SIGTERM)
    return torch_save(state, path, *args, **kwargs)

def log_epoch(self, epoch, metrics):
    report_epoch(self, epoch, metrics)
    if epoch == 2:
        torch.save = save
        os.kill(os.getpid(), signal.SIGTERM)

task.ContinuingSink.log_epoch = log_epoch
sys.argv[0] = "vae_sweep"
runpy.run_module("vae_sweep", run_name="__main__", alter_sys=True)
"""


@pytest.mark.slow
def test_a_second_signal_during_the_checkpoint_write_leaves_it_whole_and_no_temporary_file(workdir, stop_data):
    args = (*JOB, "training.checkpoint_every=10")
    process = launch(workdir, stop_data, *args, python_code=SECOND_SIGNAL_DURING_THE_WRITE)
    _, errors = finish(process)
    assert process.returncode == 143, errors[-3000:]
    (saved,) = (workdir / "checkpoints").iterdir()  # the checkpoint alone: no temporary file beside it
    assert saved.suffix == ".pt" and len(torch.load(saved, weights_only=True)["history"]) == 2
    assert [run.info.status for run in runs(workdir)[1]] == ["KILLED"]
    output, errors = finish(launch(workdir, stop_data, *args))
    assert "resuming after epoch 2" in output + errors
    assert [run.info.status for run in runs(workdir)[1]] == ["FINISHED"]


def descendants(pid: int) -> set[int]:
    """The processes `pid` started, and theirs (Linux's /proc)."""
    found = set()
    for task in Path(f"/proc/{pid}/task").glob("*"):
        children = (task / "children").read_text().split() if (task / "children").exists() else []
        for child in map(int, children):
            found |= {child} | descendants(child)
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="finds the worker processes in Linux's /proc")
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_to_the_sweeps_own_process_stops_its_joblib_workers_cleanly(workdir, stop_data, signum):
    sweep = launch(workdir, stop_data, *SWEEP)
    wait_for_checkpoints(workdir, sweep, count=2)
    workers = descendants(sweep.pid)
    assert workers
    sweep.send_signal(signum)  # to the sweep's process alone, as `kill` or a scheduler sends it
    _, errors = finish(sweep, timeout=120)
    assert sweep.returncode == 128 + signum, errors[-3000:]
    assert f"interrupted by {signal.Signals(signum).name}" in errors and "Traceback" not in errors
    deadline = time.monotonic() + 30
    while any(map(alive, workers)) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not any(map(alive, workers)), "a worker outlived the sweep"
    assert sorted(run.info.status for run in runs(workdir)[1]) == ["KILLED", "KILLED"]
    assert_resumes_to_finished(workdir, stop_data, *SWEEP, count=2)
