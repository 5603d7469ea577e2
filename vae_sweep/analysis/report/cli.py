"""A sweep's report: how quality changes with latent size (and epochs, beta, ...), read back from MLflow.

python -m vae_sweep.report [--sweep DIR | --all] [--filter EXPR] [--x model.latent] [--out DIR] [--no-log]

Without --sweep, --filter or --all it covers the latest sweep of the experiment, so the bare command works right after
one; --filter narrows --sweep, or on its own selects from the whole experiment. The report is logged as a run of
'<experiment>-reports' and, when it covers one whole sweep, under report/ of the sweep's parent run too.
"""

from __future__ import annotations

import argparse
import os
from datetime import datetime
from pathlib import Path
from urllib.parse import urlparse

import pandas as pd
from mlflow.entities import Experiment
from mlflow.tracking import MlflowClient

from vae_sweep import names
from vae_sweep.analysis.report import document, papers, plots, questions, render, study
from vae_sweep.analysis.report.findings import findings, setting
from vae_sweep.analysis.report.select import Selection, choose_selection, open_experiment, search
from vae_sweep.analysis.report.table import (
    LATENT,
    aggregate,
    download_pictures,
    fetch_histories,
    finished,
    has_values,
    param_columns,
    pruned,
    representatives,
    runs_table,
    swept_params,
)
from vae_sweep.errors import UserError
from vae_sweep.tracking.runs import tracked_run
from vae_sweep.tracking.store import Store, default_tracking_uri, ensure_experiment

# Above this many runs the learning curves show one run per setting: more lines are a blur, and fetching every
# history (one request per run and metric) would take most of the report's time.
CURVE_RUN_LIMIT = 100


def check_x(runs: pd.DataFrame, x: str) -> None:
    if x not in param_columns(runs):
        raise UserError(f"--x {x} is not a param of the selected runs; they have: {', '.join(param_columns(runs))}.")


def curve_runs(runs: pd.DataFrame, points: pd.DataFrame) -> tuple[pd.DataFrame, str]:
    """The runs whose histories the report fetches, and who they are in words."""
    if len(runs) <= CURVE_RUN_LIMIT:
        return runs, f"every finished run ({len(runs)})"
    return representatives(points, runs), f"one run per setting (its lowest seed) of {len(runs)}"


def kl_settings(points: pd.DataFrame, keys: list[str], fetched: set[str]) -> dict[str, list[str]]:
    """Each setting's label and its runs whose history was fetched, which the KL's course is answered over; a label
    says so where that is fewer runs than the setting has (one per setting above CURVE_RUN_LIMIT runs), so that one
    seed's answer is not read as the setting's."""
    settings = {}
    for _, row in points.iterrows():
        ids = [run_id for run_id in row["run_ids"] if run_id in fetched]
        label = setting(row, keys)
        if 0 < len(ids) < len(row["run_ids"]):
            label += f" ({len(ids)} of its {len(row['run_ids'])} runs: more than {CURVE_RUN_LIMIT} runs were selected)"
        settings[label] = ids
    return settings


def draw_figures(
    runs: pd.DataFrame, points: pd.DataFrame, x: str, others: list[str], histories: pd.DataFrame, folder: Path
) -> dict[str, Path]:
    """The report's figures in folder, by file name (paths relative to folder)."""
    drawn = [plots.plot_quality_vs_x(points, x, others, folder / names.FIG_QUALITY_VS_X)]
    if has_values(points, names.Q_ACTIVE_UNITS) and LATENT in points:
        drawn.append(plots.plot_active_units(points, [x, *others], folder / names.FIG_ACTIVE_UNITS))
    curves, which = curve_runs(runs, points)
    legend = dict(zip(curves["run_id"], curves["run_name"].fillna(curves["run_id"]), strict=True))
    drawn.append(plots.plot_learning_curves(histories, legend, which, folder / names.FIG_LEARNING_CURVES))
    if has_values(runs, names.TEST_KL) and has_values(runs, names.TEST_RECON):
        drawn.append(plots.plot_rate_distortion(runs, x, folder / names.FIG_RATE_DISTORTION))
    return {path.name: path.relative_to(folder) for path in drawn}


