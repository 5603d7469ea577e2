import os
import platform
import signal
import subprocess
import sys
import time
from types import SimpleNamespace

import pytest
import torch

from tests.conftest import (
    REPO,
    experiment_runs,
    fit_plainly,
    make_mnist_like,
    run_cli,
    small_model,
    train_in_process,
    training_settings,
)  # fmt: skip
from vae_sweep import names
from vae_sweep.core.data import load
from vae_sweep.core.train import Start
from vae_sweep.jobs import checkpoint
from vae_sweep.tracking.heartbeat import beating
from vae_sweep.tracking.resume import fingerprint, is_dead
from vae_sweep.tracking.sweeps import reused_runs

CONFIG = {
    "model": {"latent": 2, "hidden": [8]},
    "training": {"seed": 0, "threads": 0, "progress": True},
    "tracking": {"uri": "a"},
    "paths": {"root_dir": "/x"},
    "data": {"name": "mnist", "root": "/d"},
}


def changed(section: str, key: str, value):
    return {**CONFIG, section: {**CONFIG[section], key: value}}


def test_fingerprint_ignores_placement_but_not_results():
    base = fingerprint(CONFIG)
    assert fingerprint(changed("tracking", "uri", "b")) == base
    assert fingerprint(changed("paths", "root_dir", "/y")) == base
    assert fingerprint(changed("training", "threads", 4)) == base
    assert fingerprint(changed("data", "root", "/elsewhere")) == base
    assert fingerprint(changed("model", "latent", 3)) != base
    assert fingerprint(changed("training", "seed", 1)) != base
    assert fingerprint(changed("data", "name", "fashion_mnist")) != base


def fake_run(tags: dict, start_ms: float = 0):
    return SimpleNamespace(data=SimpleNamespace(tags=tags), info=SimpleNamespace(start_time=start_ms))


def test_a_running_run_is_dead_when_its_process_is_gone_or_silent():
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    assert is_dead(fake_run({"sys.host": platform.node(), "sys.pid": str(gone.pid)}), timeout_s=600)
    assert not is_dead(fake_run({"sys.host": platform.node(), "sys.pid": str(os.getpid())}), timeout_s=600)
    assert is_dead(fake_run({"sys.host": "elsewhere", "sys.heartbeat": "1000"}), timeout_s=600, now=2000)
    assert not is_dead(fake_run({"sys.host": "elsewhere", "sys.heartbeat": "1900"}), timeout_s=600, now=2000)


def test_runs_logged_with_bare_liveness_tags_are_still_read():
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    assert is_dead(fake_run({"host": platform.node(), "pid": str(gone.pid)}), timeout_s=600)
    assert not is_dead(fake_run({"host": platform.node(), "pid": str(os.getpid())}), timeout_s=600)
    assert not is_dead(fake_run({"host": "elsewhere", "heartbeat": "1900"}, start_ms=0), timeout_s=600, now=2000)


def test_the_heartbeat_goes_on_past_a_failed_beat_and_stops_with_its_section():
    beats = []

    def beat() -> None:
        beats.append(time.monotonic())
        if len(beats) == 1:
            raise RuntimeError("database is locked")

    with beating(beat, timeout_s=0.2):  # a beat every 0.05 s
        time.sleep(0.5)
    ended = len(beats)
    time.sleep(0.2)
    assert ended >= 3, "the beats after the one that failed"
    assert len(beats) == ended, "no beat after the section"


class Discard:
    def log_epoch(self, epoch, metrics):
        pass


def fresh(seed=0):
    torch.manual_seed(seed)
    model = small_model(latent=3, hidden=[32])
    return model, torch.optim.Adam(model.parameters(), lr=1e-3), torch.Generator().manual_seed(0)


def without_time(history):
    return [{k: v for k, v in row.items() if k != "time/epoch_s"} for row in history]


