"""A job's MLflow run: params, per-epoch metrics, images, datasets and artifacts, each call whole under a stop signal
and tried again while SQLite is locked."""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import random
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator, TypeVar

import numpy as np
from mlflow.entities import Dataset, DatasetInput, InputTag, Metric, Param, RunTag
from mlflow.exceptions import MlflowException
from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor
from mlflow.tracking import MlflowClient
from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT

from vae_sweep import names
from vae_sweep.core.signals import held
from vae_sweep.tracking.runs import DataSplit
from vae_sweep.tracking.store import Store, run_route

log = logging.getLogger(__name__)

# MLflow truncates longer param values; the full config is kept as an artifact instead.
PARAM_LIMIT = 6000
BATCH_LIMIT = 100
SQLITE_LOCKED_TRIES = 10
DATASET_TRIES = 3


T = TypeVar("T")


class _RetriedLocks(logging.Filter):
    """MLflow logs each SQLite "database is locked" error with its traceback before raising it; store_call tries such a
    call again, and the last try's error, if it fails too, ends the job as any error does."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "database is locked" not in record.getMessage()


logging.getLogger("mlflow.store.db.utils").addFilter(_RetriedLocks())


def param_value(value) -> str:
    """A param as the store keeps it: text, cut at its length limit."""
    return str(value)[:PARAM_LIMIT]


def mlflow_dataset(split: DataSplit) -> Dataset:
    """The split as MLflow's dataset entity: the Dataset column of the runs table, and the run's lineage."""
    # MLflow keeps at most 36 characters of digest: one MD5 over the files' MD5s says whether any changed.
    digest = hashlib.md5("".join(md5 for _, md5 in sorted(split.file_md5s.items())).encode()).hexdigest()
    return Dataset(
        name=f"{split.dataset}-{split.split}",
        digest=digest,
        source_type="local",
        source=json.dumps({"uri": split.folder.resolve().as_uri(), "files": sorted(split.file_md5s)}),
        profile=json.dumps({"num_rows": split.images}),
    )


def store_call(call: Callable[..., T]) -> Callable[..., T]:
    """A store call that a stop signal waits for, and that is tried again while SQLite is locked.

    Raised inside a store call, a stop signal's exception can be replaced by the database's own error as it rolls
    back, and the job would end FAILED with a traceback instead of KILLED. SQLite fails a write at once, rather than
    waiting, when another process's transaction holds the lock its own needs: the jobs of a sweep that a signal stops
    together all write their runs' status at the same moment.
    """

    @functools.wraps(call)
    def whole(*args, **kwargs) -> T:
        with held():
            return _retried(lambda: call(*args, **kwargs), ("database is locked",), SQLITE_LOCKED_TRIES)

    return whole


def _retried(call: Callable[[], T], transient: tuple[str, ...], tries: int) -> T:
    """call(), tried again after a short random pause while it fails with a store error naming one of `transient`."""
    for attempt in range(tries):
        try:
            return call()
        except MlflowException as error:
            if not any(words in str(error) for words in transient) or attempt == tries - 1:
                raise
            time.sleep(random.uniform(0.05, 0.2) * (attempt + 1))  # apart, not in step with the others


def heartbeat_tag(now: float) -> RunTag:
    """The run's liveness tag at Unix time `now`, to the millisecond: whole seconds alone can exceed a short timeout."""
    return RunTag(names.TAG_HEARTBEAT, f"{now:.3f}")


