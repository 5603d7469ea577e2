"""A search's side of the report: its trials as their runs logged them, read beside the search's parent run, and the
parameter importances that only its Optuna study can give."""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import optuna
import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from optuna.trial import TrialState
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, SQLAlchemyError

from vae_sweep import names
from vae_sweep.analysis.report.table import COMPLETE

MAXIMIZE = "maximize"
# `tag(log, interval(1e-4, 3e-3))`: a dimension sampled on a log scale, among any other tags.
LOG_TAG = re.compile(r"\btag\([^()]*\blog\b")


class Unavailable(Exception):
    """Why the study cannot give importances, in one sentence for the report."""


@dataclass(frozen=True)
class Search:
    """What a search's parent run records about it."""

    parent: str  # the parent run's id
    study: str
    storage: str | None
    objective: str  # a per-epoch metric; a trial's value is its latest
    direction: str
    space: dict[str, str]  # config key -> its dimension in Hydra's sweep grammar

    @property
    def lower_is_better(self) -> bool:
        return self.direction != MAXIMIZE

    def is_log(self, key: str) -> bool:
        return bool(LOG_TAG.search(self.space.get(key, "")))


def read_search(client: MlflowClient, parent: str) -> Search | None:
    """The search of a parent run; None, with a warning, when the run cannot be read."""
    try:
        run = client.get_run(parent)
    except MlflowException as error:
        print(f"warning: no search section for parent run {parent}: {error.message}", file=sys.stderr)
        return None
    tags, params = run.data.tags, run.data.params
    return Search(
        parent=parent,
        study=tags.get(names.TAG_STUDY, ""),
        storage=tags.get(names.TAG_STORAGE),
        objective=names.current_metric(tags.get(names.TAG_OBJECTIVE, names.TEST_LOSS)),
        direction=tags.get(names.TAG_DIRECTION, "minimize"),
        space={
            key.removeprefix(names.SEARCH_SPACE_PARAM): value
            for key, value in sorted(params.items())
            if key.startswith(names.SEARCH_SPACE_PARAM)
        },
    )


def searches(client: MlflowClient, runs: pd.DataFrame) -> list[Search]:
    """The searches that the selected runs are trials of, one per parent run, in the order their trials started."""
    parents = runs.loc[runs["study"].notna(), "parent"].dropna().unique()
    return [search for search in (read_search(client, parent) for parent in parents) if search is not None]


def trials(search: Search, runs: pd.DataFrame) -> pd.DataFrame:
    """The search's trials among the runs, in trial order, each with its objective: the metric's latest value, so
    a pruned trial's is its value at the epoch it stopped."""
    own = runs[runs["parent"] == search.parent].sort_values("trial", kind="stable")
    values = own[search.objective] if search.objective in own else pd.Series(np.nan, index=own.index)
    return own.assign(objective=values)


def complete(trials: pd.DataFrame) -> pd.DataFrame:
    """The trials the study counts: FINISHED runs it did not prune, with an objective value."""
    done = (trials["status"] == "FINISHED") & trials["trial_state"].isin([COMPLETE]) & trials["objective"].notna()
    return trials[done]


def best_trial(search: Search, trials: pd.DataFrame) -> pd.Series | None:
    scored = complete(trials)
    if scored.empty:
        return None
    values = scored["objective"]
    return scored.loc[values.idxmin() if search.lower_is_better else values.idxmax()]


def stored_nowhere(storage: str) -> str | None:
    """The file of a SQLite storage that is not there, which Optuna would create empty rather than read."""
    try:
        url = make_url(storage)
    except ArgumentError:
        return None  # Optuna says what is wrong with it
    if url.get_backend_name() != "sqlite" or not url.database or Path(url.database).is_file():
        return None
    return url.database


def importances(search: Search) -> dict[str, float]:
    """Optuna's importance of each searched key over the study's complete trials, most important first; raises
    Unavailable when the study cannot say."""
    if not search.storage:
        raise Unavailable("The search's parent run records no Optuna storage to load its study from.")
    missing = stored_nowhere(search.storage)
    if missing:
        raise Unavailable(f"No parameter importances: the study's storage {missing} is gone.")
    try:
        study = optuna.load_study(study_name=search.study, storage=search.storage)
    except (KeyError, ImportError, RuntimeError, SQLAlchemyError, optuna.exceptions.OptunaError) as error:
        raise Unavailable(f"No parameter importances: Optuna could not load study {search.study!r}: {error}") from None
    done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if len(done) < 2:
        raise Unavailable(
            f"No parameter importances: they take two complete trials or more, and the study has {len(done)}."
        )
    keys = sorted({key for trial in done for key in trial.params})
    if len(keys) < 2:
        raise Unavailable(
            "No parameter importances: they weigh two searched dimensions or more against each other, and the "
            f"study searched only {', '.join(keys) or 'nothing'}."
        )
    try:
        return optuna.importance.get_param_importances(study)
    except (ValueError, RuntimeError) as error:
        raise Unavailable(f"No parameter importances: Optuna could not compute them: {error}") from None
