"""The selected runs as pandas frames: one typed row per run, one row per setting, and what MLflow holds per run
beyond that (histories, pictures)."""

from __future__ import annotations

import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from mlflow.utils.mlflow_tags import MLFLOW_RUN_NAME

from vae_sweep import names
from vae_sweep.config import defines_result

# The seed axis: each setting's runs differ in it alone, and aggregate() folds them into mean ± std.
SEED = "training.seed"
LATENT = "model.latent"
# How a search's trial ended in its study; a failed trial's run is simply FAILED.
COMPLETE, PRUNED, _ = names.STUDY_STATES
EPOCHS = "training.epochs"
# A tracking server answers each history request in a round trip; this many run side by side.
FETCH_WORKERS = 8
# Per run, side by side; the latent pictures only say something for 2-D latents.
GALLERY = (names.FIG_RECONSTRUCTIONS, names.FIG_SAMPLES)
GALLERY_2D = (names.FIG_LATENT_SCATTER, names.FIG_MANIFOLD)


@dataclass(frozen=True)
class Quality:
    column: str
    name: str
    spec: str = ".2f"
    lower_is_better: bool | None = True  # None: neither direction is "better" (KL, active units, time)
    reference: str | None = None  # the same score of real data, for scale


QUALITIES = (
    Quality(names.TEST_LOSS, "test loss"),
    Quality(names.TEST_RECON, "reconstruction"),
    Quality(names.TEST_KL, "KL", lower_is_better=None),
    Quality(names.Q_IWAE_NLL, "IWAE NLL (binarized)"),
    Quality(names.Q_IWAE_GREY, "IWAE bound, grey levels (not an NLL)"),
    Quality(names.Q_ACTIVE_UNITS, "active units", ".1f", lower_is_better=None),
    Quality(names.Q_FID, "FID", reference=names.Q_FID_REFERENCE),
    Quality(names.Q_IS, "inception score", lower_is_better=False, reference=names.Q_IS_REFERENCE),
    Quality(names.Q_GAP, "train–test gap", lower_is_better=None),
)
# Each run's training time where its job logged one, else its run's duration, which adds start-up and evaluation:
# time_source() says which the column holds.
TIME = Quality("time_s", "time (s)", ".0f", lower_is_better=None)


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
    """One row per run: run_id, run_name, status, error, sweep, start_time, reused (a point of the selected sweep
    that an earlier run trained), and for a search's trials their parent run, study, trial number, trial_state and
    pruned_epoch; the params under their dotted config keys (typed), the loss terms' last values, the quality/ and
    time/ metrics under today's names (whatever version of vae-sweep logged them), and the time column (TIME)."""
    logged = names.current_metrics(raw[[name for name in raw if name.startswith("metrics.")]])
    metrics = {
        name.removeprefix("metrics."): logged[name]
        for name in logged
        if name.removeprefix("metrics.").startswith((names.LOSSES, names.QUALITY, names.TIMING, names.ACTIVE_UNITS))
    }
    duration = (raw["end_time"] - raw["start_time"]).dt.total_seconds()
    time = metrics[names.TRAIN_TIME].fillna(duration) if names.TRAIN_TIME in metrics else duration
    identity = {
        "run_id": raw["run_id"],
        "run_name": _column(raw, f"tags.{MLFLOW_RUN_NAME}"),
        "status": raw["status"],
        "error": _column(raw, f"tags.{names.TAG_ERROR}"),
        "sweep": _column(raw, f"tags.{names.TAG_SWEEP_ID}"),
        "preset": _column(raw, f"tags.{names.TAG_PRESET}"),
        "start_time": raw["start_time"],
        "parent": _column(raw, f"tags.{names.TAG_PARENT_RUN}"),
        "study": _column(raw, f"tags.{names.TAG_STUDY}"),
        "trial": pd.to_numeric(_column(raw, f"tags.{names.TAG_TRIAL}")).astype("Int64"),
        "trial_state": _column(raw, f"tags.{names.TAG_TRIAL_STATE}"),
        "pruned_epoch": pd.to_numeric(_column(raw, f"tags.{names.TAG_PRUNED_EPOCH}")).astype("Int64"),
        # A point of the selected sweep that an earlier sweep's run had finished (select.with_reused).
        "reused": raw["reused"].astype(bool) if "reused" in raw else False,
    }
    params = {name.removeprefix("params."): cast_param(raw[name]) for name in raw if name.startswith("params.")}
    table = pd.DataFrame({**identity, **params, **metrics, TIME.column: time})
    return with_current_names(table).sort_values("start_time", kind="stable").reset_index(drop=True)


def with_current_names(table: pd.DataFrame) -> pd.DataFrame:
    """Runs logged before a metric was renamed, under today's name: a grey-level run's quality/iwae_nll was a bound
    on grey levels, not a likelihood (names.GREY_LEVEL_RENAMES)."""
    modes = table["data.binarize"] if "data.binarize" in table else pd.Series(None, index=table.index, dtype=object)
    grey = modes.fillna("none") == "none"
    for old, new in names.GREY_LEVEL_RENAMES.items():
        if old not in table:
            continue
        moved = table[old].where(grey)
        table[new] = table[new].fillna(moved) if new in table else moved
        table[old] = table[old].mask(grey)
    return table


def time_source(runs: pd.DataFrame) -> str:
    """What the TIME column of these runs holds, in words."""
    logged = runs[names.TRAIN_TIME].notna() if names.TRAIN_TIME in runs else pd.Series(False, index=runs.index)
    if logged.all():
        return "training time"
    return "run duration" if not logged.any() else "training time (run duration where not logged)"


def has_values(frame: pd.DataFrame, column: str) -> bool:
    return column in frame and frame[column].notna().any()


