"""A job's MLflow run: params, per-epoch metrics, artifacts, and an honest final status however the job ends."""

from __future__ import annotations

import functools
import logging
import random
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator, TypeVar

from mlflow.entities import Metric, Param, RunTag
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from vae_sweep import names
from vae_sweep.core.signals import held
from vae_sweep.tracking.store import Store

log = logging.getLogger(__name__)

# MLflow truncates longer param values; the full config is kept as an artifact instead.
PARAM_LIMIT = 6000
BATCH_LIMIT = 100
SQLITE_LOCKED_TRIES = 10


T = TypeVar("T")


class _RetriedLocks(logging.Filter):
    """MLflow logs each SQLite "database is locked" error with its traceback before raising it; _whole tries such a
    call again, and the last try's error, if it fails too, ends the job as any error does."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "database is locked" not in record.getMessage()


logging.getLogger("mlflow.store.db.utils").addFilter(_RetriedLocks())


def _param_value(value) -> str:
    return str(value)[:PARAM_LIMIT]


def _whole(call: Callable[..., T]) -> Callable[..., T]:
    """A store call that a stop signal waits for, and that is tried again while SQLite is locked.

    Raised inside a store call, a stop signal's exception can be replaced by the database's own error as it rolls
    back, and the job would end FAILED with a traceback instead of KILLED. SQLite fails a write at once, rather than
    waiting, when another process's transaction holds the lock its own needs: the jobs of a sweep that a signal stops
    together all write their runs' status at the same moment.
    """

    @functools.wraps(call)
    def whole(*args, **kwargs) -> T:
        with held():
            for attempt in range(SQLITE_LOCKED_TRIES):
                try:
                    return call(*args, **kwargs)
                except MlflowException as error:
                    if "database is locked" not in str(error) or attempt == SQLITE_LOCKED_TRIES - 1:
                        raise
                    time.sleep(random.uniform(0.05, 0.2) * (attempt + 1))  # apart, not in step with the others

    return whole


class NullTracker:
    """Stands in for MlflowTracker when tracking is off, so callers never branch on it."""

    run_id = None

    def log_epoch(self, epoch: int, metrics: dict[str, float]) -> None:
        pass

    def logged_epochs(self) -> int:
        return 0

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        pass

    def set_tags(self, tags: dict[str, str]) -> None:
        pass

    def log_artifact(self, path: Path, artifact_path: str | None = None) -> None:
        pass

    def log_artifacts(self, folder: Path, artifact_path: str | None = None) -> None:
        pass


class MlflowTracker:
    def __init__(self, client: MlflowClient, run_id: str):
        self.client = client
        self.run_id = run_id

    @classmethod
    @_whole
    def start(
        cls, client: MlflowClient, experiment_id: str, run_name: str, params: dict, tags: dict[str, str]
    ) -> MlflowTracker:
        run = client.create_run(experiment_id, run_name=run_name, tags=tags)
        tracker = cls(client, run.info.run_id)
        entries = [Param(key, _param_value(value)) for key, value in params.items()]
        for start in range(0, len(entries), BATCH_LIMIT):
            client.log_batch(tracker.run_id, params=entries[start : start + BATCH_LIMIT])
        return tracker

    @_whole
    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        """One batched call for all metrics of a step."""
        now = int(time.time() * 1000)
        entries = [Metric(key, float(value), now, step or 0) for key, value in metrics.items()]
        for start in range(0, len(entries), BATCH_LIMIT):
            self.client.log_batch(self.run_id, metrics=entries[start : start + BATCH_LIMIT])

    @_whole
    def log_epoch(self, epoch: int, metrics: dict[str, float]) -> None:
        """The epoch's metrics and a heartbeat tag in one call: a resumed sweep tells live runs from dead ones."""
        now = time.time()
        entries = [Metric(key, float(value), int(now * 1000), epoch) for key, value in metrics.items()]
        self.client.log_batch(self.run_id, metrics=entries, tags=[RunTag(names.TAG_HEARTBEAT, f"{now:.0f}")])

    @_whole
    def logged_epochs(self) -> int:
        """How many epochs the run's history holds (the last step of test/loss)."""
        return max((metric.step for metric in self.client.get_metric_history(self.run_id, names.TEST_LOSS)), default=0)

    @classmethod
    @_whole
    def reopen(cls, client: MlflowClient, run_id: str, tags: dict[str, str]) -> MlflowTracker:
        client.update_run(run_id, status="RUNNING")
        tracker = cls(client, run_id)
        tracker.set_tags({**tags, names.TAG_ERROR: "", names.TAG_RESUMED: "true"})
        return tracker

    @_whole
    def set_tags(self, tags: dict[str, str]) -> None:
        self.client.log_batch(self.run_id, tags=[RunTag(key, str(value)) for key, value in tags.items()])

    @_whole
    def log_artifact(self, path: Path, artifact_path: str | None = None) -> None:
        self.client.log_artifact(self.run_id, str(path), artifact_path)

    @_whole
    def log_artifacts(self, folder: Path, artifact_path: str | None = None) -> None:
        self.client.log_artifacts(self.run_id, str(folder), artifact_path)

    @_whole
    def end(self, status: str, error: BaseException | None = None) -> None:
        if error is not None:
            message = f"{type(error).__name__}: {error}"[:PARAM_LIMIT]
            self.set_tags({names.TAG_ERROR: message, names.TAG_NOTE: f"Failed: {message}"})
        self.client.set_terminated(self.run_id, status=status)


@contextmanager
def tracked_run(
    store: Store | None, run_name: str, params: dict, tags: dict[str, str], resume_run_id: str | None = None
) -> Iterator[MlflowTracker | NullTracker]:
    """A run that ends FINISHED, FAILED (with the error on the run) or KILLED (Ctrl-C or another stop signal, see
    core.signals), whatever happens inside.

    With `resume_run_id` the interrupted run is reopened, so its metric history simply continues.
    """
    if store is None:
        yield NullTracker()
        return
    tracker = None
    try:
        with held():  # a stop signal waits until the run exists and is ended below
            if resume_run_id is None:
                tracker = MlflowTracker.start(store.client, store.experiment_id, run_name, params, tags)
            else:
                tracker = MlflowTracker.reopen(store.client, resume_run_id, tags)
        log.info(f"MLflow run {tracker.run_id} ({run_name}){' resumed' if resume_run_id else ''}")
        yield tracker
    except KeyboardInterrupt:
        if tracker is not None:
            tracker.end("KILLED")
        raise
    except BaseException as error:
        if tracker is not None:
            tracker.end("FAILED", error)
        raise
    tracker.end("FINISHED")
