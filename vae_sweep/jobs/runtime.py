"""A job's process: its device, how many CPU threads it gets (from the config, the run it resumes or the launcher),
and setting them up."""

from __future__ import annotations

import os
from collections.abc import Mapping

import torch

from vae_sweep.errors import UserError

# Torch's own choice (the physical cores, or OMP_NUM_THREADS), read before any job of this process changes it.
TORCH_DEFAULT_THREADS = torch.get_num_threads()


def available_cores() -> int:
    """The cores this process may run on: a cgroup, taskset or batch scheduler can allow fewer than the machine has."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def threads_per_job(launcher_cfg: Mapping, cores: int) -> int | None:
    """Torch threads for one job (`hydra.launcher` node), so that jobs running side by side share the cores.

    joblib runs `n_jobs` jobs at once on this machine, counted as joblib counts them (-1: one per core, -2: all
    cores but one); a submitit job owns the `cpus_per_task` it asked for; None (the basic launcher's one job at a
    time, or submitit without cpus_per_task) keeps torch's default.
    """
    if "n_jobs" in launcher_cfg:
        n_jobs = launcher_cfg["n_jobs"]
        parallel = n_jobs if n_jobs > 0 else cores + 1 + n_jobs
        return max(1, cores // max(1, parallel))
    return launcher_cfg.get("cpus_per_task")


def job_threads(configured: int, launcher_cfg: Mapping, resumed: str | None) -> int:
    """Intra-op threads for a job: training.threads when set; a resumed run's own count, so that it continues
    bitwise as if it had never stopped; the launcher's share of the cores; else torch's default."""
    if configured:
        return configured
    if resumed is not None and resumed.isdigit():
        return int(resumed)
    return threads_per_job(launcher_cfg, available_cores()) or TORCH_DEFAULT_THREADS


def set_cpu_threads(threads: int) -> None:
    """Torch's intra-op threads for this process, each flushing denormal floats to zero.

    Flush-to-zero is a mode of each CPU thread, which a new thread inherits from the thread that starts it; OpenMP
    starts the intra-op threads at the first parallel operation. Set before that, every thread has it; set later (as
    fit() does for its own thread), the others keep computing with denormals, which made epochs at 2 threads 1.4x
    slower once Adam's moments for the blank border pixels decayed into them.
    """
    torch.set_flush_denormal(True)
    torch.set_num_threads(threads)


def resolve_device(name: str) -> torch.device:
    """The torch device `training.device` names; auto is CUDA when present."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"training.device={name} but this machine has no CUDA device; use training.device=auto or cpu.")
    return device
