"""Resume and skip: a sweep point is known by a fingerprint of what determines its result."""

from __future__ import annotations

import hashlib
import json
import os
import platform
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from vae_sweep import names
from vae_sweep.config import OptimizerConfig, defines_result, flatten
from vae_sweep.core.models import ADDED_DEFAULTS

if TYPE_CHECKING:
    from mlflow.entities import Run
    from mlflow.tracking import MlflowClient

    from vae_sweep.tracking.store import Store

# Keys that configs written before they existed lack, at the value those configs trained with.
_ADDED = {f"model.{key}": value for key, value in ADDED_DEFAULTS.items()} | {"optimizer.eps": OptimizerConfig.eps}

# Where the digest of a user's own data enters a fingerprint, beside the config's keys.
DATA_DIGEST_KEY = "data.digest"


def fingerprint(config: dict, data_digest: str | None = None) -> str:
    """Equal for two resolved configs exactly when they would train the same model the same way, on data with this
    digest (a user's own images; the MNIST datasets are known by name).

    Keys added later are left out where they are unset (None) or, for model keys, at the default that configs from
    before them trained with: the run of a config from before a key existed still matches.
    """
    result_keys = {
        key: value
        for key, value in flatten(config).items()
        if defines_result(key) and value is not None and not (key in _ADDED and _ADDED[key] == value)
    }
    if data_digest is not None:
        result_keys[DATA_DIGEST_KEY] = data_digest
    return hashlib.sha256(json.dumps(result_keys, sort_keys=True, default=str).encode()).hexdigest()[:16]


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def liveness_tag(run: Run, name: str) -> str | None:
    """One of the tags resume reads (names.TAG_PID, TAG_HOST, TAG_HEARTBEAT), also on runs that predate `sys.`."""
    tags = run.data.tags
    return tags.get(name, tags.get(names.FORMER_TAGS[name]))


def is_dead(run: Run, timeout_s: float, now: float | None = None) -> bool:
    """A RUNNING run nobody is running: its process is gone (same host), or it has been silent too long."""
    pid = liveness_tag(run, names.TAG_PID) or ""
    if liveness_tag(run, names.TAG_HOST) == platform.node() and pid.isdigit():
        return not pid_alive(int(pid))
    last_sign = float(liveness_tag(run, names.TAG_HEARTBEAT) or run.info.start_time / 1000)
    return (now or time.time()) - last_sign > timeout_s


@dataclass
class Decision:
    action: str  # "new", "skip" (a FINISHED run exists), "resume" (continue `run`), or "busy" (alive elsewhere)
    run: Run | None = None


def decide(client: MlflowClient, experiment_id: str, key: str, timeout_s: float) -> Decision:
    query = f"tags.{names.TAG_FINGERPRINT} = '{key}'"
    runs = client.search_runs([experiment_id], query, order_by=["attributes.start_time DESC"], max_results=100)
    # A pruned trial's run FINISHED without training all its epochs: it stands for no finished config.
    finished = [run for run in runs if run.info.status == "FINISHED" and names.TAG_PRUNED_EPOCH not in run.data.tags]
    if finished:
        return Decision("skip", finished[0])
    for run in runs:
        if run.info.status in ("FAILED", "KILLED"):
            return Decision("resume", run)
        if run.info.status == "RUNNING":
            return Decision("resume", run) if is_dead(run, timeout_s) else Decision("busy", run)
    return Decision("new")


def retire(store: Store, run: Run) -> None:
    """End a dead RUNNING run that a fresh run replaces (its process died, leaving no checkpoint): KILLED, saying so,
    rather than RUNNING for ever in the UI. Retried while SQLite is locked, as every store write of a job is: the jobs
    of a sweep run again after a kill retire their runs at the same moment."""
    from vae_sweep.tracking.mlflow_tracker import store_call  # MLflow: only a tracked job has a run to retire

    note = (
        "Killed: its process died and left no checkpoint to resume from; the same configuration trains again in a "
        "new run."
    )
    store_call(store.client.set_tag)(run.info.run_id, names.TAG_NOTE, note)
    store_call(store.client.set_terminated)(run.info.run_id, status="KILLED")