def search_section(search: study.Search, runs: pd.DataFrame, folder: Path) -> document.Section:
    """A search's section, its figures drawn in folder/search/<parent run id>/."""
    trials = study.trials(search, runs)
    done = study.complete(trials)
    where = folder / names.REPORT_SEARCH / search.parent
    lower = search.lower_is_better
    drawn = [plots.plot_search_history(done, pruned(trials), search.objective, lower, where / names.FIG_SEARCH_HISTORY)]
    if not done.empty:
        keys = [key for key in search.space if key in done]
        logs = {key for key in keys if search.is_log(key)}
        path = where / names.FIG_SEARCH_PARALLEL
        drawn.append(plots.plot_parallel_coordinates(done, keys, logs, search.objective, lower, path))
    try:
        weights: dict[str, float] | str = study.importances(search)
    except study.Unavailable as reason:
        weights = str(reason)
    figures = {path.name: path.relative_to(folder) for path in drawn}
    return document.search_section(search, trials, study.best_trial(search, trials), weights, figures)


def write_report(client: MlflowClient, runs: pd.DataFrame, x: str, title: str, uri: str, folder: Path) -> list[str]:
    """report.html, report.md, runs.csv and the figures in folder; returns the findings."""
    folder.mkdir(parents=True, exist_ok=True)
    runs.to_csv(folder / names.REPORT_RUNS, index=False)
    done = finished(runs)
    swept = swept_params(done)
    sections = [document.overview(runs, uri, x, swept)]
    searched = [search_section(search, runs, folder) for search in study.searches(client, runs)]
    if done.empty:
        lines = ["No selected run finished, so there is nothing to compare."]
        sections += [document.findings_section(lines), *searched]
    else:
        others = [param for param in swept if param != x]
        keys = [x, *others]
        points = aggregate(done, keys)
        lines = findings(points, x, others)
        shown = representatives(points, done)
        pictures = download_pictures(client, shown, folder / names.REPORT_PICTURES)
        curves, which = curve_runs(done, points)
        keys_fetched = tuple(dict.fromkeys(plots.HISTORY_KEYS + questions.HISTORY_KEYS))
        histories = fetch_histories(client, curves["run_id"].tolist(), keys_fetched)
        labels = kl_settings(points, keys, set(curves["run_id"]))
        comparisons, left_out = papers.comparison(done)
        sections += [
            document.findings_section(lines),
            *searched,
            *([document.papers_section(comparisons, left_out)] if comparisons or left_out else []),
            document.questions_section(
                questions.kl_rise_lines(histories, labels), questions.latent_lines(points, x, others)
            ),
            document.results_section(points, done, keys),
            document.figures_section(points, x, draw_figures(done, points, x, others, histories, folder), which),
            document.gallery_section(points, shown, pictures, keys, folder),
        ]
    sections.append(document.unfinished_section(runs))
    render.write(title, sections, folder)
    return lines


def artifact_root_of(experiment: Experiment) -> str | None:
    """The folder of a file-based experiment's artifacts; None (the server decides) for any other kind."""
    location = urlparse(experiment.artifact_location)
    return location.path if location.scheme == "file" else None


def log_report(
    client: MlflowClient, experiment: Experiment, selection: Selection, x: str, runs: int, folder: Path
) -> str:
    """The report as its own run in '<experiment>-reports', beside the experiment's own artifacts; its run id."""
    reports_id = ensure_experiment(client, names.reports_experiment(experiment.name), artifact_root_of(experiment))
    params = {"experiment": experiment.name, "selection": selection.description, "x": x, "runs": runs}
    if selection.filter:
        params["filter"] = selection.filter
    tags = {names.TAG_SWEEP_ID: selection.sweep} if selection.sweep else {}
    with tracked_run(Store(client, reports_id), f"report {folder.name}", params, tags) as tracker:
        tracker.log_artifacts(folder)
    return tracker.run_id