def param_columns(runs: pd.DataFrame) -> list[str]:
    """Params are the config's dotted keys; metric names hold a slash and the run's own columns neither."""
    return [name for name in runs if "." in name and "/" not in name]


def metric_columns(runs: pd.DataFrame) -> list[str]:
    return [name for name in runs if "/" in name or name == names.ACTIVE_UNITS] + [TIME.column]


def is_sweepable(param: str) -> bool:
    """Whether a param can be a dimension of the sweep: it changes the result and is not the seed axis."""
    return defines_result(param) and param != SEED


def swept_params(runs: pd.DataFrame) -> list[str]:
    """The params that take more than one value among the runs, leaving out seeds, paths and the like."""
    return sorted(p for p in param_columns(runs) if is_sweepable(p) and runs[p].nunique(dropna=False) > 1)


def is_pruned(runs: pd.DataFrame) -> pd.Series:
    """The search's trials it stopped early: FINISHED runs, but of fewer epochs and without the end-of-run quality.
    Frames made elsewhere than runs_table may lack the column: none of their runs is a trial."""
    if "trial_state" not in runs:
        return pd.Series(False, index=runs.index)
    return runs["trial_state"].isin([PRUNED])


def pruned(runs: pd.DataFrame) -> pd.DataFrame:
    return runs[is_pruned(runs)]


def finished(runs: pd.DataFrame) -> pd.DataFrame:
    """The runs the report compares: those that FINISHED, less pruned trials, whose numbers no other run shares."""
    return runs[(runs["status"] == "FINISHED") & ~is_pruned(runs)]


def unfinished(runs: pd.DataFrame) -> pd.DataFrame:
    return runs[runs["status"] != "FINISHED"]


def seed_samples(runs: pd.DataFrame) -> pd.Series:
    """Which sample of its setting each run is: its training.seed, so that two runs of one seed (a reproduction, a
    rerun with training.resume=never) are one sample; a run without a recorded seed is a sample of its own."""
    if SEED not in runs:
        return runs["run_id"]
    return runs[SEED].astype(object).where(runs[SEED].notna(), runs["run_id"])


def aggregate(runs: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """One row per setting of `keys`: each metric's mean and its std over seeds as '<metric> std' (runs of one seed
    averaged first, as one sample), the number of distinct seeds as `seeds` and of runs as `runs`, their ids (lowest
    seed first) as `run_ids`, and the first value of every other config key."""
    order = keys + ([SEED] if SEED in runs and SEED not in keys else [])
    ordered = runs.sort_values(order, kind="stable")
    grouped = ordered.groupby(keys, dropna=False, sort=True)
    metrics = metric_columns(runs)
    sampled = ordered.assign(_sample=seed_samples(ordered))
    samples = sampled.groupby([*keys, "_sample"], dropna=False, sort=True)[metrics].mean().reset_index()
    by_seed = samples.groupby(keys, dropna=False, sort=True)
    constants = [p for p in param_columns(runs) if p not in keys and is_sweepable(p)]
    points = pd.concat(
        [
            by_seed.size().rename("seeds"),
            grouped.size().rename("runs"),
            by_seed[metrics].mean(),
            by_seed[metrics].std().add_suffix(" std"),
            grouped["run_id"].agg(list).rename("run_ids"),
            grouped[constants].first(),
        ],
        axis=1,
    )
    return points.reset_index()


def representatives(points: pd.DataFrame, runs: pd.DataFrame) -> pd.DataFrame:
    """Each setting's run with the lowest seed, in the order of the settings."""
    return runs.set_index("run_id").loc[[ids[0] for ids in points["run_ids"]]].reset_index()


def fetch_histories(client: MlflowClient, run_ids: list[str], keys: tuple[str, ...]) -> pd.DataFrame:
    """The per-epoch values of `keys` for each run, long form: run_id, key, step, value; a run that logged a key
    under a former name (names.every_name) is read under that name and reported under today's."""

    def fetch(job: tuple[str, str]) -> list[tuple[str, str, int, float]]:
        run_id, logged_as = job
        key = names.current_metric(logged_as)
        return [(run_id, key, metric.step, metric.value) for metric in client.get_metric_history(run_id, logged_as)]

    jobs = [(run_id, logged_as) for run_id in run_ids for key in keys for logged_as in names.every_name(key)]
    with ThreadPoolExecutor(FETCH_WORKERS) as pool:
        rows = [row for rows in pool.map(fetch, jobs) for row in rows]
    return pd.DataFrame(rows, columns=["run_id", "key", "step", "value"]).sort_values(["run_id", "key", "step"])


def gallery_columns(runs: pd.DataFrame) -> tuple[str, ...]:
    """The figure file names the gallery shows for these runs."""
    return GALLERY + (GALLERY_2D if LATENT in runs and (runs[LATENT] == 2).any() else ())


def download_pictures(client: MlflowClient, runs: pd.DataFrame, folder: Path) -> dict[str, dict[str, Path]]:
    """Run id -> {figure file name -> local copy} of the run's gallery figures that it has, downloaded under folder."""

    def fetch(run: pd.Series) -> tuple[str, dict[str, Path]]:
        wanted = GALLERY + (GALLERY_2D if run.get(LATENT) == 2 else ())
        try:
            listed = client.list_artifacts(run["run_id"], names.ARTIFACT_FIGURES)
            present = {Path(artifact.path).name for artifact in listed}
            target = folder / run["run_id"]
            target.mkdir(parents=True, exist_ok=True)
            pictures = {
                name: Path(client.download_artifacts(run["run_id"], f"{names.ARTIFACT_FIGURES}/{name}", str(target)))
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
