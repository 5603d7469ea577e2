"""Who a job is: its run name, its place in the sweep, and what code and machine produced it."""

from __future__ import annotations

import os
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from vae_sweep import names
from vae_sweep.config import defines_result
from vae_sweep.tracking.provenance import provenance

# Left out of a run's name: Hydra's own overrides and a search preset say how a sweep was launched, not what one of its
# points is. An experiment preset does say what a run is (`experiment=burda_vae` is not the defaults), so its name
# leads the run's, taken from Hydra's choice (an override or a default) rather than from the override.
_LAUNCH_PREFIXES = ("hydra.", "hydra/", "search=", "experiment=")


def run_name(overrides: list[str], preset: str | None = None) -> str:
    """'model.latent=100 training.epochs=100' -> 'latent=100 epochs=100', after the preset's name if one was chosen
    ('burda_vae latent=100'); placement settings are left out."""
    parts = [preset] if preset else []
    for override in overrides:
        key, _, value = override.lstrip("+~").partition("=")
        if override.lstrip("+~").startswith(_LAUNCH_PREFIXES) or not defines_result(key):
            continue
        parts.append(f"{key.rsplit('.', 1)[-1]}={value}")
    return " ".join(parts) or "defaults"


def job_identity(cfg: DictConfig) -> tuple[str, dict[str, str]]:
    """The run name and the tags that place this job in its sweep and say what code and machine produced it."""
    hydra_cfg = HydraConfig.get()
    overrides = list(hydra_cfg.overrides.task)
    multirun = hydra_cfg.mode == RunMode.MULTIRUN
    preset = hydra_cfg.runtime.choices.get("experiment")
    tags = {
        names.TAG_SWEEP_ID: str(Path(hydra_cfg.sweep.dir if multirun else hydra_cfg.run.dir).resolve()),
        names.TAG_SWEEP_JOB: str(hydra_cfg.job.num if multirun else 0),
        names.TAG_OVERRIDES: " ".join(overrides),
        names.TAG_PID: str(os.getpid()),
        names.TAG_PRESET: preset or "",
        **provenance(Path(cfg.paths.root_dir)),
        **cfg.tracking.tags,
    }
    if cfg.tracking.parent_run_id:
        tags[names.TAG_PARENT_RUN] = cfg.tracking.parent_run_id
    return run_name(overrides, preset), tags