def test_a_restored_state_continues_bitwise_identically(tiny_data, tmp_path):
    train, test = load("mnist", tiny_data, download=False)
    model, optimizer, generator = fresh()
    settings = training_settings(epochs=3)
    straight = fit_plainly(model, optimizer, train, test, settings, Discard(), start=Start(generator))

    model, optimizer, generator = fresh()
    path = tmp_path / "state.pt"

    def save(history):
        checkpoint.save_state(checkpoint.training_state(model, optimizer, generator, history, []), path)

    settings = training_settings(epochs=1)
    fit_plainly(model, optimizer, train, test, settings, Discard(), start=Start(generator), checkpoint=save)
    torch.manual_seed(123)  # whatever the new process's RNG holds must not matter
    model, optimizer, generator = fresh(seed=99)
    history = checkpoint.restore_training_state(checkpoint.load_state(path), model, optimizer, generator)
    settings = training_settings(epochs=3)
    resumed = fit_plainly(model, optimizer, train, test, settings, Discard(), start=Start(generator, history))
    assert without_time(resumed) == without_time(straight)


def test_the_per_dimension_kl_history_travels_with_the_resumable_state(tmp_path):
    model, optimizer, generator = fresh()
    path = tmp_path / "state.pt"
    checkpoint.save_state(checkpoint.training_state(model, optimizer, generator, [{}], [[0.5, 0.0, 2.0]]), path)
    assert checkpoint.restored_kl_history(checkpoint.load_state(path)) == [[0.5, 0.0, 2.0]]
    assert checkpoint.restored_kl_history(None) == []
    older = {key: value for key, value in checkpoint.load_state(path).items() if key != "kl_per_dim_history"}
    assert checkpoint.restored_kl_history(older) == []


@pytest.fixture
def slow_data(tmp_path_factory):
    """Big enough that an epoch lasts long enough to interrupt a job in the middle."""
    return make_mnist_like(tmp_path_factory.mktemp("slow"), train=6000, test=500)


# Two separate sweeps agree bit for bit at the same thread count, which a lone job otherwise takes from the load on
# the machine as it starts (a resumed run keeps its own). 4 epochs: the kill after the first epoch's checkpoint still
# lands three epochs before the first job ends.
EPOCHS = 4
SWEEP = ("-m", "model.latent=2,3", f"training.epochs={EPOCHS}", "eval.enabled=false", "training.threads=1",
         "tracking.figures=false")  # fmt: skip


def runs_of(workdir):
    return experiment_runs(f"sqlite:///{workdir}/mlflow.db")


def wait_for_checkpoint(workdir, process, timeout=300):
    deadline = time.monotonic() + timeout
    while not list((workdir / "checkpoints").glob("*.pt")):
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            output, errors = process.communicate()
            pytest.fail(f"no checkpoint appeared while the job ran (exit {process.returncode}):\n{output}\n{errors}")
        time.sleep(0.02)
    time.sleep(0.3)


