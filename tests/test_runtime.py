"""How many threads a job trains with: what decides it, and in which order."""

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