def sweep_parent(runs: pd.DataFrame) -> str | None:
    """The parent run that every one of the runs is a job of, if there is one; the points it reused from earlier
    sweeps stay nested under theirs."""
    parents = runs.loc[~runs["reused"], "parent"].unique()
    return parents[0] if len(parents) == 1 and pd.notna(parents[0]) else None


def default_folder(experiment: str) -> Path:
    return Path("reports") / f"{experiment}-{datetime.now():%Y-%m-%d_%H-%M-%S}"


def report(args: argparse.Namespace) -> Path:
    uri = args.tracking_uri or default_tracking_uri()
    client, experiment = open_experiment(uri, args.experiment)
    only_papers = args.compare_paper and not (args.sweep or args.filter or args.all)
    chosen_filter = papers.PRESET_FILTER if only_papers else args.filter
    selection = choose_selection(client, experiment.experiment_id, args.sweep, chosen_filter, args.all)
    runs = runs_table(search(uri, experiment.experiment_id, selection))
    if only_papers:
        runs = papers.of_papers(runs)
        if runs.empty:
            presets = ", ".join(f"experiment={paper.preset}" for paper in papers.PAPERS)
            raise UserError(
                f"No runs of a paper preset in experiment {args.experiment!r}; train one first ({presets})."
            )
    check_x(runs, args.x)
    # Absolute, so that the downloaded pictures' paths relate to it.
    folder = (Path(args.out) if args.out else default_folder(args.experiment)).resolve()
    lines = write_report(client, runs, args.x, f"{args.experiment}: {selection.description}", uri, folder)
    print("\n".join(f"- {line}" for line in lines))
    if args.compare_paper:
        rows, left_out = papers.comparison(runs)
        print(papers.text_table(rows) if rows else "No finished run of a paper preset to compare.")
        if left_out:
            print("\n".join(left_out))
    if not args.no_log:
        run_id = log_report(client, experiment, selection, args.x, len(runs), folder)
        print(f"logged as run {run_id} in experiment {names.reports_experiment(args.experiment)}")
        # Only a report of a whole sweep stands for it on its parent run: a filtered one would show a part as the whole.
        parent = sweep_parent(runs) if selection.sweep and not chosen_filter else None
        if parent is not None:
            client.log_artifacts(parent, str(folder), names.ARTIFACT_REPORT)
            print(f"and under {names.ARTIFACT_REPORT}/ of the sweep's parent run {parent}")
    return folder


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m vae_sweep.report", description=__doc__.split("\n")[0])
    parser.add_argument("--experiment", default="vae_sweep", help="the MLflow experiment of the runs (vae_sweep)")
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--sweep", help="a sweep's multirun folder (its sweep.id tag); default: the latest sweep")
    which.add_argument("--all", action="store_true", help="every run of the experiment")
    parser.add_argument(
        "--filter",
        help="an MLflow filter string, e.g. \"params.training.epochs = '100'\"; narrows --sweep or, alone, all runs",
    )
    parser.add_argument("--tracking-uri", help="the store (default: MLFLOW_TRACKING_URI, else ./mlflow.db)")
    parser.add_argument("--out", help="the report folder (default: reports/<experiment>-<timestamp>)")
    parser.add_argument("--x", default=LATENT, help=f"the param on the x axis ({LATENT})")
    parser.add_argument(
        "--compare-paper",
        action="store_true",
        help="print ours-vs-paper for runs of paper presets (alone: every such run of the experiment)",
    )
    parser.add_argument(
        "--no-log",
        action="store_true",
        help="do not log the report as a run in <experiment>-reports, nor to the sweep's parent run",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # One progress bar per downloaded picture would bury the findings.
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    print(report(args))
    return 0
