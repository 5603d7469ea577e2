"""The sweep's side of its MLflow parent run (vae_sweep.tracking.sweeps): opened before the first job, passed to every
job as tracking.parent_run_id, counted as jobs end, closed with the sweep's outcome.
Without tracking it does nothing."""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Sequence

from omegaconf import DictConfig

from vae_sweep import names
from vae_sweep.tracking.store import Store, open_store, run_link

log = logging.getLogger(__name__)


def _records():
    """vae_sweep.tracking.sweeps, imported once a parent run is written: Hydra imports every plugin module on every
    run, a single run and `--cfg job` too, and that module loads MLflow."""
    from vae_sweep.tracking import sweeps

    return sweeps


def sweep_key(experiment: str, parts: Sequence[str]) -> str:
    """The same sweep definition (its overrides, in any order) in the same experiment gives the same key."""
    text = json.dumps([experiment, sorted(parts)])
    return hashlib.sha256(text.encode()).hexdigest()[:16]


class SweepParent:
    def __init__(self, store: Store | None, run_id: str | None):
        self.store, self.run_id = store, run_id

    @classmethod
    def open(
        cls,
        config: DictConfig,
        key_parts: Sequence[str],
        name: str,
        kind: str,
        tags: dict[str, str] | None = None,
        params: dict[str, str] | None = None,
        key: str | None = None,
    ) -> SweepParent:
        store = open_store(config.tracking)
        if store is None:
            return cls(None, None)
        sweep_id = str(Path(config.hydra.sweep.dir).resolve())
        tags = {names.TAG_SWEEP_KIND: kind, names.TAG_SWEEP_ID: sweep_id, **(tags or {})}
        key = key or sweep_key(config.tracking.experiment, key_parts)
        run_id = _records().open_parent(store, key, name, tags, params or {})
        log.info(f"MLflow parent run {run_id} ({name})")
        return cls(store, run_id)

    def overrides(self) -> list[str]:
        """What each job's overrides add so that its run nests under this one."""
        return [f"tracking.parent_run_id={self.run_id}"] if self.run_id else []

    def log(self, metrics: dict[str, float], tags: dict[str, str] | None = None) -> None:
        """The counts (names.SWEEP_JOBS, ...) and other figures so far, at step = jobs ended; tags such as the best."""
        if self.store is not None:
            step = int(metrics.get(names.SWEEP_JOBS, 0))
            _records().update_parent(self.store, self.run_id, metrics, step, tags or {})

    def link(self) -> str:
        """A line pointing at the parent run's page; empty without tracking."""
        if self.store is None:
            return ""
        return f"\nParent run: {run_link(self.store.client.tracking_uri, self.store.experiment_id, self.run_id)}"

    def close(self, status: str, config_file: Path | None = None, note: str = "") -> None:
        if self.store is None:
            return
        try:
            _records().close_parent(self.store, self.run_id, status, config_file, note)
        except Exception as error:  # the sweep's own outcome matters more than its parent's status
            log.warning(f"Could not close the parent run {self.run_id}: {error}")
