"""The report's figures, drawn with matplotlib from the per-run and per-setting frames, each saved as a PNG."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.ticker import MaxNLocator, NullFormatter, ScalarFormatter

from vae_sweep import names
from vae_sweep.analysis.report.findings import groups, short_names
from vae_sweep.analysis.report.table import LATENT, QUALITIES, has_values
from vae_sweep.evaluation.plotting import plt, saved_figure

# The panels of the quality-vs-x figure, all in nats per image.
CURVES = (names.TEST_LOSS, names.TEST_RECON, names.TEST_KL, names.Q_IWAE_NLL, names.Q_IWAE_GREY)
# The learning-curve panels, one per loss term in the order of recon + KL = total.
TERM_TITLES = dict(zip(names.TERMS, ("reconstruction", "KL", "total (the objective)"), strict=True))
SPLIT_STYLES = dict(zip(names.SPLITS, ("--", "-"), strict=True))
# The per-epoch metrics the learning curves draw, which the caller fetches for them.
HISTORY_KEYS = tuple(names.epoch_key(split, term) for term in TERM_TITLES for split in names.SPLITS)
LEGEND_LIMIT = 20
# The least span of a quality panel's y axis, in nats: autoscaled, 99.36 -> 99.24 nats (0.12, within any seed spread)
# filled the panel from top to bottom like a cliff. A difference the saturation threshold (1 nat) counts stays visible.
MIN_SPAN_NATS = 4.0
# More distinct x values than this, each of one run, are a search's samples rather than a grid's steps; as many ticks
# would also overlap.
GRID_LIMIT = 12
# From this many epochs the learning curves' epoch axis is logarithmic: over thousands of epochs (Burda et al.'s 3^i
# stages, the VampPrior's 2,000) most of the change is in the first few percent, which a linear axis squeezes into
# its left edge. The seed study's 50-100 epochs stay linear.
LOG_EPOCHS_FROM = 1000


def draws_lines(points: pd.DataFrame, x: str, others: list[str]) -> bool:
    """Whether a figure over x joins its points with lines, one per setting of the other swept params.

    A line needs a setting with two x values or more, which a grid gives; a search samples every trial's values
    anew, so that either no setting recurs (several dimensions) or x takes many values of one run each (x alone),
    which a line would join into a zigzag of noise. Those figures are scatters.
    """
    sampled = points[x].nunique() > GRID_LIMIT and (points["seeds"] == 1).all()
    return not sampled and any(group[x].nunique() > 1 for _, group in groups(points, others))


def lines_of(points: pd.DataFrame, x: str, others: list[str]) -> list[tuple[str, pd.DataFrame, str]]:
    """What to draw over x: (legend label, points, line style), a line per setting or one unjoined scatter."""
    if not draws_lines(points, x, others):
        return [("", points.sort_values(x), "none")]
    return [(label, group.sort_values(x), "-") for label, group in groups(points, others)]


def _label_log_x(ax, values: pd.Series) -> None:
    """Log x with plain numbers: a tick at each value of a grid, where matplotlib would label 2x10^0, 3x10^0, ..."""
    ax.set_xscale("log")
    ticks = sorted(values.dropna().unique())
    if len(ticks) <= GRID_LIMIT:
        ax.set_xticks(ticks, [str(tick) for tick in ticks])
    else:
        ax.xaxis.set_major_formatter(ScalarFormatter())
    ax.xaxis.set_minor_formatter(NullFormatter())


def _title(column: str) -> str:
    return next(quality.name for quality in QUALITIES if quality.column == column)


def widen_y(ax, min_span: float = MIN_SPAN_NATS) -> None:
    """The y axis as autoscaled to the data and their error bars, widened about its middle to min_span if narrower."""
    low, high = ax.get_ylim()
    if high - low < min_span:
        middle = (low + high) / 2
        ax.set_ylim(middle - min_span / 2, middle + min_span / 2)


def one_seed_each(points: pd.DataFrame) -> bool:
    return bool((points["seeds"] == 1).all())


def plot_quality_vs_x(points: pd.DataFrame, x: str, others: list[str], path: Path) -> Path:
    """One panel per loss term (and the IWAE bounds when present) against x, a line per setting of the other swept
    params (or a scatter, see draws_lines), error bars one std over seeds, each y axis at least MIN_SPAN_NATS."""
    panels = [column for column in CURVES if has_values(points, column)]
    drawn = lines_of(points, x, others)
    with saved_figure(path, ncols=len(panels), figsize=(5 * len(panels), 4.5), squeeze=False) as (fig, axes):
        for ax, column in zip(axes[0], panels, strict=True):
            for label, group, style in drawn:
                errors = group[f"{column} std"].fillna(0.0)
                ax.errorbar(
                    group[x], group[column], yerr=errors, marker="o", capsize=3, linestyle=style, label=label or None
                )
            if x == LATENT:
                _label_log_x(ax, points[x])
            widen_y(ax)
            ax.set_title(_title(column))
            ax.set_xlabel(x)
            ax.set_ylabel("nats per test image")
            if any(label for label, _, _ in drawn):
                ax.legend(fontsize="small")
        spread = "one seed per point: no error bars" if one_seed_each(points) else "mean ± std over seeds"
        fig.suptitle(f"Test-set quality against {x} ({spread}; each y axis spans ≥ {MIN_SPAN_NATS:g} nats)")
    return path


def plot_active_units(points: pd.DataFrame, keys: list[str], path: Path) -> Path:
    """Active units against latent size, a line per setting of the other swept params (or a scatter, see
    draws_lines), beside y = x (all used)."""
    others = [key for key in keys if key != LATENT]
    sizes = np.sort(points[LATENT].unique().astype(float))
    units = names.Q_ACTIVE_UNITS
    with saved_figure(path, figsize=(7, 5)) as (fig, ax):
        for label, group, style in lines_of(points.dropna(subset=[units]), LATENT, others):
            errors = group[f"{units} std"].fillna(0.0)
            ax.errorbar(
                group[LATENT], group[units], yerr=errors, marker="o", capsize=3, linestyle=style, label=label or None
            )
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


def plot_learning_curves(histories: pd.DataFrame, runs: dict[str, str], which: str, path: Path) -> Path:
    """The runs' loss terms per epoch (HISTORY_KEYS), overlaid: train dashed, test solid, one colour per run.

    `runs` maps run id to the name in the legend; `which` says whose curves these are."""
    series = {key: frame for key, frame in histories.groupby(["run_id", "key"])}
    colours = plt.get_cmap("turbo")(np.linspace(0.05, 0.95, len(runs)))
    with saved_figure(path, ncols=len(TERM_TITLES), figsize=(16, 5), squeeze=False) as (fig, axes):
        for ax, (term, title) in zip(axes[0], TERM_TITLES.items(), strict=True):
            for colour, (run_id, name) in zip(colours, runs.items(), strict=True):
                for split, style in SPLIT_STYLES.items():
                    frame = series.get((run_id, names.epoch_key(split, term)))
                    if frame is not None:
                        label = name if split == "test" else None
                        ax.plot(frame["step"], frame["value"], style, color=colour, linewidth=1, label=label)
            ax.set_title(title)
            epoch_axis(ax, int(histories["step"].max()) if len(histories) else 1)
            ax.set_ylabel("nats per image")
        if len(runs) <= LEGEND_LIMIT:
            axes[0][-1].legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.02, 1))
        fig.suptitle(f"Learning curves of {which} (train dashed, test solid)")
    return path


def epoch_axis(ax, last_epoch: int) -> None:
    """An epoch x axis up to last_epoch: integers on a linear one, plain numbers on a log one (LOG_EPOCHS_FROM)."""
    if last_epoch < LOG_EPOCHS_FROM:
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        return
    ax.set_xscale("log")
    ax.xaxis.set_major_formatter(ScalarFormatter())
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel("epoch (log scale)")


def plot_rate_distortion(runs: pd.DataFrame, x: str, path: Path) -> Path:
    """Each run's test KL (rate) against its reconstruction loss (distortion), marked with its x value."""
    name = short_names([x])[x]
    with saved_figure(path, figsize=(8, 6)) as (fig, ax):
        for value, group in runs.groupby(x, dropna=False, sort=True):
            ax.scatter(group[names.TEST_KL], group[names.TEST_RECON], label=f"{name}={value}")
            for _, run in group.iterrows():
                ax.annotate(str(value), (run[names.TEST_KL], run[names.TEST_RECON]), fontsize=7,
                            textcoords="offset points", xytext=(3, 3))  # fmt: skip
        ax.set_xlabel("rate: test KL (nats)")
        ax.set_ylabel("distortion: test reconstruction loss (nats)")
        ax.set_title(f"Rate–distortion, one point per run, labelled by {x}")
        if runs[x].nunique() <= LEGEND_LIMIT:
            ax.legend(fontsize="small")
    return path


