"""Which runs a report covers: the latest sweep, a sweep folder, an MLflow filter or all runs, and their raw frame."""

from __future__ import annotations

import os
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import mlflow
import pandas as pd
from mlflow.entities import Experiment
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from vae_sweep import names
from vae_sweep.errors import UserError
from vae_sweep.tracking.store import existing_store
from vae_sweep.tracking.sweeps import reused_runs

# Backquoted because the tag's name holds a dot, which MLflow's filter grammar would read as a path.
SWEEP_TAG = f"tags.`{names.TAG_SWEEP_ID}`"
# Runs per request while looking for the latest job run past the sweeps' parent runs.
PAGE = 100


@dataclass
class Selection:
    """Which runs of the experiment the report covers, as an MLflow filter string and in words."""

    filter: str
    description: str
    sweep: str | None = None
    narrowed_by: str | None = None  # the user's own filter, which the sweep's reused points must pass too


def open_experiment(uri: str, name: str) -> tuple[MlflowClient, Experiment]:
    """A client on an existing store and the existing experiment; a UserError saying which of the two is missing."""
    client = existing_store(uri, "run a sweep first, or pass --tracking-uri or set MLFLOW_TRACKING_URI.")
    experiment = client.get_experiment_by_name(name)
    if experiment is None:
        known = ", ".join(sorted(e.name for e in client.search_experiments())) or "none"
        raise UserError(f"No experiment {name!r} in {uri} (it holds: {known}); pass --experiment.")
    return client, experiment


def is_parent(tags: dict[str, str]) -> bool:
    """Whether a run is a sweep's parent run: it holds the sweep's counts and best trial, no result of its own."""
    return names.TAG_SWEEP_KIND in tags


def latest_sweep(client: MlflowClient, experiment_id: str) -> str:
    """The sweep.id of the job run started last.

    Not of the run started last: a sweep's parent run starts before any of its jobs, so a sweep just launched (or
    one whose every job failed to start) would be chosen with nothing to report.
    """
    page_token = None
    while True:
        runs = client.search_runs(
            [experiment_id],
            f"{SWEEP_TAG} LIKE '%'",
            order_by=["attributes.start_time DESC"],
            max_results=PAGE,
            page_token=page_token,
        )
        # A sweep whose every point an earlier run had finished started no job run: its parent stands for it.
        job = next((run for run in runs if not is_parent(run.data.tags) or reused_runs(run.data.tags)), None)
        if job is not None:
            return job.data.tags[names.TAG_SWEEP_ID]
        if not runs.token:
            raise UserError("The experiment holds no run of a sweep; pass --all or --filter to choose runs.")
        page_token = runs.token


def choose_selection(
    client: MlflowClient, experiment_id: str, sweep: str | None, filter_string: str | None, every_run: bool
) -> Selection:
    """--sweep and --filter narrow down together; with neither (and no --all), the latest sweep."""
    if sweep is not None:
        sweep = str(Path(sweep).resolve())  # sweep.id is the absolute multirun folder
    elif not every_run and not filter_string:
        sweep = latest_sweep(client, experiment_id)
    clauses = ([f"{SWEEP_TAG} = '{sweep}'"] if sweep else []) + ([filter_string] if filter_string else [])
    words = ([f"sweep {sweep}"] if sweep else []) + ([f"filter {filter_string}"] if filter_string else [])
    return Selection(" and ".join(clauses), ", ".join(words) or "all runs", sweep, filter_string)


@contextmanager
def tracking_uri(uri: str) -> Iterator[None]:
    """mlflow.search_runs reads the process-wide URI; set it for the call and put the previous one back.

    set_tracking_uri also exports MLFLOW_TRACKING_URI, which every later subprocess would inherit: restore it too.
    """
    previous, previous_env = mlflow.get_tracking_uri(), os.environ.get("MLFLOW_TRACKING_URI")
    mlflow.set_tracking_uri(uri)
    try:
        yield
    finally:
        mlflow.set_tracking_uri(previous)
        if previous_env is None:
            os.environ.pop("MLFLOW_TRACKING_URI", None)
        else:
            os.environ["MLFLOW_TRACKING_URI"] = previous_env


def without_parents(raw: pd.DataFrame) -> pd.DataFrame:
    """The job runs of MLflow's frame: no sweep's parent run, and none of the columns only parents fill (their
    search space, sampler and counts), which would otherwise read as params and metrics of every job."""
    kind = f"tags.{names.TAG_SWEEP_KIND}"
    if kind not in raw:
        return raw
    parents = raw[kind].notna()
    jobs = raw[~parents]
    only_parents = [column for column in raw if raw.loc[parents, column].notna().any() and jobs[column].isna().all()]
    return jobs.drop(columns=only_parents).reset_index(drop=True)


def _search_runs(uri: str, experiment_id: str, filter_string: str, selection: Selection) -> pd.DataFrame:
    try:
        with tracking_uri(uri):
            return mlflow.search_runs([experiment_id], filter_string, output_format="pandas")
    except MlflowException as error:
        raise UserError(f"MLflow rejected the selection ({selection.description}): {error.message}") from None


def with_reused(uri: str, experiment_id: str, selection: Selection, raw: pd.DataFrame) -> pd.DataFrame:
    """The selected sweep's runs and the points it reused: FINISHED runs of earlier sweeps that its parent records
    (tracking.sweeps.reused_runs), marked in a `reused` column."""
    raw = raw.assign(reused=False)
    columns = [column for column in raw if column.startswith(f"tags.{names.TAG_SWEEP_REUSED}")]
    if selection.sweep is None or not columns:
        return raw
    wanted = sorted(set(raw[columns].stack().dropna()) - set(raw["run_id"]))
    if not wanted:
        return raw
    clauses = [f"attributes.run_id IN ({', '.join(repr(run_id) for run_id in wanted)})"]
    clauses += [selection.narrowed_by] if selection.narrowed_by else []
    reused = _search_runs(uri, experiment_id, " and ".join(clauses), selection)
    both = pd.concat([raw, reused.assign(reused=True)], ignore_index=True)
    # A frame of a running parent alone has no end time, and its column no datetime type to keep in the concatenation.
    return both.assign(**{column: pd.to_datetime(both[column], utc=True) for column in ("start_time", "end_time")})


def search(uri: str, experiment_id: str, selection: Selection) -> pd.DataFrame:
    """MLflow's frame of the selected job runs (params., metrics., tags. columns) and, for a sweep, the earlier runs
    it reused as its points (`reused`); sweeps' parent runs left out; a UserError when it is empty."""
    raw = _search_runs(uri, experiment_id, selection.filter, selection)
    if not raw.empty:
        raw = with_reused(uri, experiment_id, selection, raw)
    if raw.empty:
        raise UserError(f"No runs match {selection.description}.")
    jobs = without_parents(raw)
    if jobs.empty:
        raise UserError(
            f"Only a sweep's parent run matches {selection.description}; it holds no results of its own, its jobs do."
        )
    return jobs
