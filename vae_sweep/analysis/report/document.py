"""What the report says, as one structure of sections that render.py writes as Markdown and as HTML: the selection,
the findings, the results per setting, the figures, the gallery and the runs that did not finish."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from vae_sweep import names
from vae_sweep.analysis.report import papers, plots
from vae_sweep.analysis.report.findings import MISSING, applies, number, setting, short_names, split_words
from vae_sweep.analysis.report.study import Search
from vae_sweep.analysis.report.table import (
    EPOCHS,
    QUALITIES,
    TIME,
    Quality,
    finished,
    gallery_columns,
    has_values,
    pruned,
    time_source,
    unfinished,
)

NOT_ITS_KEY = "n/a"  # a key of another model family (mlp's hidden on a conv run)


@dataclass
class Image:
    path: Path  # relative to the report folder
    caption: str


@dataclass
class Bullets:
    items: list[str]


@dataclass
class Code:
    """A command to copy as it is."""

    text: str


@dataclass
class Table:
    header: list[str]
    rows: list[list[str | Image]]
    name: str  # the HTML table's class, so that readers and tests can find it


@dataclass
class Section:
    title: str
    blocks: list[str | Bullets | Table | Image | Code]


def overview(runs: pd.DataFrame, uri: str, x: str, swept: list[str]) -> Section:
    done, stopped = len(finished(runs)), len(pruned(runs))
    reused = int(runs["reused"].sum()) if "reused" in runs else 0
    counts = f"{done} finished, " + (f"{stopped} pruned by the search, " if stopped else "")
    reuse = f" ({reused} of them trained before, reused as this sweep's points)" if reused else ""
    return Section(
        "Selection",
        [
            f"{len(runs)} runs{reuse}: {counts}{len(runs) - done - stopped} not. Store {uri}; report made "
            f"{datetime.now():%Y-%m-%d %H:%M}. Swept: {', '.join(swept) or 'nothing'}; x axis: {x}.",
        ],
    )


def findings_section(lines: list[str]) -> Section:
    return Section("Findings", [Bullets(lines)])


def papers_section(rows: list[list[str]], left_out: list[str]) -> Section:
    blocks: list[str | Bullets | Table | Image | Code] = [
        "Runs made with a paper's preset (experiment=...) with the preset's settings but for their seeds (a shortened "
        "schedule in a row of its own), our mean ± std over seeds (their count) beside the published value; the "
        "notes list every setting in which our runs differ from the paper's protocol.",
        Bullets(papers.sources()),
        Table(papers.HEADER, rows, "papers"),
    ]
    if left_out:
        blocks += ["Runs of a preset left out of the comparison: another setting was overridden.", Bullets(left_out)]
    return Section("Ours against the papers", blocks)


def questions_section(kl_lines: list[str], latent_lines: list[str]) -> Section:
    """The study's two open questions, each answered with the runs' own numbers where the runs can answer it."""
    blocks: list[str | Bullets | Table | Image] = []
    if kl_lines:
        blocks += ["Why does the KL term rise during training while the total loss falls?", Bullets(kl_lines)]
    if latent_lines:
        blocks += ["Why do large latent sizes look alike?", Bullets(latent_lines)]
    return Section("The study's questions", blocks or ["These runs hold no history or latent sizes to answer from."])


def _mean_std(point: pd.Series, quality: Quality) -> str:
    text = number(point.get(quality.column), quality.spec)
    spread = point.get(f"{quality.column} std")
    if text != MISSING and point["seeds"] > 1 and pd.notna(spread):
        text += f" ± {spread:{quality.spec}}"
    return text


def reference_value(runs: pd.DataFrame, column: str) -> str | None:
    """The real-data score for scale: one number, or a range when the runs used different data."""
    if not has_values(runs, column):
        return None
    low, high = runs[column].min(), runs[column].max()
    return f"{low:.2f}" if np.isclose(low, high) else f"{low:.2f}–{high:.2f}"


def logged(runs: pd.DataFrame, column: str) -> str:
    """The values a count (k, samples) took over the runs, as they logged it: '5000', '100 or 5000', 'unrecorded'."""
    values = sorted({int(value) for value in runs[column].dropna()}) if column in runs else []
    return " or ".join(str(value) for value in values) or "an unrecorded number of"


def results_section(points: pd.DataFrame, runs: pd.DataFrame, keys: list[str]) -> Section:
    """The table of settings: swept params, seeds, quality (mean ± std), epochs, time and run ids."""
    short = short_names(keys)
    header = [short[key] for key in keys] + ["seeds"]
    for quality in QUALITIES:
        reference = reference_value(runs, quality.reference) if quality.reference else None
        header.append(quality.name + (f" (real data: {reference})" if reference else ""))
    show_epochs = EPOCHS in points and EPOCHS not in keys
    header += (["epochs"] if show_epochs else []) + [f"{time_source(runs)} (s)", "run id"]
    rows = []
    for _, point in points.iterrows():
        count = point.get("runs", point["seeds"])
        seeds = str(point["seeds"]) + (f" ({count} runs)" if count != point["seeds"] else "")
        row = [str(point[key]) if applies(point[key]) else NOT_ITS_KEY for key in keys] + [seeds]
        row += [_mean_std(point, quality) for quality in QUALITIES]
        row += ([str(point[EPOCHS])] if show_epochs else []) + [_mean_std(point, TIME)]
        rows.append(row + [" ".join(run_id[:8] for run_id in point["run_ids"])])
    return Section(
        "Results per setting",
        [
            "Test-set numbers in nats per image, mean ± std over the seeds of each setting (runs of one seed "
            "averaged first, as one sample); "
            f"{MISSING} where a run did not log the metric, {NOT_ITS_KEY} where its model family has no such key. "
            f"The IWAE bound uses {logged(runs, names.Q_IWAE_K)} "
            f"importance samples per image; FID and inception score compare {logged(runs, names.Q_SAMPLES)} prior "
            "samples with the test set through a classifier's features; real data's own scores are in the headings "
            "for scale.",
            Table(header, rows, "results"),
        ],
    )


def figures_section(points: pd.DataFrame, x: str, figures: dict[str, Path], curves_of: str) -> Section:
    """The report's own figures, by file name (paths relative to the report folder); `curves_of` says whose
    learning curves are drawn."""
    bounds = [
        words
        for column, words in ((names.Q_IWAE_NLL, "IWAE NLL"), (names.Q_IWAE_GREY, "IWAE bound on grey levels"))
        if has_values(points, column)
    ]
    iwae = f" and {' and '.join(bounds)}" if bounds else ""
    spread = (
        "one seed per point, so no error bars and no seed spread to judge a difference by"
        if plots.one_seed_each(points)
        else "error bars: one std over seeds (none on a point of one seed)"
    )
    captions = {
        names.FIG_QUALITY_VS_X: f"Test loss, reconstruction, KL{iwae} against {x}; {spread}; each y axis spans at "
        f"least {plots.MIN_SPAN_NATS:g} nats, so that a small difference is drawn at its size.",
        names.FIG_ACTIVE_UNITS: "Active units against latent size; the dotted line is y = x.",
        names.FIG_LEARNING_CURVES: f"Learning curves of {curves_of}: train dashed, test solid.",
        names.FIG_RATE_DISTORTION: f"Rate (KL) against distortion (reconstruction) per run, by {x}.",
    }
    return Section("Figures", [Image(path, captions[name]) for name, path in figures.items()])


def gallery_section(
    points: pd.DataFrame, shown: pd.DataFrame, pictures: dict[str, dict[str, Path]], keys: list[str], folder: Path
) -> Section:
    """Each setting's pictures side by side from `shown`, its run with the lowest seed; `pictures` as
    table.download_pictures returns them, under folder."""
    columns = gallery_columns(shown)
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


def epochs_trained(trial: pd.Series) -> str:
    """'2 of 4': a pruned trial is labelled by the epochs it ran, beside the training.epochs it was set to run."""
    planned = trial.get(EPOCHS)
    return str(trial["pruned_epoch"]) + (f" of {planned}" if planned is not None and pd.notna(planned) else "")


def test_number(best: pd.Series, objective: str) -> str:
    """The best trial's test loss beside an objective of another split."""
    value = best.get(names.TEST_LOSS)
    return "" if objective == names.TEST_LOSS or value is None or pd.isna(value) else f", test loss {value:.2f}"


