"""The best run of a sweep as a registered model, so a team loads it by name: vae_sweep.load_model("models:/NAME@best").

python -m vae_sweep.registry register NAME [--sweep DIR | --run RUN_ID | --all] [--metric loss/val]

Like the report, it covers the latest sweep of the experiment unless told otherwise. Each call adds a model version
made from the chosen run's checkpoint artifact and moves the alias `best` to it. "Best" is the lowest validation loss
where every candidate run holds out a validation split (data.validation), else the lowest test loss: a choice the test
set made, which the printed reason says.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass

import pandas as pd
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import RESOURCE_ALREADY_EXISTS, ErrorCode
from mlflow.tracking import MlflowClient

from vae_sweep import names
from vae_sweep.analysis.report.select import Selection, choose_selection, open_experiment, search
from vae_sweep.analysis.report.table import PRUNED, QUALITIES
from vae_sweep.errors import UserError
from vae_sweep.tracking.store import default_tracking_uri

# The metrics a run can be chosen by: the validation loss and those the report ranks, each with its better direction.
LOWER_IS_BETTER = {
    names.VAL_LOSS: True,
    **{quality.column: quality.lower_is_better for quality in QUALITIES if quality.lower_is_better is not None},
}


@dataclass(frozen=True)
class Choice:
    run_id: str
    run_name: str
    artifact_uri: str
    metric: str
    value: float
    reason: str


def default_metric(finished: pd.DataFrame) -> str:
    """loss/val where every finished candidate has it, else loss/test."""
    column = f"metrics.{names.VAL_LOSS}"
    has_val = column in finished and not finished.empty and bool(finished[column].notna().all())
    return names.VAL_LOSS if has_val else names.TEST_LOSS


def choose_best(raw: pd.DataFrame, metric: str | None, selection: Selection) -> Choice:
    """The finished run with the best value of `metric` (None: default_metric) among the selected runs, and why it
    was chosen; a trial that its search pruned is no candidate, since it stopped before the epochs the others
    trained."""
    if metric is not None and metric not in LOWER_IS_BETTER:
        raise UserError(f"--metric {metric} has no better direction; choose one of: {', '.join(LOWER_IS_BETTER)}.")
    state = f"tags.{names.TAG_TRIAL_STATE}"
    stopped = raw[state].isin([PRUNED]) if state in raw else pd.Series(False, index=raw.index)
    finished = raw[(raw["status"] == "FINISHED") & ~stopped]
    metric = metric or default_metric(finished)
    column = f"metrics.{metric}"
    scored = finished[finished[column].notna()] if column in finished else finished.iloc[:0]
    if scored.empty:
        raise UserError(
            f"None of the {len(raw)} runs of {selection.description} FINISHED with the metric {metric}; "
            "choose other runs (--sweep, --run, --all) or another --metric."
        )
    lower = LOWER_IS_BETTER[metric]
    best = scored.loc[scored[column].idxmin() if lower else scored[column].idxmax()]
    value = float(best[column])
    if len(scored) == 1:
        reason = f"the only finished run of {selection.description} with {metric} ({value:.4g})"
    else:
        reason = (
            f"the {'lowest' if lower else 'highest'} {metric} ({value:.4g}; {'lower' if lower else 'higher'} is "
            f"better) of the {len(scored)} finished runs of {selection.description}"
        )
    reason += f"; selected on the {split_of(metric)}"
    name = best.get("tags.mlflow.runName") or best["run_id"]
    return Choice(best["run_id"], name, best["artifact_uri"], metric, value, reason)


def split_of(metric: str) -> str:
    """Which data chose: a test-set choice is an optimistic estimate of the winner's test loss."""
    if metric.endswith("/" + names.VAL):
        return "validation split"
    if metric.endswith("/test") or metric.startswith("quality/test"):
        return "test set (no validation split: the winner's test number is optimistic)"
    return f"metric {metric}"


def register(client: MlflowClient, name: str, choice: Choice) -> ModelVersion:
    """A new version of model `name` (created on first use) holding the run's checkpoint, aliased `best`."""
    stored = {item.path for item in client.list_artifacts(choice.run_id, names.ARTIFACT_CHECKPOINT)}
    if f"{names.ARTIFACT_CHECKPOINT}/{names.CHECKPOINT}" not in stored:
        raise UserError(f"Run {choice.run_id} holds no {names.ARTIFACT_CHECKPOINT}/{names.CHECKPOINT} to register.")
    try:
        try:
            client.create_registered_model(name, description="VAEs trained by vae-sweep, best run per registration.")
        except MlflowException as error:
            if error.error_code != ErrorCode.Name(RESOURCE_ALREADY_EXISTS):
                raise
        version = client.create_model_version(
            name,
            source=f"{choice.artifact_uri}/{names.ARTIFACT_CHECKPOINT}",
            run_id=choice.run_id,
            tags={choice.metric: str(choice.value)},
            description=f"Run {choice.run_name}: {choice.reason}.",
        )
        client.set_registered_model_alias(name, names.BEST_ALIAS, version.version)
    except MlflowException as error:
        raise UserError(f"The registry refused model {name!r}: {error.message}") from None
    return version


def register_command(args: argparse.Namespace) -> None:
    uri = args.tracking_uri or default_tracking_uri()
    client, experiment = open_experiment(uri, args.experiment)
    if args.run:
        selection = Selection(f"attributes.run_id = '{args.run}'", f"run {args.run}")
    else:
        selection = choose_selection(client, experiment.experiment_id, args.sweep, None, args.all)
    choice = choose_best(search(uri, experiment.experiment_id, selection), args.metric, selection)
    version = register(client, args.name, choice)
    print(f"Registered {args.name} version {version.version} from run {choice.run_id} ({choice.run_name}):")
    print(f"  {choice.reason}.")
    print(f"  Alias {names.BEST_ALIAS!r} points here: vae_sweep.load_model({names.model_uri(args.name)!r}) loads it.")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m vae_sweep.registry", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    registering = commands.add_parser("register", help="register the best run's checkpoint, aliased best")
    registering.add_argument("name", help="the registered model's name, e.g. mnist-vae")
    registering.add_argument("--experiment", default="vae_sweep", help="the MLflow experiment of the runs (vae_sweep)")
    which = registering.add_mutually_exclusive_group()
    which.add_argument("--sweep", help="a sweep's multirun folder (its sweep.id tag); default: the latest sweep")
    which.add_argument("--run", help="this run, whatever its metric")
    which.add_argument("--all", action="store_true", help="every run of the experiment")
    registering.add_argument(
        "--metric",
        help=f"what 'best' means (default {names.VAL_LOSS} where every run holds out a validation split, else "
        f"{names.TEST_LOSS})",
    )
    registering.add_argument("--tracking-uri", help="the store (default: MLFLOW_TRACKING_URI, else ./mlflow.db)")
    register_command(parser.parse_args(argv))
    return 0