def start(workdir, data, *args):
    env = dict(os.environ, PYTHONPATH=str(REPO), VAE_SWEEP_DATA_DIR=str(data))
    return subprocess.Popen(
        [sys.executable, "-m", "vae_sweep", *args], cwd=workdir, env=env, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


def histories(client, run, keys=("loss/train", "loss/test", "loss/kl/test")):
    return {key: [(m.step, m.value) for m in client.get_metric_history(run.info.run_id, key)] for key in keys}


def by_latent(runs):
    return {run.data.params["model.latent"]: run for run in runs}


@pytest.mark.slow
def test_kill_9_mid_sweep_then_rerun_finishes_every_point_once(tmp_path, slow_data, monkeypatch, cli_in_process):
    monkeypatch.setenv("VAE_SWEEP_DATA_DIR", str(slow_data))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    reference, interrupted = tmp_path / "reference", tmp_path / "interrupted"
    reference.mkdir(), interrupted.mkdir()
    assert run_cli("vae_sweep", *SWEEP, cwd=reference).returncode == 0

    process = start(interrupted, slow_data, *SWEEP)
    wait_for_checkpoint(interrupted, process)
    process.send_signal(signal.SIGKILL)
    process.wait()
    _, runs = runs_of(interrupted)
    assert [run.info.status for run in runs] == ["RUNNING"]  # what kill -9 leaves behind

    again = run_cli("vae_sweep", *SWEEP, cwd=interrupted)
    assert again.returncode == 0, again.stderr
    client, runs = runs_of(interrupted)
    reference_client, reference_runs = runs_of(reference)
    assert len(runs) == 2 and all(run.info.status == "FINISHED" for run in runs)
    for latent, run in by_latent(runs).items():
        expected = by_latent(reference_runs)[latent]
        got = histories(client, run)
        assert [step for step, _ in got["loss/test"]] == list(range(1, EPOCHS + 1))
        assert got == histories(reference_client, expected)
        assert run.data.metrics["loss/test"] == expected.data.metrics["loss/test"]
    assert not list((interrupted / "checkpoints").glob("*.pt"))

    threads = torch.get_num_threads()
    third = cli_in_process(*SWEEP, cwd=interrupted)  # it only skips: a process of its own would add just its imports
    torch.set_num_threads(threads)  # this worker's later tests keep their own, whatever training.threads=1 set
    assert third.returncode == 0 and third.stdout.count("already FINISHED") == 2
    assert len(runs_of(interrupted)[1]) == 2


@pytest.mark.slow
def test_ctrl_c_marks_the_run_killed_and_a_rerun_resumes_it(workdir, slow_data):
    # 3 epochs: stopped after the first one's checkpoint, the run still has two to resume.
    process = start(workdir, slow_data, "training.epochs=3", "eval.enabled=false", "tracking.figures=false")
    wait_for_checkpoint(workdir, process)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode != 0 and "interrupted" in stderr and "Traceback" not in stderr
    client, runs = runs_of(workdir)
    assert [run.info.status for run in runs] == ["KILLED"]
    assert list((workdir / "checkpoints").glob("*.pt"))

    env_result = subprocess.run(
        [sys.executable, "-m", "vae_sweep", "training.epochs=3", "eval.enabled=false"],
        cwd=workdir, capture_output=True, text=True,
        env=dict(os.environ, PYTHONPATH=str(REPO), VAE_SWEEP_DATA_DIR=str(slow_data)),
    )  # fmt: skip
    assert env_result.returncode == 0, env_result.stderr
    assert "resuming after epoch" in env_result.stdout
    client, runs = runs_of(workdir)
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"
    assert [m.step for m in client.get_metric_history(runs[0].info.run_id, "loss/train")] == list(range(1, 4))


def test_resume_never_forces_a_new_run(workdir):
    for _ in range(2):
        train_in_process(
            workdir, "training.epochs=1", "model.hidden=[16]", "training.resume=never", "eval.enabled=false"
        )
    assert len(runs_of(workdir)[1]) == 2


def test_a_finished_point_is_skipped_with_its_final_metrics(workdir):
    first = train_in_process(workdir, "training.epochs=1", "model.hidden=[16]", "eval.enabled=false")
    client, (run,) = runs_of(workdir)
    # Skipped inside a sweep, the point still belongs to it: the sweep's parent records the run it reused.
    parent = client.create_run(run.info.experiment_id, tags={names.TAG_SWEEP_KIND: names.SWEEP_GRID}).info.run_id
    again = train_in_process(
        workdir, "training.epochs=1", "model.hidden=[16]", "eval.enabled=false", f"tracking.parent_run_id={parent}"
    )
    assert again == first and len(runs_of(workdir)[1]) == 1
    assert reused_runs(client.get_run(parent).data.tags) == {"0": run.info.run_id}


def test_a_dead_run_without_a_checkpoint_is_killed_when_a_fresh_run_replaces_it(workdir):
    job = ("training.epochs=1", "model.hidden=[16]", "eval.enabled=false")
    train_in_process(workdir, *job)
    client, (dead,) = runs_of(workdir)
    # What a worker killed before its first checkpoint leaves: a RUNNING run whose process is gone.
    client.update_run(dead.info.run_id, status="RUNNING")
    client.set_tag(dead.info.run_id, names.TAG_HOST, platform.node())
    client.set_tag(dead.info.run_id, names.TAG_PID, str(dead_pid()))
    train_in_process(workdir, *job)
    client, runs = runs_of(workdir)
    status = {run.info.run_id: run.info.status for run in runs}
    assert len(runs) == 2 and status.pop(dead.info.run_id) == "KILLED" and list(status.values()) == ["FINISHED"]
    assert "left no checkpoint to resume from" in client.get_run(dead.info.run_id).data.tags[names.TAG_NOTE]


def dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", ""])
    child.wait()
    return child.pid