def plot_search_history(
    done: pd.DataFrame, stopped: pd.DataFrame, objective: str, lower_is_better: bool, path: Path
) -> Path:
    """The objective of each complete trial (`done`) and pruned one (`stopped`) in trial order, with the best so far;
    failed trials have no value and are not drawn. Pruned trials are crosses: their value is from the epoch they
    stopped at, so they do not count for the best."""
    best = done["objective"].cummin() if lower_is_better else done["objective"].cummax()
    with saved_figure(path, figsize=(8, 5)) as (fig, ax):
        ax.scatter(done["trial"], done["objective"], marker="o", label="complete")
        ax.scatter(stopped["trial"], stopped["objective"], marker="x", color="grey", label="pruned (at its last epoch)")
        ax.step(done["trial"], best, where="post", color="black", label="best so far")
        ax.set_xlabel("trial")
        ax.set_ylabel(objective)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_title(f"Optimisation history ({'lower' if lower_is_better else 'higher'} is better)")
        ax.legend(fontsize="small")
    return path


def _axis_positions(values: pd.Series, log: bool) -> tuple[np.ndarray, list[tuple[float, str]]]:
    """Values placed on a parallel axis from 0 to 1, and (position, label) ticks; words get evenly spaced places."""
    if not pd.api.types.is_numeric_dtype(values):
        kinds = sorted(values.astype(str).unique())
        spread = np.linspace(0, 1, len(kinds)) if len(kinds) > 1 else np.array([0.5])
        place = dict(zip(kinds, spread, strict=True))
        return values.astype(str).map(place).to_numpy(float), [(place[kind], kind) for kind in kinds]
    numbers = values.to_numpy(float)
    scaled = np.log10(numbers) if log else numbers
    low, high = scaled.min(), scaled.max()
    width = high - low if high > low else 1.0
    ticks = np.linspace(low, high, 5) if high > low else np.array([low])
    labels = [(float((tick - low) / width), f"{10**tick if log else tick:.3g}") for tick in ticks]
    return (scaled - low) / width, labels