def _value(value: Any) -> str:
    """A searched value as short as it reads: a sampled learning rate has every digit of a float."""
    return format(value, ".4g") if isinstance(value, float) else str(value)


def search_section(
    search: Search,
    trials: pd.DataFrame,
    best: pd.Series | None,
    importances: dict[str, float] | str,
    figures: dict[str, Path],
) -> Section:
    """A search's trials: its best and how to rerun it, the course of the objective, which keys mattered (or why
    that is unknown: `importances` is then the reason) and the trials it pruned. `trials` as study.trials gives
    them; `figures` by file name, paths relative to the report folder."""
    captions = {
        names.FIG_SEARCH_HISTORY: f"{search.objective} per trial in trial order, the best so far as a line; pruned "
        "trials are crosses at the value they had reached, failed ones are left out.",
        names.FIG_SEARCH_PARALLEL: f"The complete trials over the searched keys and {search.objective}, coloured by "
        "it (best darkest); keys sampled on a log scale have log axes.",
    }
    blocks: list[str | Bullets | Table | Image | Code] = [
        _search_summary(search, trials),
        *_best_trial(search, best),
        *(Image(path, captions[name]) for name, path in figures.items()),
        *_importances(search, importances),
        *_pruned_trials(search, trials),
    ]
    return Section(f"Search: study {search.study}", blocks)


