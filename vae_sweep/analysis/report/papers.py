"""Ours against the published numbers: the runs made with a paper's preset (their `preset` tag) whose settings are
the preset's, each reference value beside our mean ± std over seeds, and every setting in which our protocol differs
from the paper's. Pure functions, but for composing the presets from the shipped conf/ (preset_settings)."""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from vae_sweep import names
from vae_sweep.analysis.report.findings import number, setting
from vae_sweep.analysis.report.table import SEED, finished, seed_samples
from vae_sweep.config import defines_result, flatten


@dataclass(frozen=True)
class Reference:
    column: str  # in the runs table
    name: str
    value: float
    spec: str = ".2f"


@dataclass(frozen=True)
class Paper:
    """A published result and how it was made. A new paper is one more entry of PAPERS."""

    preset: str  # conf/experiment/<preset>.yaml
    source: str
    references: tuple[Reference, ...]
    # Config key -> the paper's setting, for every result-defining setting the paper states.
    protocol: dict[str, Any]
    # Keys in which a run may differ from the preset and still be compared, in a row of its own (a named shorter
    # schedule); a run that differs in any other key is left out.
    variants: tuple[str, ...] = ()
    # How our protocol differs from the paper's in what no config key expresses.
    unmatched: tuple[str, ...] = field(default_factory=tuple)
    # The settings of this row's runs in a preset that sweeps several rows (experiment=burda_iwae), beyond the preset's.
    row: tuple[tuple[str, Any], ...] = ()

    @property
    def label(self) -> str:
        return " ".join([self.preset, *(f"{key.split('.')[-1]}={value}" for key, value in self.row)])


BURDA_PROTOCOL = {
    "data.name": "mnist", "data.binarize": "dynamic", "model.hidden": [200, 200], "model.latent": 50,
    "model.activation": "tanh", "optimizer.name": "adam", "optimizer.lr": 1e-3, "optimizer.eps": 1e-4,
    "optimizer.schedule": "burda", "optimizer.schedule_pass_scale": 1.0, "training.epochs": 3280,
    "training.batch_size": 20, "training.beta": 1.0, "training.kl_warmup_epochs": 0, "eval.iwae_k": 5000,
}  # fmt: skip
BURDA_UNMATCHED = ("weights initialised as torch does (the paper: Glorot & Bengio's heuristic)",)


def _burda_row(objective: str, samples: int, nll: float) -> Paper:
    name = "VAE" if objective == "elbo" else "IWAE"
    row = (("model.objective", objective), ("model.samples", samples))
    return Paper(
        "burda_iwae",
        f"Burda et al. 2015 (IWAE), Table 1: {name}, k = {samples}, one stochastic layer",
        (Reference(names.Q_IWAE_NLL, "test NLL, -L_5000 (dynamically binarized MNIST)", nll),),
        {**BURDA_PROTOCOL, **dict(row)},
        variants=("optimizer.schedule_pass_scale", "training.epochs"),
        unmatched=BURDA_UNMATCHED,
        row=row,
    )


def _vampprior_row(prior: str, nll: float) -> Paper:
    return Paper(
        "vampprior",
        "Tomczak & Welling 2018 (VampPrior), one-layer VAE with the VampPrior, K = 500, as pythae's reproducibility "
        "table quotes it (on its statically binarized 'Binary MNIST'; this preset binarizes dynamically)",
        (Reference(names.Q_IWAE_NLL, "test NLL, 5,000 importance samples", nll),),
        {
            "data.name": "mnist",
            "data.binarize": "dynamic",
            "model.hidden": [300, 300],
            "model.latent": 40,
            "model.prior": prior,
            "model.prior_components": 500,
            "optimizer.name": "adam",
            "optimizer.lr": 5e-4,
            "training.epochs": 2000,
            "training.batch_size": 100,
            "training.kl_warmup_epochs": 100,
            "eval.iwae_k": 5000,
        },
        variants=("training.epochs",),
        unmatched=(
            "gated (GatedDense) layers in the paper, tanh MLP layers here",
            "the paper stops early on validation data; here a fixed training.epochs",
        ),
        row=(("model.prior", prior),),
    )