def plot_parallel_coordinates(
    done: pd.DataFrame, keys: list[str], log_keys: set[str], objective: str, lower_is_better: bool, path: Path
) -> Path:
    """The complete trials as lines over one vertical axis per searched key and one for the objective, coloured by
    the objective (best darkest); keys in `log_keys` are on log axes, as they were sampled."""
    axes_of = [*keys, "objective"]
    titles = [*short_names(keys).values(), objective]
    placed = [_axis_positions(done[key], key in log_keys) for key in axes_of]
    values = done["objective"].to_numpy(float)
    colours = plt.get_cmap("viridis" if lower_is_better else "viridis_r")
    norm = plt.Normalize(values.min(), values.max())
    with saved_figure(path, figsize=(2.5 * len(axes_of) + 2, 5)) as (fig, ax):
        where = np.arange(len(axes_of))
        for row, value in enumerate(values):
            ax.plot(where, [positions[row] for positions, _ in placed], color=colours(norm(value)), alpha=0.8)
        for index, (_, ticks) in enumerate(placed):
            ax.axvline(index, color="black", linewidth=1)
            for position, label in ticks:
                ax.annotate(
                    label, (index, position), xytext=(4, 0), textcoords="offset points", fontsize=7, va="center"
                )
        ax.set_xticks(where, titles)
        ax.set_yticks([])
        ax.set_xlim(-0.2, len(axes_of) - 0.6)
        for side in ("left", "right", "top"):
            ax.spines[side].set_visible(False)
        fig.colorbar(plt.cm.ScalarMappable(norm=norm, cmap=colours), ax=ax, label=objective)
        ax.set_title(f"Complete trials over the searched keys and {objective}")
    return path
