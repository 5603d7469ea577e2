"""A job's run, tracked or not: `tracked_run` ends it honestly however the job ends; with tracking off it is a
NullTracker, so callers never branch on it.

MLflow is imported only where a run is tracked (tracking.mlflow_tracker): a job with tracking off, a config error and
`--cfg job` never load it (about 2 s of start-up).
"""

from __future__ import annotations

import logging
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Iterator, Union

import numpy as np

from vae_sweep.core.signals import held

if TYPE_CHECKING:
    from vae_sweep.tracking.mlflow_tracker import MlflowTracker
    from vae_sweep.tracking.store import Store

log = logging.getLogger(__name__)


@dataclass
class DataSplit:
    """One split a run read, as MLflow's dataset lineage records it."""

    dataset: str  # 'mnist'
    split: str  # 'train' or 'test': the input's context in the UI
    file_md5s: dict[str, str]  # of the raw files it was read from
    folder: Path
    images: int


class NullTracker:
    """Stands in for MlflowTracker when tracking is off."""

    run_id = None

    def log_epoch(self, epoch: int, metrics: dict[str, float]) -> None:
        pass

    def logged_epochs(self) -> int:
        return 0

    def beat(self) -> None:
        pass

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        pass

    def set_tags(self, tags: dict[str, str]) -> None:
        pass

    def log_artifact(self, path: Path, artifact_path: str | None = None) -> None:
        pass

    def log_artifacts(self, folder: Path, artifact_path: str | None = None) -> None:
        pass

    def log_image(self, image: np.ndarray, key: str, step: int) -> None:
        pass

    def log_datasets(self, splits: list[DataSplit]) -> None:
        pass

    def artifact_link(self, path: str) -> str:
        return path


# What a job logs to, tracked or not.
Tracker = Union["MlflowTracker", NullTracker]


@contextmanager
def tracked_run(
    store: Store | None,
    run_name: str,
    params: dict,
    tags: dict[str, str],
    resume_run_id: str | None = None,
    system_metrics_s: float = 0.0,
) -> Iterator[Tracker]:
    """A run that ends FINISHED, FAILED (with the error on the run) or KILLED (Ctrl-C or another stop signal, see
    core.signals), whatever happens inside.

    With `resume_run_id` the interrupted run is reopened, so its metric history simply continues.
    """
    if store is None:
        yield NullTracker()
        return
    from vae_sweep.tracking.mlflow_tracker import MlflowTracker, system_metrics
    from vae_sweep.tracking.store import refusals_explained

    tracker = None
    try:
        # A stop signal waits until the run exists and is ended below; a user signed in with only READ on the
        # experiment is refused here, before the run exists.
        with held(), refusals_explained(store.client.tracking_uri):
            if resume_run_id is None:
                tracker = MlflowTracker.start(store.client, store.experiment_id, run_name, params, tags)
            else:
                tracker = MlflowTracker.reopen(store.client, resume_run_id, tags)
        log.info(f"MLflow run {tracker.run_id} ({run_name}){' resumed' if resume_run_id else ''}")
        with system_metrics(store, tracker.run_id, system_metrics_s, resume_run_id is not None):
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
