"""The study's two open questions, answered from the runs themselves (pure functions, no I/O):

- Why does the KL term rise during training while the total loss falls? Read from each run's own test history.
- Why do large latent sizes (100 and 200) look alike? Active units and the loss against latent size, compared only
  between runs with equal training budgets, and against the seed-to-seed spread where there are several seeds.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import pandas as pd

from vae_sweep import names
from vae_sweep.analysis.report.findings import setting, short_names
from vae_sweep.analysis.report.table import LATENT, SEED, has_values

# Per-epoch keys the answers read; the ELBO and active units per epoch are optional (runs before they were logged
# lack them).
HISTORY_KEYS = (names.TEST_KL, names.TEST_RECON, names.TEST_LOSS, names.TEST_ELBO, names.ACTIVE_UNITS)
# A change smaller than this (nats) is reported as no change at all.
NEGLIGIBLE_NATS = 0.05


@dataclass(frozen=True)
class KlPath:
    """The test KL's course over one run: where it bottoms out and what the other terms did after that epoch."""

    first_epoch: int
    last_epoch: int
    low_epoch: int
    kl_first: float
    kl_low: float
    kl_last: float
    recon_change: float  # last minus at low_epoch, nats (negative: fell)
    elbo_change: float  # of the negative ELBO, recon + KL, whatever training.beta weighed the KL by
    loss_change: float  # of the test loss, recon + beta * KL: the objective the run trained on
    units_low: float | None
    units_last: float | None

    @property
    def rise(self) -> float:
        return self.kl_last - self.kl_low


def wide(history: pd.DataFrame) -> pd.DataFrame:
    """A run's long history (key, step, value) as one row per epoch and one column per key."""
    return history.pivot_table(index="step", columns="key", values="value", aggfunc="last").sort_index()


def _change(epochs: pd.DataFrame, key: str, low: int, last: int) -> float:
    return float(epochs.at[last, key] - epochs.at[low, key])


def kl_path(history: pd.DataFrame) -> KlPath | None:
    """The KL's course in a run's wide history; None without test KL, reconstruction and loss for two epochs."""
    needed = [names.TEST_KL, names.TEST_RECON, names.TEST_LOSS]
    if any(key not in history for key in needed):
        return None
    epochs = history.dropna(subset=needed)
    if len(epochs) < 2:
        return None
    kl = epochs[names.TEST_KL]
    low = int(kl.idxmin())
    last = int(epochs.index[-1])
    units = epochs.get(names.ACTIVE_UNITS)
    recon_change = _change(epochs, names.TEST_RECON, low, last)
    # Runs from before the ELBO was logged: recon + KL is its definition.
    logged_elbo = names.TEST_ELBO in epochs and epochs[names.TEST_ELBO][[low, last]].notna().all()
    kl_change = float(kl[last] - kl[low])
    elbo_change = _change(epochs, names.TEST_ELBO, low, last) if logged_elbo else recon_change + kl_change
    return KlPath(
        first_epoch=int(epochs.index[0]),
        last_epoch=last,
        low_epoch=low,
        kl_first=float(kl.iloc[0]),
        kl_low=float(kl[low]),
        kl_last=float(kl[last]),
        recon_change=recon_change,
        elbo_change=elbo_change,
        loss_change=_change(epochs, names.TEST_LOSS, low, last),
        units_low=None if units is None or pd.isna(units.get(low)) else float(units[low]),
        units_last=None if units is None or pd.isna(units.get(last)) else float(units[last]),
    )


def units_story(before: float, after: float) -> str:
    if after > before:
        return "the rise is new latent dimensions coming into use."
    if after < before:
        # Per epoch only the means' variance is logged: whether the rest became the prior is not known here.
        return (
            "fewer dimensions stay in use (the rest have near-constant posterior means), and those carry more "
            "information each."
        )
    return "the same dimensions carry more information each."


def _ms(values: list[float], spec: str = ".2f") -> str:
    """One run's value, or the mean ± std over a setting's seeds."""
    series = pd.Series(values, dtype=float)
    return f"{series.mean():{spec}}" if len(series) < 2 else f"{series.mean():{spec}} ± {series.std():{spec}}"


def _epochs(values: list[int]) -> str:
    low, high = min(values), max(values)
    return f"epoch {low}" if low == high else f"epochs {low}–{high}"