def _search_summary(search: Search, trials: pd.DataFrame) -> str:
    states = trials["trial_state"].fillna(trials["status"])
    counts = ", ".join(f"{count} {state.lower()}" for state, count in states.value_counts().sort_index().items())
    space = "; ".join(f"{key} = {dimension}" for key, dimension in search.space.items())
    return (
        f"Optuna study {search.study!r}, parent run {search.parent}: {len(trials)} trials here ({counts}). It "
        f"{search.direction}s {search.objective}, each trial's last logged value; searched: {space or 'nothing'}."
    )


def _best_trial(search: Search, best: pd.Series | None) -> list[str | Code]:
    if best is None:
        return [f"No trial completed with a value of {search.objective}, so there is no best one yet."]
    short = short_names(list(search.space))
    where = ", ".join(f"{short[key]}={_value(best[key])}" for key in search.space)
    better = "lower" if search.lower_is_better else "higher"
    return [
        f"Best trial: #{best['trial']} with {search.objective} {best['objective']:.2f} ({better} is better) at "
        f"{where}, run {best['run_id']}{test_number(best, search.objective)}; {split_words(search.objective)}. "
        "To train it again and compare:",
        Code(f"python -m vae_sweep.reproduce {best['run_id']}"),
    ]


def _importances(search: Search, importances: dict[str, float] | str) -> list[str | Table]:
    if isinstance(importances, str):
        return [importances]
    return [
        "Optuna's parameter importances over the study's complete trials (they sum to 1; few trials make them rough):",
        Table(
            ["config key", "dimension", "importance"],
            [[key, search.space.get(key, MISSING), f"{value:.2f}"] for key, value in importances.items()],
            "importances",
        ),
    ]


def _pruned_trials(search: Search, trials: pd.DataFrame) -> list[str | Table]:
    stopped = pruned(trials)
    if stopped.empty:
        return ["The search pruned no trial."]
    keys = list(search.space)
    rows = [
        [str(trial["trial"]), *(_value(trial[key]) for key in keys), epochs_trained(trial),
         number(trial["objective"]), trial["run_id"]]
        for _, trial in stopped.iterrows()
    ]  # fmt: skip
    header = ["trial", *short_names(keys).values(), "epochs trained", f"{search.objective} at pruning", "run id"]
    return [
        f"Trials the search stopped early: their {search.objective} is of fewer epochs than the others', so "
        "they are left out of every comparison above and below.",
        Table(header, rows, "pruned"),
    ]


def _first_line(error: Any) -> str:
    return MISSING if error is None or pd.isna(error) or not str(error) else str(error).splitlines()[0][:300]


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
