"""A sweep's report: how quality changes with latent size (and epochs, beta, ...), read back from MLflow.

python -m vae_sweep.report [--sweep DIR | --all] [--filter EXPR] [--x model.latent] [--out DIR] [--no-log]

Without --sweep, --filter or --all it covers the latest sweep of the experiment, so the bare command works right after
one; --filter narrows --sweep, or on its own selects from the whole experiment.
"""

from __future__ import annotations

import argparse
import base64
import html
import os
import sys
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Iterator
from urllib.parse import urlparse

import mlflow
import numpy as np
import pandas as pd
from matplotlib.ticker import MaxNLocator, NullFormatter, ScalarFormatter
from mlflow.entities import Experiment
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from vae_sweep.errors import UserError
from vae_sweep.evaluation.plotting import plt, saved_figure
from vae_sweep.tracking.runs import tracked_run
from vae_sweep.tracking.store import Store, default_tracking_uri, ensure_experiment, existing_store

# Params that say where or how a run went rather than what was trained: never a dimension of the sweep.
UNSWEPT_PREFIXES = ("paths.", "tracking.")
UNSWEPT = {
    "data.root",
    "eval.classifier_dir",
    "training.seed",
    "training.progress",
    "training.device",
    "training.threads",
}
SEED = "training.seed"
LATENT = "model.latent"
EPOCHS = "training.epochs"
TEST_LOSS = "final/test/loss"
ACTIVE_UNITS = "quality/active_units"
# The learning-curve panels: (term, title); each term is logged as train/<term> and test/<term> per epoch.
LOSS_TERMS = (("loss", "total (the objective)"), ("kl", "KL"), ("recon", "reconstruction"))
HISTORY_KEYS = tuple(f"{split}/{term}" for term, _ in LOSS_TERMS for split in ("train", "test"))
# A tracking server answers each history request in a round trip; this many run side by side.
FETCH_WORKERS = 8
SATURATION_NATS = 1.0
# Above this many runs the learning curves show one run per setting: more lines are a blur, and fetching every
# history (one request per run and metric) would take most of the report's time.
CURVE_RUN_LIMIT = 100
LEGEND_LIMIT = 20
MISSING = "—"


@dataclass(frozen=True)
class Quality:
    column: str
    name: str
    spec: str = ".2f"
    lower_is_better: bool | None = True  # None: neither direction is "better" (KL, active units, time)
    reference: str | None = None  # the same score of real data, for scale


QUALITIES = (
    Quality(TEST_LOSS, "test loss"),
    Quality("final/test/recon", "reconstruction"),
    Quality("final/test/kl", "KL", lower_is_better=None),
    Quality("quality/iwae_nll", "IWAE NLL"),
    Quality(ACTIVE_UNITS, "active units", ".1f", lower_is_better=None),
    Quality("quality/fid", "FID", reference="quality/fid_reference"),
    Quality(
        "quality/inception_score",
        "inception score",
        lower_is_better=False,
        reference="quality/inception_score_reference",
    ),
    Quality("quality/train_test_gap", "train–test gap", lower_is_better=None),
)
WALL_TIME = Quality("wall_time_s", "wall time (s)", ".0f", lower_is_better=None)
# The panels of the quality-vs-x figure, all in nats per image.
CURVES = ("final/test/loss", "final/test/recon", "final/test/kl", "quality/iwae_nll")
# Per run, side by side; the latent pictures only say something for 2-D latents.
GALLERY = ("reconstructions.png", "samples.png")
GALLERY_2D = ("latent_scatter.png", "manifold.png")


# ---- selecting and loading runs -----------------------------------------------------------------------------------


@dataclass
class Selection:
    """Which runs of the experiment the report covers, as an MLflow filter string and in words."""

    filter: str
    description: str
    sweep: str | None = None


def open_experiment(uri: str, name: str) -> tuple[MlflowClient, Experiment]:
    """A client on an existing store and the existing experiment; a UserError saying which of the two is missing."""
    client = existing_store(uri, "run a sweep first, or pass --tracking-uri or set MLFLOW_TRACKING_URI.")
    experiment = client.get_experiment_by_name(name)
    if experiment is None:
        known = ", ".join(sorted(e.name for e in client.search_experiments())) or "none"
        raise UserError(f"No experiment {name!r} in {uri} (it holds: {known}); pass --experiment.")
    return client, experiment


