"""How many threads a job trains with: what decides it, and in which order."""

import pytest

from vae_sweep.jobs import runtime
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