class MlflowTracker:
    def __init__(self, client: MlflowClient, run_id: str, experiment_id: str):
        self.client = client
        self.run_id = run_id
        self.experiment_id = experiment_id

    @classmethod
    @store_call
    def start(
        cls, client: MlflowClient, experiment_id: str, run_name: str, params: dict, tags: dict[str, str]
    ) -> MlflowTracker:
        run = client.create_run(experiment_id, run_name=run_name, tags=tags)
        tracker = cls(client, run.info.run_id, experiment_id)
        entries = [Param(key, param_value(value)) for key, value in params.items()]
        for start in range(0, len(entries), BATCH_LIMIT):
            client.log_batch(tracker.run_id, params=entries[start : start + BATCH_LIMIT])
        return tracker

    @store_call
    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        """One batched call for all metrics of a step."""
        now = int(time.time() * 1000)
        entries = [Metric(key, float(value), now, step or 0) for key, value in metrics.items()]
        for start in range(0, len(entries), BATCH_LIMIT):
            self.client.log_batch(self.run_id, metrics=entries[start : start + BATCH_LIMIT])

    @store_call
    def log_epoch(self, epoch: int, metrics: dict[str, float]) -> None:
        """The epoch's metrics and a heartbeat tag in one call: a resumed sweep tells live runs from dead ones."""
        now = time.time()
        entries = [Metric(key, float(value), int(now * 1000), epoch) for key, value in metrics.items()]
        self.client.log_batch(self.run_id, metrics=entries, tags=[heartbeat_tag(now)])

    def beat(self) -> None:
        """The heartbeat tag alone, from the heartbeat's thread (tracking.heartbeat): not a store_call, whose held
        section is the main thread's; tried again while SQLite is locked."""
        tag = heartbeat_tag(time.time())
        _retried(lambda: self.client.log_batch(self.run_id, tags=[tag]), ("database is locked",), SQLITE_LOCKED_TRIES)

    @store_call
    def logged_epochs(self) -> int:
        """How many epochs the run's history holds (the last step of test/loss)."""
        return max((metric.step for metric in self.client.get_metric_history(self.run_id, names.TEST_LOSS)), default=0)

    @classmethod
    @store_call
    def reopen(cls, client: MlflowClient, run_id: str, tags: dict[str, str]) -> MlflowTracker:
        client.update_run(run_id, status="RUNNING")
        run = client.get_run(run_id)
        if names.TAG_ERROR in run.data.tags:  # the last attempt's failure, not this run's (an empty tag still shows)
            client.delete_tag(run_id, names.TAG_ERROR)
        tracker = cls(client, run_id, run.info.experiment_id)
        tracker.set_tags({**tags, names.TAG_RESUMED: "true"})
        return tracker

    @store_call
    def set_tags(self, tags: dict[str, str]) -> None:
        self.client.log_batch(self.run_id, tags=[RunTag(key, str(value)) for key, value in tags.items()])

    @store_call
    def log_artifact(self, path: Path, artifact_path: str | None = None) -> None:
        self.client.log_artifact(self.run_id, str(path), artifact_path)

    @store_call
    def log_artifacts(self, folder: Path, artifact_path: str | None = None) -> None:
        self.client.log_artifacts(self.run_id, str(folder), artifact_path)

    @store_call
    def log_image(self, image: np.ndarray, key: str, step: int) -> None:
        """One frame of an image series: the run's Model metrics tab shows the series with a step slider."""
        self.client.log_image(self.run_id, image, key=key, step=step)

    @store_call
    def log_datasets(self, splits: list[DataSplit]) -> None:
        """The data the run read: the Dataset column of the runs table, and the run's lineage."""
        inputs = [
            DatasetInput(mlflow_dataset(split), [InputTag(MLFLOW_DATASET_CONTEXT, split.split)]) for split in splits
        ]
        # Parallel jobs insert the same dataset row at once and all but one break the store's unique key; on the next
        # try the row exists and only this run's link to it is written.
        _retried(
            lambda: self.client.log_inputs(self.run_id, datasets=inputs), ("duplicate key", "UNIQUE constraint"),
            DATASET_TRIES,
        )  # fmt: skip

    def artifact_link(self, path: str) -> str:
        """A link to one of the run's artifacts that works in the run's Description (a page of the MLflow UI)."""
        return run_route(self.experiment_id, self.run_id, path)

    @store_call
    def end(self, status: str, error: BaseException | None = None) -> None:
        if error is not None:
            message = f"{type(error).__name__}: {error}"[:PARAM_LIMIT]
            self.set_tags({names.TAG_ERROR: message, names.TAG_NOTE: f"Failed: {message}"})
        self.client.set_terminated(self.run_id, status=status)


@contextmanager
def system_metrics(store: Store, run_id: str, interval_s: float, resumed: bool) -> Iterator[None]:
    """MLflow's system/ metrics (CPU, memory, disk, network) sampled every `interval_s` seconds while inside."""
    if interval_s <= 0:
        yield
        return
    monitor = SystemMetricsMonitor(
        run_id, sampling_interval=interval_s, resume_logging=resumed, tracking_uri=store.client.tracking_uri
    )
    monitor.start()
    try:
        yield
    finally:
        monitor.finish()