def latest_sweep(client: MlflowClient, experiment_id: str) -> str:
    """The sweep.id of the run started last."""
    runs = client.search_runs(
        [experiment_id], "tags.`sweep.id` LIKE '%'", order_by=["attributes.start_time DESC"], max_results=1
    )
    if not runs:
        raise UserError("The experiment holds no run of a sweep; pass --all or --filter to choose runs.")
    return runs[0].data.tags["sweep.id"]


def choose_selection(
    client: MlflowClient, experiment_id: str, sweep: str | None, filter_string: str | None, every_run: bool
) -> Selection:
    """--sweep and --filter narrow down together; with neither (and no --all), the latest sweep."""
    if sweep is not None:
        sweep = str(Path(sweep).resolve())  # sweep.id is the absolute multirun folder
    elif not every_run and not filter_string:
        sweep = latest_sweep(client, experiment_id)
    clauses = ([f"tags.`sweep.id` = '{sweep}'"] if sweep else []) + ([filter_string] if filter_string else [])
    words = ([f"sweep {sweep}"] if sweep else []) + ([f"filter {filter_string}"] if filter_string else [])
    return Selection(" and ".join(clauses), ", ".join(words) or "all runs", sweep)


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


def search(uri: str, experiment_id: str, selection: Selection) -> pd.DataFrame:
    """MLflow's frame of the selected runs (params., metrics., tags. columns); a UserError when it is empty."""
    try:
        with tracking_uri(uri):
            raw = mlflow.search_runs([experiment_id], selection.filter, output_format="pandas")
    except MlflowException as error:
        raise UserError(f"MLflow rejected the selection ({selection.description}): {error.message}") from None
    if raw.empty:
        raise UserError(f"No runs match {selection.description}.")
    return raw


def cast_param(values: pd.Series) -> pd.Series:
    """A param column as ints, floats or bools when every recorded value is one; anything else (lists) stays text."""
    present = values.dropna().astype(str)
    if present.empty:
        return values
    if present.str.fullmatch(r"[+-]?\d+").all():
        numbers = pd.to_numeric(values)
        return numbers.astype("int64" if numbers.notna().all() else "Int64")
    if present.str.lower().isin(["true", "false"]).all():
        return values.str.lower().map({"true": True, "false": False})
    numbers = pd.to_numeric(values, errors="coerce")
    return numbers if numbers[present.index].notna().all() else values


def _column(raw: pd.DataFrame, name: str) -> pd.Series:
    return raw[name] if name in raw else pd.Series(pd.NA, index=raw.index, dtype="object")


def runs_table(raw: pd.DataFrame) -> pd.DataFrame:
    """One row per run: run_id, run_name, status, error, sweep and start_time, the params under their dotted config
    keys (typed), the final/ and quality/ metrics under their names, and wall_time_s."""
    metrics = {
        name.removeprefix("metrics."): raw[name]
        for name in raw
        if name.startswith(("metrics.final/", "metrics.quality/"))
    }
    duration = (raw["end_time"] - raw["start_time"]).dt.total_seconds()
    wall_time = metrics["quality/wall_time_s"].fillna(duration) if "quality/wall_time_s" in metrics else duration
    identity = {
        "run_id": raw["run_id"],
        "run_name": _column(raw, "tags.mlflow.runName"),
        "status": raw["status"],
        "error": _column(raw, "tags.error"),
        "sweep": _column(raw, "tags.sweep.id"),
        "start_time": raw["start_time"],
    }
    params = {name.removeprefix("params."): cast_param(raw[name]) for name in raw if name.startswith("params.")}
    table = pd.DataFrame({**identity, **params, **metrics, WALL_TIME.column: wall_time})
    return table.sort_values("start_time", kind="stable").reset_index(drop=True)


def param_columns(runs: pd.DataFrame) -> list[str]:
    """Params are the config's dotted keys; metric names hold a slash and the run's own columns neither."""
    return [name for name in runs if "." in name and "/" not in name]


def metric_columns(runs: pd.DataFrame) -> list[str]:
    return [name for name in runs if "/" in name] + [WALL_TIME.column]


def is_sweepable(param: str) -> bool:
    return param not in UNSWEPT and not param.startswith(UNSWEPT_PREFIXES)


def swept_params(runs: pd.DataFrame) -> list[str]:
    """The params that take more than one value among the runs, leaving out seeds, paths and the like."""
    return sorted(p for p in param_columns(runs) if is_sweepable(p) and runs[p].nunique(dropna=False) > 1)


def finished(runs: pd.DataFrame) -> pd.DataFrame:
    return runs[runs["status"] == "FINISHED"]


