"""What the numbers say, as pure functions over the per-setting frame: the best setting per metric, where a larger x
stops paying, how much of the latent space is used, and those findings in words."""

from __future__ import annotations

from typing import Any, Iterator

import pandas as pd

from vae_sweep import names
from vae_sweep.analysis.report.table import LATENT, QUALITIES

SATURATION_NATS = 1.0
MISSING = "—"


def number(value: Any, spec: str = ".2f") -> str:
    return MISSING if value is None or pd.isna(value) else format(value, spec)


def short_names(keys: list[str]) -> dict[str, str]:
    """'training.epochs' -> 'epochs', unless two keys would share the short name."""
    last = [key.rsplit(".", 1)[-1] for key in keys]
    return {key: short if last.count(short) == 1 else key for key, short in zip(keys, last, strict=True)}


def shown(value) -> str:
    """A setting's value as a reader wants it: a searched learning rate is 0.0008355, not 0.0008355165798016754."""
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def applies(value) -> bool:
    """Whether a run has the key at all: a family's own keys (mlp's hidden, conv's channels) are missing on the
    other family's runs."""
    return not (value is None or (not isinstance(value, (list, tuple)) and pd.isna(value)))


def setting(row: pd.Series, keys: list[str]) -> str:
    """'latent=10, epochs=5', without the keys this row's model family does not have."""
    short = short_names(keys)
    return ", ".join(f"{short[key]}={shown(row[key])}" for key in keys if applies(row[key]))


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


def find_saturation(points: pd.DataFrame, x: str, metric: str = names.TEST_LOSS, threshold: float = SATURATION_NATS):
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
    points: pd.DataFrame,
    x: str,
    others: list[str],
    metric: str = names.TEST_LOSS,
    threshold: float = SATURATION_NATS,
) -> dict[str, Any]:
    """find_saturation for each setting of the other swept params, by its label."""
    return {label: find_saturation(group, x, metric, threshold) for label, group in groups(points, others)}


def active_units_by_latent(points: pd.DataFrame, others: list[str]) -> dict[str, dict[Any, float]]:
    """For each setting of `others`: latent size -> mean number of active units."""
    usable = points.dropna(subset=[names.Q_ACTIVE_UNITS])
    return {
        label: group.groupby(LATENT)[names.Q_ACTIVE_UNITS].mean().to_dict()
        for label, group in groups(usable, others)
        if not group.empty
    }


def runs_and_seeds(point: pd.Series) -> str:
    """'1 run', '3 runs', or '2 runs of 1 seed' where runs repeat a seed."""
    runs, seeds = int(point.get("runs", point["seeds"])), int(point["seeds"])
    text = f"{runs} run{'s' if runs > 1 else ''}"
    return text if runs == seeds else f"{text} of {seeds} seed{'s' if seeds > 1 else ''}"


def selected_on(frame: pd.DataFrame) -> str:
    """The metric that picks a winner among these runs or settings: loss/val where every one holds it, else
    loss/test."""
    has_val = names.VAL_LOSS in frame and not frame.empty and bool(frame[names.VAL_LOSS].notna().all())
    return names.VAL_LOSS if has_val else names.TEST_LOSS


def split_words(metric: str) -> str:
    """Which data selected a winner, and what that makes of its test number."""
    if metric.endswith(f"/{names.VAL}"):
        return f"selected on the validation split ({metric}), so its test number is an unbiased estimate"
    if metric.endswith("/test"):
        return f"selected on the test set ({metric}): the test set chose it, so its test number is optimistic"
    return f"selected on {metric}"


def best_loss_line(points: pd.DataFrame, keys: list[str]) -> str | None:
    """The winning setting, chosen on validation data where every setting has it, with the split that chose it."""
    metric = selected_on(points)
    row = best_setting(points, metric)
    if row is None:
        return None
    if metric == names.VAL_LOSS:
        return (
            f"Best setting: {setting(row, keys)} ({runs_and_seeds(row)}), {metric} {number(row[metric])}, test loss "
            f"{number(row[names.TEST_LOSS])}; {split_words(metric)}"
        )
    where = f"{setting(row, keys)} ({runs_and_seeds(row)})"
    return f"Lowest test loss: {number(row[metric])} at {where}; {split_words(metric)}"


def best_lines(points: pd.DataFrame, keys: list[str]) -> list[str]:
    lines = [line for line in [best_loss_line(points, keys)] if line]
    for quality in QUALITIES:
        if quality.lower_is_better is None or quality.column == names.TEST_LOSS:
            continue
        row = best_setting(points, quality.column, quality.lower_is_better)
        if row is not None:
            extreme = "Lowest" if quality.lower_is_better else "Highest"
            lines.append(
                f"{extreme} {quality.name}: {number(row[quality.column], quality.spec)} at {setting(row, keys)} "
                f"({runs_and_seeds(row)})"
            )
    return lines


def saturation_lines(points: pd.DataFrame, x: str, others: list[str], threshold: float = SATURATION_NATS) -> list[str]:
    """Per setting of `others`, where the gain in test loss from a larger x drops under `threshold` nats."""
    lines = []
    for label, group in groups(points, others):
        curve = group.groupby(x)[names.TEST_LOSS].mean().dropna().sort_index()
        if len(curve) < 2:
            continue
        where = f" ({label})" if label else ""
        found = find_saturation(group, x, names.TEST_LOSS, threshold)
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
    if names.Q_ACTIVE_UNITS not in points or LATENT not in points:
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