def trade_words(paths: list[KlPath]) -> str:
    """What paid for the KL's rise, read from the terms themselves: reconstruction against KL, and so the ELBO; the
    objective (recon + beta * KL) is named where it moved otherwise than the ELBO (training.beta != 1)."""
    recon_fell = [-path.recon_change for path in paths]
    rise = [path.rise for path in paths]
    elbo = pd.Series([path.elbo_change for path in paths])
    loss = pd.Series([path.loss_change for path in paths])
    if (elbo < 0).all():
        text = (
            f"reconstruction fell by {_ms(recon_fell)} nats, more than the KL rose ({_ms(rise)}), so the negative "
            f"ELBO (recon + KL) fell by {_ms((-elbo).tolist())}: the encoder spends nats on a more precise posterior "
            "because each one buys more than a nat of reconstruction"
        )
    else:
        text = (
            f"reconstruction changed by {_ms([path.recon_change for path in paths])} nats against a KL rise of "
            f"{_ms(rise)}, so the negative ELBO (recon + KL) changed by {_ms(elbo.tolist())}"
            + (" in some seeds and fell in others" if (elbo < 0).any() else "")
            + ": here the KL's rise was not paid back in the bound (overfitting, or a KL weight still ramping)"
        )
    if ((loss - elbo).abs() > NEGLIGIBLE_NATS).any():
        text += (
            f"; the training objective, which weighs the KL by training.beta, changed by {_ms(loss.tolist())}, "
            "which is not the ELBO's change"
        )
    return text + "."


def kl_rise_line(label: str, paths: list[KlPath]) -> str:
    """The runs' own numbers for 'why does the KL rise while the total falls' (or that it did not rise): one run's,
    or the mean ± std over a setting's seeds."""
    seeds = f" (mean ± std over {len(paths)} seeds)" if len(paths) > 1 else ""
    rise = [path.rise for path in paths]
    if max(rise) <= NEGLIGIBLE_NATS:
        return (
            f"{label}{seeds}: the test KL never rose after its low — {_ms([p.kl_first for p in paths])} nats in "
            f"{_epochs([p.first_epoch for p in paths])}, {_ms([p.kl_last for p in paths])} in "
            f"{_epochs([p.last_epoch for p in paths])} — so there is no rise to explain in this run."
        )
    units = ""
    if all(path.units_low is not None and path.units_last is not None for path in paths):
        before, after = [p.units_low for p in paths], [p.units_last for p in paths]
        units = (
            f" Active units went from {_ms(before, '.0f')} to {_ms(after, '.0f')} over the same span: "
            + units_story(float(pd.Series(before).mean()), float(pd.Series(after).mean()))
        )  # fmt: skip
    return (
        f"{label}{seeds}: the test KL bottoms out at {_ms([p.kl_low for p in paths])} nats in "
        f"{_epochs([p.low_epoch for p in paths])} and rises by {_ms(rise)} to {_ms([p.kl_last for p in paths])} by "
        f"{_epochs([p.last_epoch for p in paths])}; over those epochs {trade_words(paths)}{units}"
    )


def kl_rise_lines(histories: pd.DataFrame, settings: dict[str, list[str]]) -> list[str]:
    """One answer per setting from the long histories (run_id, key, step, value) of its runs, by its label; the
    runs without a history to answer from are left out."""
    lines = []
    for label, run_ids in settings.items():
        paths = [kl_path(wide(histories[histories["run_id"] == run_id])) for run_id in run_ids]
        paths = [path for path in paths if path is not None]
        if paths:
            lines.append(kl_rise_line(label, paths))
    return lines


def confounded_with(points: pd.DataFrame, x: str, others: list[str]) -> list[str]:
    """The other swept params that change together with x: each value of x comes with one value of the param, so
    the two cannot be told apart by comparing across x."""
    found = []
    for other in others:
        per_x = points.groupby(x)[other].nunique(dropna=False)
        if points[other].nunique(dropna=False) > 1 and (per_x == 1).all():
            found.append(other)
    return found


def _spread(point: pd.Series, metric: str) -> float | None:
    """The seed-to-seed standard deviation of a setting's metric; None with one seed."""
    value = point.get(f"{metric} std")
    return None if point["seeds"] < 2 or value is None or pd.isna(value) else float(value)