def unfinished(runs: pd.DataFrame) -> pd.DataFrame:
    return runs[runs["status"] != "FINISHED"]


def aggregate(runs: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """One row per setting of `keys`: each metric's mean, its std over seeds as '<metric> std', the number of runs as
    `seeds`, their ids (lowest seed first) as `run_ids`, and the first value of every other config key."""
    order = keys + ([SEED] if SEED in runs and SEED not in keys else [])
    grouped = runs.sort_values(order, kind="stable").groupby(keys, dropna=False, sort=True)
    metrics = metric_columns(runs)
    constants = [p for p in param_columns(runs) if p not in keys and is_sweepable(p)]
    points = pd.concat(
        [
            grouped.size().rename("seeds"),
            grouped[metrics].mean(),
            grouped[metrics].std().add_suffix(" std"),
            grouped["run_id"].agg(list).rename("run_ids"),
            grouped[constants].first(),
        ],
        axis=1,
    )
    return points.reset_index()


def fetch_histories(client: MlflowClient, run_ids: list[str], keys: tuple[str, ...] = HISTORY_KEYS) -> pd.DataFrame:
    """The per-epoch values of `keys` for each run, long form: run_id, key, step, value."""

    def fetch(job: tuple[str, str]) -> list[tuple[str, str, int, float]]:
        run_id, key = job
        return [(run_id, key, metric.step, metric.value) for metric in client.get_metric_history(run_id, key)]

    jobs = [(run_id, key) for run_id in run_ids for key in keys]
    with ThreadPoolExecutor(FETCH_WORKERS) as pool:
        rows = [row for rows in pool.map(fetch, jobs) for row in rows]
    return pd.DataFrame(rows, columns=["run_id", "key", "step", "value"]).sort_values(["run_id", "key", "step"])


def download_pictures(client: MlflowClient, runs: pd.DataFrame, folder: Path) -> dict[str, dict[str, Path]]:
    """Run id -> {figure file name -> local copy} of the run's gallery figures that it has, downloaded under folder."""

    def fetch(run: pd.Series) -> tuple[str, dict[str, Path]]:
        wanted = GALLERY + (GALLERY_2D if run.get(LATENT) == 2 else ())
        try:
            present = {Path(artifact.path).name for artifact in client.list_artifacts(run["run_id"], "figures")}
            target = folder / run["run_id"]
            target.mkdir(parents=True, exist_ok=True)
            pictures = {
                name: Path(client.download_artifacts(run["run_id"], f"figures/{name}", str(target)))
                for name in wanted
                if name in present
            }
        except (MlflowException, OSError) as error:
            # Artifacts on another machine's disk, say: the report goes on without this run's pictures.
            print(f"warning: no figures for run {run['run_id']}: {error}", file=sys.stderr)
            pictures = {}
        return run["run_id"], pictures

    with ThreadPoolExecutor(FETCH_WORKERS) as pool:
        return dict(pool.map(fetch, (run for _, run in runs.iterrows())))


# ---- findings: pure functions over the per-setting frame -----------------------------------------------------------


def short_names(keys: list[str]) -> dict[str, str]:
    """'training.epochs' -> 'epochs', unless two keys would share the short name."""
    last = [key.rsplit(".", 1)[-1] for key in keys]
    return {key: short if last.count(short) == 1 else key for key, short in zip(keys, last, strict=True)}


def setting(row: pd.Series, keys: list[str]) -> str:
    """'latent=10, epochs=5'."""
    names = short_names(keys)
    return ", ".join(f"{names[key]}={row[key]}" for key in keys)


def groups(points: pd.DataFrame, others: list[str]) -> Iterator[tuple[str, pd.DataFrame]]:
    """The points split by the values of `others`, each with its setting as a label ('' without others)."""
    if not others:
        yield "", points
        return
    for _, group in points.groupby(others, dropna=False, sort=True):
        yield setting(group.iloc[0], others), group


def best_setting(points: pd.DataFrame, metric: str, lower_is_better: bool = True) -> pd.Series | None:
    """The row with the best mean of `metric`; None when no setting has it."""
    if metric not in points or points[metric].isna().all():
        return None
    return points.loc[points[metric].idxmin() if lower_is_better else points[metric].idxmax()]


def find_saturation(points: pd.DataFrame, x: str, metric: str = TEST_LOSS, threshold: float = SATURATION_NATS):
    """The smallest x beyond which `metric` (lower is better) improves by less than `threshold`: no larger x beats it
    by that much. None when even the last step gains that much, or with fewer than two values of x."""
    curve = points.groupby(x)[metric].mean().dropna().sort_index()
    if len(curve) < 2:
        return None
    best_beyond = curve[::-1].cummin()[::-1].shift(-1)
    gain = curve - best_beyond
    saturated = gain[gain < threshold]  # the largest x has no gain (NaN), so it never counts as saturated
    return saturated.index[0] if len(saturated) else None


def saturation_by_group(
    points: pd.DataFrame, x: str, others: list[str], metric: str = TEST_LOSS, threshold: float = SATURATION_NATS
) -> dict[str, Any]:
    """find_saturation for each setting of the other swept params, by its label."""
    return {label: find_saturation(group, x, metric, threshold) for label, group in groups(points, others)}


def active_units_by_latent(points: pd.DataFrame, others: list[str]) -> dict[str, dict[Any, float]]:
    """For each setting of `others`: latent size -> mean number of active units."""
    usable = points.dropna(subset=[ACTIVE_UNITS])
    return {
        label: group.groupby(LATENT)[ACTIVE_UNITS].mean().to_dict()
        for label, group in groups(usable, others)
        if not group.empty
    }


def _number(value: Any, spec: str = ".2f") -> str:
    return MISSING if value is None or pd.isna(value) else format(value, spec)


def best_lines(points: pd.DataFrame, keys: list[str]) -> list[str]:
    lines = []
    for quality in QUALITIES:
        if quality.lower_is_better is None:
            continue
        row = best_setting(points, quality.column, quality.lower_is_better)
        if row is not None:
            extreme = "Lowest" if quality.lower_is_better else "Highest"
            lines.append(
                f"{extreme} {quality.name}: {_number(row[quality.column], quality.spec)} at {setting(row, keys)} "
                f"({row['seeds']} run{'s' if row['seeds'] > 1 else ''})"
            )
    return lines


def saturation_lines(points: pd.DataFrame, x: str, others: list[str], threshold: float = SATURATION_NATS) -> list[str]:
    """Per setting of `others`, where the gain in test loss from a larger x drops under `threshold` nats."""
    lines = []
    for label, group in groups(points, others):
        curve = group.groupby(x)[TEST_LOSS].mean().dropna().sort_index()
        if len(curve) < 2:
            continue
        where = f" ({label})" if label else ""
        found = find_saturation(group, x, TEST_LOSS, threshold)
        if found is None:
            lines.append(
                f"Test loss{where} still improves by ≥ {threshold:g} nat at the largest step of {x}: "
                f"{curve.index[-2]} → {curve.index[-1]} gives {curve.iloc[-2]:.2f} → {curve.iloc[-1]:.2f}."
            )
        else:
            beyond = curve[curve.index > found]
            lines.append(
                f"Test loss{where} stops improving by ≥ {threshold:g} nat beyond {x} = {found}: {curve[found]:.2f} "
                f"there, best {beyond.min():.2f} at larger sizes (up to {beyond.index[-1]})."
            )
    return lines


def usage_lines(points: pd.DataFrame, keys: list[str]) -> list[str]:
    if ACTIVE_UNITS not in points or LATENT not in points:
        return []
    others = [key for key in keys if key != LATENT]
    lines = []
    for label, usage in active_units_by_latent(points, others).items():
        sizes = ", ".join(f"{latent} → {units:.1f}" for latent, units in usage.items())
        lines.append(f"Active units{f' ({label})' if label else ''}, latent size → dimensions used: {sizes}.")
    return lines


def findings(points: pd.DataFrame, x: str, others: list[str]) -> list[str]:
    """What the numbers say: the best setting per metric, where larger x stops paying, how much latent is used."""
    keys = [x, *others]
    return best_lines(points, keys) + saturation_lines(points, x, others) + usage_lines(points, keys)


# ---- figures -------------------------------------------------------------------------------------------------------


def _label_log_x(ax, values: pd.Series) -> None:
    """Log x with a plain tick at each value swept, where matplotlib would label 2x10^0, 3x10^0, ..."""
    ax.set_xscale("log")
    ticks = sorted(values.dropna().unique())
    ax.set_xticks(ticks, [str(tick) for tick in ticks])
    ax.xaxis.set_minor_formatter(NullFormatter())


def _present(points: pd.DataFrame, column: str) -> bool:
    return column in points and points[column].notna().any()


def _quality(column: str) -> Quality:
    return next(quality for quality in QUALITIES if quality.column == column)


def plot_quality_vs_x(points: pd.DataFrame, x: str, others: list[str], path: Path) -> Path:
    """One panel per loss term (and IWAE NLL when present) against x, a line per setting of the other swept params,
    error bars one std over seeds."""
    panels = [column for column in CURVES if _present(points, column)]
    with saved_figure(path, ncols=len(panels), figsize=(5 * len(panels), 4.5), squeeze=False) as (fig, axes):
        for ax, column in zip(axes[0], panels, strict=True):
            for label, group in groups(points, others):
                group = group.sort_values(x)
                errors = group[f"{column} std"].fillna(0.0)
                ax.errorbar(group[x], group[column], yerr=errors, marker="o", capsize=3, label=label or None)
            if x == LATENT:
                _label_log_x(ax, points[x])
            ax.set_title(_quality(column).name)
            ax.set_xlabel(x)
            ax.set_ylabel("nats per test image")
            if others:
                ax.legend(fontsize="small")
        fig.suptitle(f"Test-set quality against {x} (mean ± std over seeds)")
    return path


def plot_active_units(points: pd.DataFrame, keys: list[str], path: Path) -> Path:
    """Active units against latent size, a line per setting of the other swept params, beside y = x (all used)."""
    others = [key for key in keys if key != LATENT]
    sizes = np.sort(points[LATENT].unique().astype(float))
    with saved_figure(path, figsize=(7, 5)) as (fig, ax):
        for label, group in groups(points.dropna(subset=[ACTIVE_UNITS]), others):
            group = group.sort_values(LATENT)
            errors = group[f"{ACTIVE_UNITS} std"].fillna(0.0)
            ax.errorbar(group[LATENT], group[ACTIVE_UNITS], yerr=errors, marker="o", capsize=3, label=label or None)
        diagonal = np.geomspace(sizes[0], sizes[-1], 100) if len(sizes) > 1 else sizes
        ax.plot(diagonal, diagonal, "k:", label="y = x (every dimension used)")
        _label_log_x(ax, points[LATENT])
        # Collapsed runs use no dimension at all; symlog keeps 0 on the axis.
        ax.set_yscale("symlog", linthresh=1)
        ax.set_ylim(bottom=0)
        ax.yaxis.set_major_formatter(ScalarFormatter())
        ax.set_xlabel(LATENT)
        ax.set_ylabel("active units")
        ax.set_title("Latent dimensions in use against latent size")
        ax.legend(fontsize="small")
    return path


def plot_learning_curves(histories: pd.DataFrame, names: dict[str, str], which: str, path: Path) -> Path:
    """The runs' loss terms per epoch, overlaid: train dashed, test solid, one colour per run; `which` says whose."""
    series = {key: frame for key, frame in histories.groupby(["run_id", "key"])}
    colours = plt.get_cmap("turbo")(np.linspace(0.05, 0.95, len(names)))
    with saved_figure(path, ncols=len(LOSS_TERMS), figsize=(16, 5), squeeze=False) as (fig, axes):
        for ax, (term, title) in zip(axes[0], LOSS_TERMS, strict=True):
            for colour, (run_id, name) in zip(colours, names.items(), strict=True):
                for split, style in (("train", "--"), ("test", "-")):
                    frame = series.get((run_id, f"{split}/{term}"))
                    if frame is not None:
                        label = name if split == "test" else None
                        ax.plot(frame["step"], frame["value"], style, color=colour, linewidth=1, label=label)
            ax.set_title(title)
            ax.set_xlabel("epoch")
            ax.set_ylabel("nats per image")
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        if len(names) <= LEGEND_LIMIT:
            axes[0][-1].legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.02, 1))
        fig.suptitle(f"Learning curves of {which} (train dashed, test solid)")
    return path


