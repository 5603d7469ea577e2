"""Ours against the published numbers: the runs made with a paper's preset (their `preset` tag), each reference
value beside our mean ± std over seeds, and every way our protocol differed from the paper's (pure, no I/O)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import pandas as pd

from vae_sweep import names
from vae_sweep.analysis.report.findings import number
from vae_sweep.analysis.report.table import finished


@dataclass(frozen=True)
class Reference:
    column: str  # in the runs table
    name: str
    value: float
    spec: str = ".2f"


@dataclass(frozen=True)
class Paper:
    preset: str  # conf/experiment/<preset>.yaml
    source: str
    references: tuple[Reference, ...]
    protocol: tuple[tuple[str, Any], ...]  # config key -> the paper's setting; a run that differs says so
    # config key -> value that picks this row's runs out of a preset that sweeps several rows (experiment=burda_iwae)
    where: tuple[tuple[str, Any], ...] = ()

    @property
    def label(self) -> str:
        return " ".join([self.preset, *(f"{key.split('.')[-1]}={value}" for key, value in self.where)])


def _burda_row(objective: str, samples: int, nll: float) -> Paper:
    name = "VAE" if objective == "elbo" else "IWAE"
    return Paper(
        "burda_iwae",
        f"Burda et al. 2015 (IWAE), Table 1: {name}, k = {samples}, one stochastic layer",
        (Reference(names.Q_IWAE_NLL, "test NLL, -L_5000 (dynamically binarized MNIST)", nll),),
        (("training.epochs", 3280), ("eval.iwae_k", 5000), ("data.binarize", "dynamic"), ("training.batch_size", 20)),
        (("model.objective", objective), ("model.samples", samples)),
    )


def _vampprior_row(prior: str, nll: float, note: str) -> Paper:
    return Paper(
        "vampprior",
        f"Tomczak & Welling 2018 (VampPrior), Table 2, one-layer VAE, dynamic MNIST: {note}",
        (Reference(names.Q_IWAE_NLL, "test NLL, 5,000 importance samples", nll),),
        (("training.epochs", 2000), ("eval.iwae_k", 5000), ("data.binarize", "dynamic"), ("model.latent", 40)),
        (("model.prior", prior),),
    )


PAPERS = (
    Paper(
        "examples_parity",
        "pytorch/examples vae/main.py (784-400-20, Adam 1e-3, batch 128), its own script run for 10 epochs",
        (Reference(names.TEST_LOSS, "test loss (grey-level BCE + KL)", 105.56),),
        (("training.epochs", 10), ("training.batch_size", 128), ("model.latent", 20), ("data.binarize", "none")),
    ),
    Paper(
        "burda_vae",
        "Burda et al. 2015 (IWAE), Table 1: VAE, k = 1, one stochastic layer",
        (
            Reference(names.Q_IWAE_NLL, "test NLL, -L_5000 (dynamically binarized MNIST)", 86.76),
            Reference(names.Q_ACTIVE_UNITS, "active units (of 50)", 19, ".0f"),
        ),
        (("training.epochs", 3280), ("eval.iwae_k", 5000), ("data.binarize", "dynamic"), ("training.batch_size", 20)),
    ),
    _burda_row("elbo", 1, 86.76),
    _burda_row("elbo", 5, 86.47),
    _burda_row("elbo", 50, 86.35),
    _burda_row("iwae", 5, 85.54),
    _burda_row("iwae", 50, 84.78),
    _vampprior_row("vamp", 85.57, "VampPrior, K = 500"),
    _vampprior_row("normal", 88.56, "standard prior (value as we read the paper's table; not re-checked here)"),
)
HEADER = ["preset", "metric", "ours (mean ± std, seeds)", "paper", "difference", "protocol notes"]


def protocol_notes(runs: pd.DataFrame, paper: Paper) -> str:
    """How these runs' settings differ from the paper's protocol, in words ('as the paper' when they don't)."""
    notes = []
    for key, expected in paper.protocol:
        if key not in runs:
            continue
        ours = sorted({str(value) for value in runs[key]})
        if ours != [str(expected)]:
            notes.append(f"{key} {', '.join(ours)} (paper: {expected})")
    return "; ".join(notes) if notes else "as the paper"


def ours(values: pd.Series, spec: str) -> str:
    values = values.dropna()
    if values.empty:
        return "—"
    spread = f" ± {values.std():{spec}}" if len(values) > 1 else ""
    return f"{values.mean():{spec}}{spread} ({len(values)})"


def comparison_rows(runs: pd.DataFrame) -> list[list[str]]:
    """One row per paper value that finished runs of its preset can be compared with."""
    done = finished(runs)
    rows = []
    for paper in PAPERS:
        made = done[done["preset"] == paper.preset] if "preset" in done else done.iloc[:0]
        for key, value in paper.where:
            made = made[made[key].astype(str) == str(value)] if key in made else made.iloc[:0]
        if made.empty:
            continue
        notes = protocol_notes(made, paper)
        for reference in paper.references:
            values = made[reference.column] if reference.column in made else pd.Series(dtype=float)
            mean = values.mean()
            difference = "—" if math.isnan(mean) else f"{mean - reference.value:+{reference.spec}}"
            rows.append(
                [
                    paper.label,
                    reference.name,
                    ours(values, reference.spec),
                    number(reference.value, reference.spec),
                    difference,
                    notes,
                ]
            )
    return rows


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
