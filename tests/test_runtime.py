"""A job's process: how many threads it trains with (what decides it, and in which order), and how it ends."""

import atexit
import gc

import pytest

from vae_sweep.core import signals
from vae_sweep.jobs import runtime, task
from vae_sweep.jobs.runtime import job_threads

SIDE_BY_SIDE = {"n_jobs": 2}


def test_configured_threads_win_then_the_resumed_runs_then_the_launchers_share(monkeypatch):
    monkeypatch.setattr(runtime, "available_cores", lambda: 4)
    assert job_threads(3, SIDE_BY_SIDE, "1") == 3
    # A resumed run keeps the count it was trained with, whatever launcher runs it now: bitwise as if never stopped.
    assert job_threads(0, SIDE_BY_SIDE, "1") == 1
    assert job_threads(0, {}, "1") == 1
    assert job_threads(0, SIDE_BY_SIDE, None) == 2
    assert job_threads(0, {"cpus_per_task": 3}, None) == 3


def test_a_lone_job_leaves_out_the_cores_other_processes_hold(monkeypatch):
    monkeypatch.setattr(runtime, "available_cores", lambda: 4)
    for busy, threads in ((0.2, 4), (0.4, 3), (1.0, 3), (1.3, 2), (2.6, 1), (8.0, 1), (None, 4)):
        monkeypatch.setattr(runtime, "busy_cores", lambda busy=busy: busy)
        assert runtime.free_cores(default=4) == threads
    # Never more than torch's own default (physical cores, OMP_NUM_THREADS), even with every core free.
    monkeypatch.setattr(runtime, "busy_cores", lambda: 0.0)
    assert runtime.free_cores(default=2) == 2
    # One thread by default (OMP_NUM_THREADS=1, one core) is one thread: no load sample is taken, as it would sleep.
    monkeypatch.setattr(runtime, "busy_cores", lambda: pytest.fail("sampled the load for a one-thread default"))
    assert runtime.free_cores(default=1) == 1
    monkeypatch.setattr(runtime, "free_cores", lambda: 3)
    assert job_threads(0, {}, None) == 3


def test_busy_cores_reads_this_machines_cpu_counters():
    busy = runtime.busy_cores(sample_s=0.05)
    if busy is not None:  # None where /proc/stat is missing
        assert 0 <= busy <= runtime.available_cores()


def test_the_load_is_sampled_over_the_start_up_without_sleeping_and_less_this_process(monkeypatch):
    slept = []
    monkeypatch.setattr(runtime.time, "sleep", slept.append)
    monkeypatch.setattr(runtime, "_cpus", lambda: {0, 1})
    # Since this module loaded 1 s ago: this process used 100 ticks, the two CPUs 150 busy of 200, so others 50.
    now = runtime.time.monotonic()
    monkeypatch.setattr(runtime, "_window", runtime._Counters(now - 1.0, 0.0, 0, 0))
    monkeypatch.setattr(runtime, "_own_ticks", lambda: 100.0)
    monkeypatch.setattr(runtime, "_cpu_times", lambda cpus: (150, 200))
    assert runtime.busy_cores() == pytest.approx(0.5)
    assert slept == [0.0]
    # A window older than BUSY_WINDOW_MAX_S (a later job of the same process) is not the load now: a new sample.
    monkeypatch.setattr(runtime, "_window", runtime._Counters(now - runtime.BUSY_WINDOW_MAX_S - 1, 0.0, 0, 0))
    runtime.busy_cores()
    assert slept[-1] == pytest.approx(runtime.BUSY_SAMPLE_S, abs=0.05)


def test_the_final_collection_is_skipped_once_however_often_asked(monkeypatch):
    registered = []
    monkeypatch.setattr(atexit, "register", registered.append)
    runtime.skip_the_final_collection.cache_clear()
    runtime.skip_the_final_collection()
    runtime.skip_the_final_collection()
    assert registered == [gc.freeze]


def test_only_a_launchers_worker_asks_for_it_and_a_commands_own_process_leaves_it_to_its_entry(monkeypatch):
    asked = []
    monkeypatch.setattr(task, "skip_the_final_collection", lambda: asked.append(True))
    monkeypatch.setattr(task, "train_job", lambda cfg: {})
    with signals.stoppable():  # as under `python -m vae_sweep`, whose entry freezes the objects itself
        task.run(None)
    assert asked == []
    task.run(None)  # outside any stoppable section: a joblib or submitit worker
    assert asked == [True]