def plot_rate_distortion(runs: pd.DataFrame, x: str, path: Path) -> Path:
    """Each run's test KL (rate) against its reconstruction loss (distortion), marked with its x value."""
    name = short_names([x])[x]
    with saved_figure(path, figsize=(8, 6)) as (fig, ax):
        for value, group in runs.groupby(x, dropna=False, sort=True):
            ax.scatter(group["final/test/kl"], group["final/test/recon"], label=f"{name}={value}")
            for _, run in group.iterrows():
                ax.annotate(str(value), (run["final/test/kl"], run["final/test/recon"]), fontsize=7,
                            textcoords="offset points", xytext=(3, 3))  # fmt: skip
        ax.set_xlabel("rate: test KL (nats)")
        ax.set_ylabel("distortion: test reconstruction loss (nats)")
        ax.set_title(f"Rate–distortion, one point per run, labelled by {x}")
        if runs[x].nunique() <= LEGEND_LIMIT:
            ax.legend(fontsize="small")
    return path


# ---- the document: one structure, written as Markdown and as self-contained HTML ---------------------------------


@dataclass
class Image:
    path: Path  # relative to the report folder
    caption: str


@dataclass
class Bullets:
    items: list[str]


@dataclass
class Table:
    header: list[str]
    rows: list[list[str | Image]]
    name: str  # the HTML table's class, so that readers and tests can find it


