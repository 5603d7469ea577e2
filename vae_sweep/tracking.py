"""MLflow tracking: one run per job, with params, per-epoch metrics, artifacts and an honest final status."""

from __future__ import annotations

import logging
import os
import time
import urllib.error
import urllib.request
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from filelock import FileLock
from mlflow.entities import Metric, Param, RunTag
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from vae_sweep.config import UserError

log = logging.getLogger(__name__)

# MLflow truncates longer param values; the full config is kept as an artifact instead.
PARAM_LIMIT = 6000
BATCH_LIMIT = 100


def is_remote(uri: str) -> bool:
    return uri.startswith(("http://", "https://"))


def check_reachable(uri: str, timeout: float = 5.0) -> None:
    """Fail fast with one message when a tracking server does not answer (MLflow itself retries for minutes)."""
    if not is_remote(uri):
        return
    try:
        urllib.request.urlopen(f"{uri.rstrip('/')}/health", timeout=timeout).close()
    except (urllib.error.URLError, OSError) as error:
        reason = getattr(error, "reason", error)
        raise UserError(
            f"tracking.uri={uri} is unreachable ({reason}). Start the server, fix tracking.uri or "
            "MLFLOW_TRACKING_URI, or run with tracking.enabled=false."
        ) from None


def ensure_experiment(client: MlflowClient, name: str, artifact_root: str | None) -> str:
    """The experiment's id, created on first use; safe when another process creates it at the same moment."""
    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        return experiment.experiment_id
    location = Path(artifact_root).resolve().as_uri() if artifact_root else None
    try:
        return client.create_experiment(name, artifact_location=location)
    except MlflowException:
        experiment = client.get_experiment_by_name(name)
        if experiment is None:
            raise
        return experiment.experiment_id


def default_tracking_uri() -> str:
    """MLFLOW_TRACKING_URI, else the embedded store of the current directory, as jobs launched here use it."""
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{Path.cwd() / 'mlflow.db'}"


def _sqlite_file(uri: str) -> Path | None:
    return Path(uri.removeprefix("sqlite:///")) if uri.startswith("sqlite:///") else None


def existing_store(uri: str, hint: str) -> MlflowClient:
    """A client on a store that must exist already: MlflowClient would create an empty database rather than fail."""
    check_reachable(uri)
    database = _sqlite_file(uri)
    if database is not None and not database.is_file():
        raise UserError(f"No MLflow store at {uri}; {hint}")
    return MlflowClient(uri)


def _creation_lock(uri: str) -> FileLock | nullcontext:
    """SQLite stores break when several processes create their tables at once; a lock file beside them serialises it."""
    database = _sqlite_file(uri)
    if database is None:
        return nullcontext()
    database.parent.mkdir(parents=True, exist_ok=True)
    return FileLock(f"{database}.lock")


def connect(uri: str, experiment: str, artifact_root: str | None) -> tuple[MlflowClient, str]:
    """A client on the store (created if new) and the experiment id."""
    check_reachable(uri)
    with _creation_lock(uri):
        client = MlflowClient(tracking_uri=uri)
        # A tracking server decides where artifacts go (its --artifacts-destination), not each client.
        return client, ensure_experiment(client, experiment, None if is_remote(uri) else artifact_root)


def fail_orphaned_run(tracking_cfg, sweep_id: str, job: int, reason: str) -> str | None:
    """Mark FAILED the run that a job left RUNNING when it was killed without a chance to end it; its run id.

    The job is found by the tags every run carries (`sweep.id`, `sweep.job`); None when it had not started one.
    """
    if not tracking_cfg.enabled:
        return None
    client, experiment_id = connect(tracking_cfg.uri, tracking_cfg.experiment, tracking_cfg.artifact_root)
    query = f"tags.`sweep.id` = '{sweep_id}' and tags.`sweep.job` = '{job}' and attributes.status = 'RUNNING'"
    runs = client.search_runs([experiment_id], filter_string=query)
    for run in runs:
        client.set_tag(run.info.run_id, "error", reason)
        client.set_terminated(run.info.run_id, "FAILED")
    return runs[0].info.run_id if runs else None