PAPERS = (
    Paper(
        "examples_parity",
        "pytorch/examples vae/main.py (784-400-20, Adam 1e-3, batch 128), its own script run for 10 epochs",
        (Reference(names.TEST_LOSS, "test loss (grey-level BCE + KL)", 105.56),),
        {
            "data.name": "mnist", "data.binarize": "none", "model.hidden": [400], "model.latent": 20,
            "model.activation": "relu", "optimizer.name": "adam", "optimizer.lr": 1e-3, "optimizer.eps": 1e-8,
            "optimizer.weight_decay": 0.0, "training.epochs": 10, "training.batch_size": 128, "training.beta": 1.0,
            "training.kl_warmup_epochs": 0,
        },
    ),
    Paper(
        "burda_vae",
        "Burda et al. 2015 (IWAE), Table 1: VAE, k = 1, one stochastic layer",
        (
            Reference(names.Q_IWAE_NLL, "test NLL, -L_5000 (dynamically binarized MNIST)", 86.76),
            Reference(names.Q_ACTIVE_UNITS, "active units (of 50)", 19, ".0f"),
        ),
        BURDA_PROTOCOL,
        variants=("optimizer.schedule_pass_scale", "training.epochs"),
        unmatched=BURDA_UNMATCHED,
    ),
    _burda_row("elbo", 1, 86.76),
    _burda_row("elbo", 5, 86.47),
    _burda_row("elbo", 50, 86.35),
    _burda_row("iwae", 5, 85.54),
    _burda_row("iwae", 50, 84.78),
    # Only the VampPrior row: the paper's standard-prior number could not be checked against its table here.
    _vampprior_row("vamp", 85.57),
)  # fmt: skip
HEADER = ["preset", "metric", "ours (mean ± std, seeds)", "paper", "difference", "protocol notes"]


@functools.cache
def preset_settings(preset: str | None) -> dict[str, Any]:
    """The result-defining settings of `python -m vae_sweep experiment=PRESET` (None: of the plain defaults), as
    today's conf/ composes them, seeds left out."""
    from hydra import compose, initialize_config_module
    from omegaconf import OmegaConf

    from vae_sweep.config import register_configs
    from vae_sweep.core.models import schemas

    register_configs(schemas())
    with initialize_config_module("vae_sweep.conf", version_base="1.3"):
        cfg = compose("config", overrides=[f"experiment={preset}"] if preset else [])
    # Unresolved: the placement settings interpolate Hydra's launch folder, and no result-defining one does.
    tree = {key: OmegaConf.to_container(cfg[key], enum_to_str=True) for key in cfg if key != "hydra"}
    return {key: value for key, value in flatten(tree).items() if defines_result(key) and key != SEED}


def same(ours: Any, theirs: Any) -> bool:
    """Whether a run's param (typed by the runs table, lists as text) is a setting's value."""
    if ours is None or (not isinstance(ours, (list, str)) and pd.isna(ours)):
        return theirs is None
    if isinstance(theirs, (int, float)) and not isinstance(theirs, bool):
        try:
            return math.isclose(float(ours), float(theirs), rel_tol=1e-9)
        except (TypeError, ValueError):
            return False
    return str(ours).lower() == str(theirs).lower()


def differences(run: pd.Series, wanted: dict[str, Any], defaults: dict[str, Any]) -> dict[str, Any]:
    """Each key of `wanted` whose value the run does not have -> the run's value. A run that predates a key (no
    such param) ran as its default does."""
    found = {}
    for key, value in wanted.items():
        ours = run[key] if key in run and not _missing(run[key]) else defaults.get(key)
        if not same(ours, value):
            found[key] = ours
    return found


def _missing(value: Any) -> bool:
    return not isinstance(value, (list, str)) and pd.isna(value)