@dataclass
class Section:
    title: str
    blocks: list[str | Bullets | Table | Image]


def _md_cell(cell: str | Image) -> str:
    if isinstance(cell, Image):
        return f"![{cell.caption}]({cell.path.as_posix()})"
    return cell.replace("|", "\\|").replace("\n", " ")


def _md_block(block: str | Bullets | Table | Image) -> str:
    if isinstance(block, Bullets):
        return "\n".join(f"- {item}" for item in block.items)
    if isinstance(block, Table):
        lines = [block.header, ["---"] * len(block.header), *block.rows]
        return "\n".join("| " + " | ".join(_md_cell(cell) for cell in line) + " |" for line in lines)
    if isinstance(block, Image):
        return f"{_md_cell(block)}\n\n*{block.caption}*"
    return block


def to_markdown(title: str, sections: list[Section]) -> str:
    parts = [f"# {title}"]
    for section in sections:
        parts.append(f"## {section.title}")
        parts.extend(_md_block(block) for block in section.blocks)
    return "\n\n".join(parts) + "\n"


def data_uri(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def _html_cell(cell: str | Image, folder: Path) -> str:
    if isinstance(cell, Image):
        return f'<img src="{data_uri(folder / cell.path)}" alt="{html.escape(cell.caption)}">'
    return html.escape(cell)


def _html_block(block: str | Bullets | Table | Image, folder: Path) -> str:
    if isinstance(block, Bullets):
        return "<ul>" + "".join(f"<li>{html.escape(item)}</li>" for item in block.items) + "</ul>"
    if isinstance(block, Table):
        head = "<tr>" + "".join(f"<th>{html.escape(cell)}</th>" for cell in block.header) + "</tr>"
        body = "".join(
            "<tr>" + "".join(f"<td>{_html_cell(cell, folder)}</td>" for cell in row) + "</tr>" for row in block.rows
        )
        return f'<table class="{block.name}">{head}{body}</table>'
    if isinstance(block, Image):
        return f"<figure>{_html_cell(block, folder)}<figcaption>{html.escape(block.caption)}</figcaption></figure>"
    return f"<p>{html.escape(block)}</p>"


STYLE = """
body { font-family: sans-serif; margin: 2em; max-width: 110em; }
table { border-collapse: collapse; margin: 1em 0; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.5em; text-align: right; vertical-align: top; }
th { background: #f0f0f0; }
figure img { max-width: 100%; }
table.gallery img { max-width: 22em; }
"""


def to_html(title: str, sections: list[Section], folder: Path) -> str:
    """One file that opens offline: every picture inline as a data URI."""
    body = [f"<h1>{html.escape(title)}</h1>"]
    for section in sections:
        body.append(f"<h2>{html.escape(section.title)}</h2>")
        body.extend(_html_block(block, folder) for block in section.blocks)
    return (
        f'<!DOCTYPE html>\n<html><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
        f"<style>{STYLE}</style></head>\n<body>\n" + "\n".join(body) + "\n</body></html>\n"
    )


# ---- the report's sections ----------------------------------------------------------------------------------------


def _mean_std(point: pd.Series, quality: Quality) -> str:
    text = _number(point.get(quality.column), quality.spec)
    spread = point.get(f"{quality.column} std")
    if text != MISSING and point["seeds"] > 1 and pd.notna(spread):
        text += f" ± {spread:{quality.spec}}"
    return text


def reference_value(runs: pd.DataFrame, column: str) -> str | None:
    """The real-data score for scale: one number, or a range when the runs used different data."""
    if not _present(runs, column):
        return None
    low, high = runs[column].min(), runs[column].max()
    return f"{low:.2f}" if np.isclose(low, high) else f"{low:.2f}–{high:.2f}"


def results_section(points: pd.DataFrame, runs: pd.DataFrame, keys: list[str]) -> Section:
    """The table of settings: swept params, seeds, quality (mean ± std), epochs, wall time and run ids."""
    names = short_names(keys)
    header = [names[key] for key in keys] + ["seeds"]
    for quality in QUALITIES:
        reference = reference_value(runs, quality.reference) if quality.reference else None
        header.append(quality.name + (f" (real data: {reference})" if reference else ""))
    show_epochs = EPOCHS in points and EPOCHS not in keys
    header += (["epochs"] if show_epochs else []) + [WALL_TIME.name, "run id"]
    rows = []
    for _, point in points.iterrows():
        row = [str(point[key]) for key in keys] + [str(point["seeds"])]
        row += [_mean_std(point, quality) for quality in QUALITIES]
        row += ([str(point[EPOCHS])] if show_epochs else []) + [_mean_std(point, WALL_TIME)]
        rows.append(row + [" ".join(run_id[:8] for run_id in point["run_ids"])])
    return Section(
        "Results per setting",
        [
            "Test-set numbers in nats per image, mean ± std over the runs (seeds) of each setting; "
            f"{MISSING} where a run did not log the metric. FID and inception score compare 10k prior samples with "
            "the test set through a classifier's features; real data's own scores are in the headings for scale.",
            Table(header, rows, "results"),
        ],
    )


def figures_section(
    client: MlflowClient, runs: pd.DataFrame, points: pd.DataFrame, x: str, others: list[str], folder: Path
) -> Section:
    keys = [x, *others]
    blocks: list[str | Bullets | Table | Image] = [
        Image(
            plot_quality_vs_x(points, x, others, folder / "quality_vs_x.png").relative_to(folder),
            f"Test loss, reconstruction, KL{' and IWAE NLL' if _present(points, 'quality/iwae_nll') else ''} "
            f"against {x}; error bars: one std over seeds.",
        )
    ]
    if _present(points, ACTIVE_UNITS) and LATENT in points:
        path = plot_active_units(points, keys, folder / "active_units.png")
        blocks.append(Image(path.relative_to(folder), "Active units against latent size; the dotted line is y = x."))
    if len(runs) <= CURVE_RUN_LIMIT:
        curves, which = runs, f"every finished run ({len(runs)})"
    else:
        curves, which = representatives(points, runs), f"one run per setting (its lowest seed) of {len(runs)}"
    histories = fetch_histories(client, curves["run_id"].tolist())
    names = dict(zip(curves["run_id"], curves["run_name"].fillna(curves["run_id"]), strict=True))
    path = plot_learning_curves(histories, names, which, folder / "learning_curves.png")
    blocks.append(Image(path.relative_to(folder), f"Learning curves of {which}: train dashed, test solid."))
    path = plot_rate_distortion(runs, x, folder / "rate_distortion.png")
    blocks.append(Image(path.relative_to(folder), f"Rate (KL) against distortion (reconstruction) per run, by {x}."))
    return Section("Figures", blocks)


def representatives(points: pd.DataFrame, runs: pd.DataFrame) -> pd.DataFrame:
    """Each setting's run with the lowest seed, in the order of the settings."""
    return runs.set_index("run_id").loc[[ids[0] for ids in points["run_ids"]]].reset_index()


def gallery_section(
    client: MlflowClient, points: pd.DataFrame, runs: pd.DataFrame, keys: list[str], folder: Path
) -> Section:
    """Each setting's pictures side by side, from its run with the lowest seed."""
    shown = representatives(points, runs)
    pictures = download_pictures(client, shown, folder / "runs")
    two_d = LATENT in shown and (shown[LATENT] == 2).any()
    columns = GALLERY + (GALLERY_2D if two_d else ())
    header = ["setting", "run"] + [name.removesuffix(".png").replace("_", " ") for name in columns]
    rows = []
    for (_, point), run_id in zip(points.iterrows(), shown["run_id"], strict=True):
        found = pictures.get(run_id, {})
        cells = [Image(found[name].relative_to(folder), name) if name in found else MISSING for name in columns]
        rows.append([setting(point, keys), run_id[:8], *cells])
    return Section(
        "Reconstructions and samples",
        [
            "One run per setting (its lowest seed); latent scatter and manifold for 2-D latents.",
            Table(header, rows, "gallery"),
        ],
    )


def unfinished_section(runs: pd.DataFrame) -> Section:
    left_out = unfinished(runs)
    if left_out.empty:
        return Section("Runs that did not finish", ["None: every selected run finished."])
    rows = [
        [str(run["run_name"]), run["status"], _first_line(run["error"]), run["run_id"]]
        for _, run in left_out.iterrows()
    ]
    return Section(
        "Runs that did not finish",
        [
            f"{len(left_out)} run(s) FAILED, KILLED or still RUNNING; they are left out of every number above.",
            Table(["run", "status", "error", "run id"], rows, "unfinished"),
        ],
    )


def _first_line(error: Any) -> str:
    return MISSING if error is None or pd.isna(error) or not str(error) else str(error).splitlines()[0][:300]


def overview(runs: pd.DataFrame, uri: str, x: str, swept: list[str]) -> Section:
    done = len(finished(runs))
    return Section(
        "Selection",
        [
            f"{len(runs)} runs: {done} finished, {len(runs) - done} not. Store {uri}; report made "
            f"{datetime.now():%Y-%m-%d %H:%M}. Swept: {', '.join(swept) or 'nothing'}; x axis: {x}.",
        ],
    )


# ---- putting it together -------------------------------------------------------------------------------------------


def check_x(runs: pd.DataFrame, x: str) -> None:
    if x not in param_columns(runs):
        raise UserError(f"--x {x} is not a param of the selected runs; they have: {', '.join(param_columns(runs))}.")


def write_report(client: MlflowClient, runs: pd.DataFrame, x: str, title: str, uri: str, folder: Path) -> list[str]:
    """report.html, report.md, runs.csv and the figures in folder; returns the findings."""
    folder.mkdir(parents=True, exist_ok=True)
    runs.to_csv(folder / "runs.csv", index=False)
    done = finished(runs)
    swept = swept_params(done)
    sections = [overview(runs, uri, x, swept)]
    if done.empty:
        lines = ["No selected run finished, so there is nothing to compare."]
        sections.append(Section("Findings", [Bullets(lines)]))
    else:
        others = [param for param in swept if param != x]
        points = aggregate(done, [x, *others])
        lines = findings(points, x, others)
        sections += [
            Section("Findings", [Bullets(lines)]),
            results_section(points, done, [x, *others]),
            figures_section(client, done, points, x, others, folder),
            gallery_section(client, points, done, [x, *others], folder),
        ]
    sections.append(unfinished_section(runs))
    (folder / "report.md").write_text(to_markdown(title, sections))
    (folder / "report.html").write_text(to_html(title, sections, folder))
    return lines


def artifact_root_of(experiment: Experiment) -> str | None:
    """The folder of a file-based experiment's artifacts; None (the server decides) for any other kind."""
    location = urlparse(experiment.artifact_location)
    return location.path if location.scheme == "file" else None


def log_report(
    client: MlflowClient, experiment: Experiment, selection: Selection, x: str, runs: int, folder: Path
) -> str:
    """The report as its own run in '<experiment>-reports', beside the experiment's own artifacts; its run id."""
    reports_id = ensure_experiment(client, f"{experiment.name}-reports", artifact_root_of(experiment))
    params = {"experiment": experiment.name, "selection": selection.description, "x": x, "runs": runs}
    if selection.filter:
        params["filter"] = selection.filter
    tags = {"sweep.id": selection.sweep} if selection.sweep else {}
    with tracked_run(Store(client, reports_id), f"report {folder.name}", params, tags) as tracker:
        tracker.log_artifacts(folder)
    return tracker.run_id


def default_folder(experiment: str) -> Path:
    return Path("reports") / f"{experiment}-{datetime.now():%Y-%m-%d_%H-%M-%S}"


def report(args: argparse.Namespace) -> Path:
    uri = args.tracking_uri or default_tracking_uri()
    client, experiment = open_experiment(uri, args.experiment)
    selection = choose_selection(client, experiment.experiment_id, args.sweep, args.filter, args.all)
    runs = runs_table(search(uri, experiment.experiment_id, selection))
    check_x(runs, args.x)
    # Absolute, so that the downloaded pictures' paths relate to it.
    folder = (Path(args.out) if args.out else default_folder(args.experiment)).resolve()
    lines = write_report(client, runs, args.x, f"{args.experiment}: {selection.description}", uri, folder)
    print("\n".join(f"- {line}" for line in lines))
    if not args.no_log:
        run_id = log_report(client, experiment, selection, args.x, len(runs), folder)
        print(f"logged as run {run_id} in experiment {args.experiment}-reports")
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
    parser.add_argument("--no-log", action="store_true", help="do not log the report as a run in <experiment>-reports")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # One progress bar per downloaded picture would bury the findings.
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    print(report(args))
    return 0