def _param_value(value) -> str:
    return str(value)[:PARAM_LIMIT]


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
    def start(
        cls, client: MlflowClient, experiment_id: str, run_name: str, params: dict, tags: dict[str, str]
    ) -> MlflowTracker:
        run = client.create_run(experiment_id, run_name=run_name, tags=tags)
        tracker = cls(client, run.info.run_id)
        entries = [Param(key, _param_value(value)) for key, value in params.items()]
        for start in range(0, len(entries), BATCH_LIMIT):
            client.log_batch(tracker.run_id, params=entries[start : start + BATCH_LIMIT])
        return tracker

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        """One batched call for all metrics of a step."""
        now = int(time.time() * 1000)
        entries = [Metric(key, float(value), now, step or 0) for key, value in metrics.items()]
        for start in range(0, len(entries), BATCH_LIMIT):
            self.client.log_batch(self.run_id, metrics=entries[start : start + BATCH_LIMIT])

    def log_epoch(self, epoch: int, metrics: dict[str, float]) -> None:
        """The epoch's metrics and a heartbeat tag in one call: a resumed sweep tells live runs from dead ones."""
        now = time.time()
        entries = [Metric(key, float(value), int(now * 1000), epoch) for key, value in metrics.items()]
        self.client.log_batch(self.run_id, metrics=entries, tags=[RunTag("heartbeat", f"{now:.0f}")])

    def logged_epochs(self) -> int:
        """How many epochs the run's history holds (the last step of test/loss)."""
        return max((metric.step for metric in self.client.get_metric_history(self.run_id, "test/loss")), default=0)

    @classmethod
    def reopen(cls, client: MlflowClient, run_id: str, tags: dict[str, str]) -> MlflowTracker:
        client.update_run(run_id, status="RUNNING")
        tracker = cls(client, run_id)
        tracker.set_tags({**tags, "error": "", "resumed": "true"})
        return tracker

    def set_tags(self, tags: dict[str, str]) -> None:
        self.client.log_batch(self.run_id, tags=[RunTag(key, str(value)) for key, value in tags.items()])

    def log_artifact(self, path: Path, artifact_path: str | None = None) -> None:
        self.client.log_artifact(self.run_id, str(path), artifact_path)

    def log_artifacts(self, folder: Path, artifact_path: str | None = None) -> None:
        self.client.log_artifacts(self.run_id, str(folder), artifact_path)

    def end(self, status: str, error: BaseException | None = None) -> None:
        if error is not None:
            message = f"{type(error).__name__}: {error}"[:PARAM_LIMIT]
            self.set_tags({"error": message, "mlflow.note.content": f"Failed: {message}"})
        self.client.set_terminated(self.run_id, status=status)


@dataclass
class Store:
    client: MlflowClient
    experiment_id: str


def open_store(tracking_cfg) -> Store | None:
    """The configured store and experiment, created if new; None when tracking is off."""
    if not tracking_cfg.enabled:
        return None
    return Store(*connect(tracking_cfg.uri, tracking_cfg.experiment, tracking_cfg.artifact_root))


@contextmanager
def tracked_run(
    store: Store | None, run_name: str, params: dict, tags: dict[str, str], resume_run_id: str | None = None
) -> Iterator[MlflowTracker | NullTracker]:
    """A run that ends FINISHED, FAILED (with the error on the run) or KILLED (Ctrl-C), whatever happens inside.

    With `resume_run_id` the interrupted run is reopened, so its metric history simply continues.
    """
    if store is None:
        yield NullTracker()
        return
    if resume_run_id is None:
        tracker = MlflowTracker.start(store.client, store.experiment_id, run_name, params, tags)
    else:
        tracker = MlflowTracker.reopen(store.client, resume_run_id, tags)
    log.info(f"MLflow run {tracker.run_id} ({run_name}){' resumed' if resume_run_id else ''}")
    try:
        yield tracker
    except KeyboardInterrupt:
        tracker.end("KILLED")
        raise
    except BaseException as error:
        tracker.end("FAILED", error)
        raise
    tracker.end("FINISHED")