def protocols(made: pd.DataFrame, paper: Paper) -> tuple[dict[str, pd.DataFrame], list[str]]:
    """The preset's runs by protocol: '' for those with the preset's settings, 'k=v, ...' for a variant of it; and
    in words, the runs left out because they differ from the preset in another setting."""
    preset, defaults = {**preset_settings(paper.preset), **dict(paper.row)}, preset_settings(None)
    labels = {}
    for index, run in made.iterrows():
        differ = differences(run, preset, defaults)
        labels[index] = setting(pd.Series(differ), list(differ)) if set(differ) <= set(paper.variants) else None
    label_of = pd.Series(labels, dtype=object).reindex(made.index)
    # The preset's own protocol first, then its variants.
    order = sorted(set(label_of.dropna()), key=lambda label: (label != "", label))
    groups = {label: made[label_of == label] for label in order}
    left = made[label_of.isna()]
    left_out = [
        f"{paper.label}: run {run['run_id'][:8]} left out, its settings differ from the preset's: "
        + ", ".join(f"{key}={ours} (preset: {preset[key]})" for key, ours in differences(run, preset, defaults).items())
        for _, run in left.iterrows()
    ]
    return groups, left_out


def protocol_notes(runs: pd.DataFrame, paper: Paper) -> str:
    """Every way these runs' settings differ from the paper's protocol, in words ('as the paper' when they don't)."""
    defaults = preset_settings(None)
    notes = []
    for key, expected in paper.protocol.items():
        values = runs[key].tolist() if key in runs else [defaults.get(key)]
        if not all(same(value, expected) for value in values):
            notes.append(f"{key} {', '.join(sorted({str(value) for value in values}))} (paper: {expected})")
    notes += paper.unmatched
    return "; ".join(notes) if notes else "as the paper"


def ours(values: pd.Series, spec: str) -> str:
    values = values.dropna()
    if values.empty:
        return "—"
    spread = f" ± {values.std():{spec}}" if len(values) > 1 else ""
    return f"{values.mean():{spec}}{spread} ({len(values)})"


def seed_values(runs: pd.DataFrame, column: str) -> pd.Series:
    """A metric's value per distinct seed: two runs of one seed are one sample."""
    if column not in runs:
        return pd.Series(dtype=float)
    return runs.groupby(seed_samples(runs))[column].mean()


def paper_rows(made: pd.DataFrame, paper: Paper, label: str) -> list[list[str]]:
    notes = protocol_notes(made, paper)
    rows = []
    for reference in paper.references:
        values = seed_values(made, reference.column)
        mean = values.mean()
        difference = "—" if math.isnan(mean) else f"{mean - reference.value:+{reference.spec}}"
        preset = f"{paper.label} ({label})" if label else paper.label
        rows.append(
            [preset, reference.name, ours(values, reference.spec), number(reference.value, reference.spec),
             difference, notes]
        )  # fmt: skip
    return rows


def comparison(runs: pd.DataFrame) -> tuple[list[list[str]], list[str]]:
    """One row per paper value and protocol that finished runs of its preset can be compared with; and the runs of
    a preset that were left out, in words."""
    done = finished(runs)
    rows, left_out = [], []
    for paper in PAPERS:
        made = done[done["preset"] == paper.preset] if "preset" in done else done.iloc[:0]
        for key, value in paper.row:
            made = made[[same(ours, value) for ours in made[key]]] if key in made else made.iloc[:0]
        if made.empty:
            continue
        groups, left = protocols(made, paper)
        left_out += left
        for label, group in groups.items():
            rows += paper_rows(group, paper, label)
    return rows, left_out


def sources() -> list[str]:
    return [f"{paper.label}: {paper.source}" for paper in PAPERS]


# MLflow filters have no OR or IN for tags: select every run made with a preset, then keep the papers' (of_papers).
PRESET_FILTER = f"tags.{names.TAG_PRESET} != ''"


def of_papers(runs: pd.DataFrame) -> pd.DataFrame:
    return runs[runs["preset"].isin([paper.preset for paper in PAPERS])]


def text_table(rows: list[list[str]]) -> str:
    """The comparison as aligned plain text, for the terminal."""
    widths = [max(len(row[column]) for row in [HEADER, *rows]) for column in range(len(HEADER))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)) for row in [HEADER, *rows]
    )
