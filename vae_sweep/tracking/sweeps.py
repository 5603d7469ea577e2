"""A sweep's parent run: one MLflow run per multirun (grid or search), its jobs' runs nested under it by MLflow's
`mlflow.parentRunId` tag, holding the sweep's config, its counts and, for a search, the best trial so far.

The same sweep again (the same command, or the same study) finds its parent by a key and carries on with it, so a
resumed sweep's jobs stay grouped under one run in the UI.
"""

from __future__ import annotations

import time
from pathlib import Path

from mlflow.entities import Metric, Param, RunTag

from vae_sweep import names
from vae_sweep.tracking.mlflow_tracker import BATCH_LIMIT, param_value, store_call
from vae_sweep.tracking.store import Store


@store_call
def open_parent(store: Store, key: str, name: str, tags: dict[str, str], params: dict[str, str]) -> str:
    """The run id of the sweep's parent run, created on the first run of the sweep and set RUNNING again after."""
    client = store.client
    query = f"tags.`{names.TAG_SWEEP_KEY}` = '{key}'"
    found = client.search_runs([store.experiment_id], query, order_by=["attributes.start_time DESC"], max_results=1)
    if found:
        run_id = found[0].info.run_id
        client.update_run(run_id, status="RUNNING")
        client.log_batch(run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])
        return run_id
    run = client.create_run(store.experiment_id, run_name=name, tags={**tags, names.TAG_SWEEP_KEY: key})
    entries = [Param(k, param_value(v)) for k, v in params.items()]
    for start in range(0, len(entries), BATCH_LIMIT):
        client.log_batch(run.info.run_id, params=entries[start : start + BATCH_LIMIT])
    return run.info.run_id


@store_call
def update_parent(store: Store, run_id: str, metrics: dict[str, float], step: int, tags: dict[str, str]) -> None:
    """Counts and the best trial so far: metrics at `step` (jobs ended), so the UI charts the sweep's progress."""
    now = int(time.time() * 1000)
    entries = [Metric(key, float(value), now, step) for key, value in metrics.items()]
    store.client.log_batch(run_id, metrics=entries, tags=[RunTag(k, str(v)) for k, v in tags.items()])


@store_call
def record_reused(store: Store, parent_run_id: str, job: str, run_id: str) -> None:
    """That a sweep's point `job` is the FINISHED run `run_id`, trained before (and nested under another sweep): one
    tag per job, so that parallel jobs never write the same one."""
    store.client.set_tag(parent_run_id, f"{names.TAG_SWEEP_REUSED}{job}", run_id)


def reused_runs(parent_tags: dict[str, str]) -> dict[str, str]:
    """Job number -> run id of the points a sweep reused, from its parent run's tags."""
    return {key.removeprefix(names.TAG_SWEEP_REUSED): value for key, value in parent_tags.items()
            if key.startswith(names.TAG_SWEEP_REUSED)}  # fmt: skip


@store_call
def close_parent(store: Store, run_id: str, status: str, config_file: Path | None = None, note: str = "") -> None:
    if config_file is not None and config_file.exists():
        store.client.log_artifact(run_id, str(config_file))
    if note:
        store.client.set_tag(run_id, names.TAG_NOTE, note)
    store.client.set_terminated(run_id, status)
