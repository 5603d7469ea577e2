"""A stop signal to the sweep's own process reaches the jobs that joblib runs in its worker processes.

Joblib answers a KeyboardInterrupt in the sweep's process by killing its workers outright, and a signal other than
Ctrl-C from the terminal does not reach them at all: either way a worker's run stays RUNNING, or trains on. Instead,
while joblib runs the jobs, the sweep's process passes the signal on to its workers; each ends its job as Ctrl-C
ends one (checkpoint written, run KILLED, the job collected as failed), a job it is handed afterwards ends before it
starts, and once joblib has every job back the sweep stops with the signal's exit code.
"""

import multiprocessing
from contextlib import AbstractContextManager, nullcontext
from typing import Any

from vae_sweep.core import signals


def _workers() -> list[int]:
    return [process.pid for process in multiprocessing.active_children() if process.pid is not None]


def stops_reach_workers(launcher: Any) -> AbstractContextManager:
    if not type(launcher).__module__.startswith("hydra_plugins.hydra_joblib_launcher"):
        return nullcontext()
    return signals.forwarded(_workers)
