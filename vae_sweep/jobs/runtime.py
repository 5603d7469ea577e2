"""A job's process: its device, how many CPU threads it gets (from the config, the run it resumes, the launcher or
the cores free right now), and setting them up."""

from __future__ import annotations

import atexit
import functools
import gc
import math
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import NamedTuple

import torch

from vae_sweep.errors import UserError

# Torch's own choice (the physical cores, or OMP_NUM_THREADS), read before any job of this process changes it.
TORCH_DEFAULT_THREADS = torch.get_num_threads()
# Long enough for /proc/stat's 10 ms ticks to tell a held core (~100% busy) from a quiet one (~0%).
BUSY_SAMPLE_S = 0.2
# A window longer than this (a later job of the same process) says more about the past than about the cores now.
BUSY_WINDOW_MAX_S = 5.0
# Busy cores up to this much are background noise, not a core taken.
TAKEN_BELOW = 0.25


def available_cores() -> int:
    """The cores this process may run on: a cgroup, taskset or batch scheduler can allow fewer than the machine has."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def threads_per_job(launcher_cfg: Mapping, cores: int) -> int | None:
    """Torch threads for one job (`hydra.launcher` node), so that jobs running side by side share the cores.

    joblib runs `n_jobs` jobs at once on this machine, counted as joblib counts them (-1: one per core, -2: all
    cores but one); a submitit job owns the `cpus_per_task` it asked for; None (the basic launcher's one job at a
    time, or submitit without cpus_per_task) leaves the choice to free_cores.
    """
    if "n_jobs" in launcher_cfg:
        n_jobs = launcher_cfg["n_jobs"]
        parallel = n_jobs if n_jobs > 0 else cores + 1 + n_jobs
        return max(1, cores // max(1, parallel))
    return launcher_cfg.get("cpus_per_task")


def _cpu_times(cpus: set[int]) -> tuple[int, int]:
    """(busy, total) clock ticks so far, summed over these CPUs, from Linux's /proc/stat."""
    busy = total = 0
    for line in Path("/proc/stat").read_text().splitlines():
        name, *fields = line.split()
        if name.startswith("cpu") and name[3:].isdigit() and int(name[3:]) in cpus:
            ticks = [int(field) for field in fields[:8]]
            idle = ticks[3] + ticks[4]  # idle, iowait
            busy, total = busy + sum(ticks) - idle, total + sum(ticks)
    return busy, total


def _cpus() -> set[int]:
    return os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else set()


def _own_ticks() -> float:
    """This process's CPU time so far (all its threads), in /proc/stat's clock ticks."""
    times = os.times()
    return (times.user + times.system) * os.sysconf("SC_CLK_TCK")


class _Counters(NamedTuple):
    at: float  # the monotonic clock
    own: float  # this process's CPU ticks so far
    busy: int  # the busy and all ticks of this process's CPUs so far
    total: int


def _counters(cpus: set[int]) -> _Counters:
    return _Counters(time.monotonic(), _own_ticks(), *_cpu_times(cpus))


def _counters_or_none() -> _Counters | None:
    try:
        return _counters(_cpus())
    except (OSError, ValueError):
        return None


# The load is measured from here: a job process decides its threads a second or more after it loads this module, and
# that start-up is a sample long enough to need no sleep of its own.
_window = _counters_or_none()


def busy_cores(sample_s: float | None = None) -> float | None:
    """How many of this process's cores other processes keep busy (this process's own CPU time left out), over the next
    `sample_s` seconds, sleeping meanwhile; without it, since this module loaded or the last such call, sleeping only
    what is missing of BUSY_SAMPLE_S, or over a new BUSY_SAMPLE_S where that was more than BUSY_WINDOW_MAX_S ago.
    None where /proc/stat is not there to tell."""
    global _window
    cpus = _cpus()
    try:
        start = _window
        if sample_s is not None or start is None or time.monotonic() - start.at > BUSY_WINDOW_MAX_S:
            start = _counters(cpus)
        length = BUSY_SAMPLE_S if sample_s is None else sample_s
        time.sleep(max(0.0, length - (time.monotonic() - start.at)))
        end = _counters(cpus)
    except (OSError, ValueError):
        return None
    if sample_s is None:
        _window = end
    total = end.total - start.total
    if total <= 0:
        return None
    others = (end.busy - start.busy) - (end.own - start.own)
    return len(cpus) * max(0.0, others) / total


def free_cores(default: int = TORCH_DEFAULT_THREADS) -> int:
    """Torch's default thread count less the cores other processes hold right now.

    A parallel region ends when its slowest thread does, a thread that shares its core with another busy process gets
    half of it, and OpenMP's waiting threads spin, taking CPU time from it: with one of two cores held, 2 threads took
    several times as long per batch as 1 thread (benchmarks/RESULTS.md, "Busy machine"). The count is fixed for the
    run, since it changes float rounding.
    """
    if default <= 1:
        return 1  # nothing to leave out: no load sample
    busy = busy_cores()
    if busy is None:
        return default
    # A core counts as taken once others use a quarter of it: one thread too few costs an idle machine ~1.4x, one too
    # many on a busy machine 2-9x (benchmarks/RESULTS.md).
    taken = max(0, math.ceil(busy - TAKEN_BELOW))
    return max(1, min(default, available_cores() - taken))


def job_threads(configured: int, launcher_cfg: Mapping, resumed: str | None) -> int:
    """Intra-op threads for a job: training.threads when set; a resumed run's own count, so that it continues
    bitwise as if it had never stopped; the launcher's share of the cores; else the cores free right now."""
    if configured:
        return configured
    if resumed is not None and resumed.isdigit():
        return int(resumed)
    return threads_per_job(launcher_cfg, available_cores()) or free_cores()


def set_cpu_threads(threads: int) -> None:
    """Torch's intra-op threads for this process, each flushing denormal floats to zero.

    Flush-to-zero is a mode of each CPU thread, which a new thread inherits from the thread that starts it; OpenMP
    starts the intra-op threads at the first parallel operation. Set before that, every thread has it; set later (as
    fit() does for its own thread), the others keep computing with denormals, which made epochs at 2 threads 1.4x
    slower once Adam's moments for the blank border pixels decayed into them.
    """
    torch.set_flush_denormal(True)
    torch.set_num_threads(threads)


@functools.cache
def skip_the_final_collection() -> None:
    """For a launcher's worker process (joblib's loky, submitit): no garbage collection over everything alive at exit.

    The interpreter's last collections traverse every object left, ~0.5-1 s once torch and MLflow are loaded, and a
    joblib sweep ends only when its workers have exited. gc.freeze at exit moves them out of the collector's reach;
    atexit handlers, weakref finalizers and the flushing of output still run. Nothing is frozen before then (as
    vae_sweep.cli.collect_only_new_objects does for a command's own process): a worker runs job after job, and each
    job's garbage must still be collected while the next one runs.
    """
    atexit.register(gc.freeze)


def resolve_device(name: str) -> torch.device:
    """The torch device `training.device` names; auto is CUDA when present."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"training.device={name} but this machine has no CUDA device; use training.device=auto or cpu.")
    return device