def against_spread(difference: float, first: pd.Series, second: pd.Series, metric: str) -> str:
    """Whether a difference between two settings' means stands out from their seeds' spread: more than two
    standard errors of the difference of means."""
    spreads = [_spread(first, metric), _spread(second, metric)]
    if any(spread is None for spread in spreads):
        return "one seed per setting, so no seed spread to compare with"
    error = math.sqrt(sum(spread**2 / point["seeds"] for spread, point in zip(spreads, (first, second), strict=True)))
    verdict = "larger than" if abs(difference) > 2 * error else "within"
    return (
        f"{verdict} the seed-to-seed spread (seed std {max(spreads):.2f} nats; two standard errors of the "
        f"difference {2 * error:.2f})"
    )


def unused_words(large: pd.Series, unused: float) -> str:
    """What the larger model's inactive units are: the prior only where the per-dimension KL says so too."""
    prior = large.get(names.Q_PRIOR_DIMS)
    if prior is None or pd.isna(prior):
        return (
            f"{unused:.0f} of the larger model's dimensions have near-constant posterior means, so carry no "
            "information about the image (inferred from active units only: these runs did not log the count of "
            "dimensions whose KL is about 0, so whether they are the prior is not checked)"
        )
    if prior >= unused - 0.5:
        return (
            f"{unused:.0f} of the larger model's dimensions carry no information (their posterior is the prior: "
            f"KL below {names.PRIOR_KL_NATS:g} nats in {prior:.0f} of them)"
        )
    return (
        f"{unused:.0f} of the larger model's dimensions have near-constant posterior means, but only {prior:.0f} a "
        f"KL below {names.PRIOR_KL_NATS:g} nats: the other {unused - prior:.0f} spend KL on a posterior that is "
        "not the prior"
    )


def latent_step_line(where: str, small: pd.Series, large: pd.Series) -> str:
    """Two neighbouring latent sizes at the same setting of everything else: loss, active units, and their spread."""
    loss = names.TEST_LOSS
    difference = large[loss] - small[loss]
    text = (
        f"{where}latent {small[LATENT]} → {large[LATENT]}: test loss {small[loss]:.2f} → {large[loss]:.2f} "
        f"({difference:+.2f} nats, {against_spread(difference, small, large, loss)})"
    )
    # The end-of-run count where the runs were evaluated, else the last epoch's.
    units = (
        names.Q_ACTIVE_UNITS if has_values(pd.DataFrame([small, large]), names.Q_ACTIVE_UNITS) else names.ACTIVE_UNITS
    )
    if units in small and pd.notna(small[units]) and pd.notna(large[units]):
        text += f"; active units {small[units]:.1f} of {small[LATENT]} → {large[units]:.1f} of {large[LATENT]}"
        if large[units] - small[units] < 0.1 * (large[LATENT] - small[LATENT]):
            text += (
                f": {unused_words(large, large[LATENT] - large[units])}; both models code the images in about the "
                "same number of dimensions"
            )
    return text + "."


def latent_lines(points: pd.DataFrame, x: str, others: list[str]) -> list[str]:
    """Why large latent sizes look alike: neighbouring sizes compared at equal settings of everything else, with the
    confound stated when latent size and another setting (the epochs, in experiment=seed) change together."""
    if x != LATENT or points[LATENT].nunique() < 2:
        return []
    lines = []
    confounds = confounded_with(points, x, others)
    if confounds:
        pairs = "; ".join(
            f"{latent} → " + ", ".join(f"{short_names(confounds)[c]}={group[c].iloc[0]}" for c in confounds)
            for latent, group in points.groupby(LATENT)
        )
        lines.append(
            f"Latent size and {', '.join(confounds)} change together in this selection ({pairs}): a difference "
            "across latent sizes could come from either, so latent sizes are compared only at equal "
            f"{', '.join(confounds)}."
        )
    fixed = [other for other in others if other != SEED]
    grouped = points.groupby(fixed, dropna=False, sort=True) if fixed else [((), points)]
    for _, group in grouped:
        ordered = group.sort_values(LATENT)
        where = f"At {setting(ordered.iloc[0], fixed)}, " if fixed else ""
        for (_, small), (_, large) in zip(ordered.iloc[:-1].iterrows(), ordered.iloc[1:].iterrows(), strict=True):
            lines.append(latent_step_line(where, small, large))
    if confounds and all(len(group) < 2 for _, group in grouped):
        lines.append("No two latent sizes share a setting of the rest, so no latent sizes can be compared fairly.")
    return lines
