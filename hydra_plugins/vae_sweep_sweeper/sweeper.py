"""Hydra's basic sweeper, with the changes a long sweep needs.

- Every sweep point is composed *and range-checked* before the first job starts, so a typo in the last
  value of a grid fails in a second instead of after hours of training.
- The MLflow store and experiment are created once, before parallel jobs would race to create them; a server that
  is unreachable or refuses the user's credentials stops the sweep there, in one error, rather than in every job.
- A failed job does not stop the sweep: the remaining jobs run, and the sweep ends with a summary of the
  failed jobs and a non-zero exit. A job submitit lost (killed outright) counts as failed too (killed_jobs.py).
- A stop signal to the sweep's process under joblib stops every worker's job cleanly first (worker_stops.py).
- The sweep has one MLflow parent run, its jobs nested under it (parent.py); the same command again reuses it.
"""

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.config_store import ConfigStore
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.utils import JobReturn, JobStatus
from omegaconf import OmegaConf

from hydra_plugins.vae_sweep_sweeper.killed_jobs import killed_job, killed_jobs_as_failures
from hydra_plugins.vae_sweep_sweeper.parent import SweepParent
from hydra_plugins.vae_sweep_sweeper.worker_stops import stops_reach_workers
from vae_sweep import names
from vae_sweep.config import validate
from vae_sweep.errors import ConfigError, UserError
from vae_sweep.tracking.store import connect

log = logging.getLogger(__name__)


@dataclass
class VaeSweeperConf:
    _target_: str = "hydra_plugins.vae_sweep_sweeper.sweeper.VaeSweeper"
    max_batch_size: Optional[int] = None
    params: Optional[Dict[str, str]] = None


ConfigStore.instance().store(group="hydra/sweeper", name="vae_sweep", node=VaeSweeperConf, provider="vae_sweep")


def _describe(job: JobReturn) -> str:
    overrides = " ".join(job.overrides or []) or "(no overrides)"
    return f"job {job.hydra_cfg.hydra.job.num if job.hydra_cfg else '?'} [{overrides}]: {job._return_value}"


class VaeSweeper(BasicSweeper):
    def validate_batch_is_legal(self, batch: Sequence[Sequence[str]]) -> None:
        problems = []
        for overrides in batch:
            cfg = self.hydra_context.config_loader.load_sweep_config(
                master_config=self.config, sweep_overrides=list(overrides)
            )
            try:
                validate(cfg)
                self.check_no_nested_sweep(cfg)
            except ConfigError as error:
                problems.append(f"{error} (sweep point: {' '.join(overrides)})")
        if problems:
            raise ConfigError("\n".join(problems))

    def check_no_nested_sweep(self, point: Any) -> None:
        """A preset that sweeps (e.g. experiment=burda_iwae) chosen per sweep point would run its defaults alone.

        Hydra expands a config's hydra.sweeper.params only when the config is chosen for the whole sweep, so
        `-m experiment=burda_vae,burda_iwae` would silently train burda_iwae without its five rows.
        """
        own, applied = point.hydra.sweeper.params or {}, self.config.hydra.sweeper.params or {}
        nested = " ".join(f"{key}={value}" for key, value in own.items() if applied.get(key) != value)
        if nested:
            before = self.config.hydra.runtime.choices
            changed = {group: name for group, name in point.hydra.runtime.choices.items() if before.get(group) != name}
            choice = " ".join(f"{group}={name}" for group, name in changed.items() if not group.startswith("hydra/"))
            raise ConfigError(
                f"{choice or 'this sweep point'} is itself a sweep (hydra.sweeper.params: {nested}), which Hydra "
                "expands only when it is chosen for the whole sweep, not per sweep point, so it would train its "
                f"defaults alone; run it as a sweep of its own: python -m vae_sweep -m {choice or '...'}"
            )

    def prepare_tracking_store(self) -> None:
        # Not a Hydra callback: Hydra turns a callback's exception into a warning and starts the jobs anyway.
        HydraConfig.instance().set_config(self.config)  # the tracking URI interpolates Hydra's launch directory
        tracking = self.config.tracking
        if tracking.enabled:
            connect(tracking.uri, tracking.experiment, tracking.artifact_root)
            log.info(f"MLflow experiment {tracking.experiment!r} ready at {tracking.uri}")

    def make_sweep_dir(self) -> Path:
        """The sweep's folder, holding the sweep's own config as Hydra's multirun.yaml would."""
        sweep_dir = Path(self.config.hydra.sweep.dir)
        sweep_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(self.config, sweep_dir / names.SWEEP_CONFIG)
        return sweep_dir

    def killed_job(self, overrides: Sequence[str], job_num: int, error: Exception) -> JobReturn:
        config = self.hydra_context.config_loader.load_sweep_config(self.config, list(overrides))
        return killed_job(config, overrides, job_num, error)

    def sweep(self, arguments: List[str]) -> Any:
        params = self._parse_config()
        params.extend(arguments)
        parser = OverridesParser.create(config_loader=self.hydra_context.config_loader)
        parsed = parser.parse_overrides(params)
        self.overrides = self.split_arguments(parsed, self.max_batch_size)
        # Named by what it sweeps over: "sweep model.latent=2,100,200"; the key covers every override.
        swept = [override.input_line for override in parsed if override.is_sweep_override()] or params

        sweep_dir = self.make_sweep_dir()

        # Validate every batch before any job runs, not batch by batch.
        for batch in self.overrides:
            self.validate_batch_is_legal(batch)
        self.prepare_tracking_store()
        parent = SweepParent.open(self.config, key_parts=params, name=f"sweep {' '.join(swept)}", kind=names.SWEEP_GRID)

        returns: List[Sequence[JobReturn]] = []
        initial_job_idx = failed = 0
        try:
            while not self.is_done():
                batch = [[*overrides, *parent.overrides()] for overrides in self.get_job_batch()]
                results = self.launch(batch, initial_job_idx)
                initial_job_idx += len(batch)
                returns.append(results)
                failed += sum(job.status != JobStatus.COMPLETED for job in results)
                parent.log({names.SWEEP_JOBS: initial_job_idx, names.SWEEP_FAILED: failed})
        except BaseException:
            parent.close("KILLED")
            raise
        self.summarise([job for results in returns for job in results], sweep_dir, parent)
        return returns

    def launch(self, batch: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        with killed_jobs_as_failures(self.launcher, self.killed_job), stops_reach_workers(self.launcher):
            return self.launcher.launch(batch, initial_job_idx=initial_job_idx)

    def summarise(self, jobs: Sequence[JobReturn], sweep_dir: Path, parent: SweepParent, what: str = "") -> None:
        """Log the outcome, close the parent run; a failed job makes the sweep's exit non-zero."""
        failed = [job for job in jobs if job.status != JobStatus.COMPLETED]
        link = (self.runs_link(jobs) if jobs else "") + parent.link()
        parent.close("FAILED" if failed else "FINISHED", sweep_dir / names.SWEEP_CONFIG)
        if failed:
            lines = "\n".join("  " + _describe(job) for job in failed)
            raise UserError(f"{len(failed)} of {len(jobs)} jobs failed (sweep {sweep_dir}):\n{lines}{link}")
        log.info(f"All {len(jobs)} jobs finished (sweep {sweep_dir}).{what}{link}")

    def runs_link(self, jobs: Sequence[JobReturn]) -> str:
        """A line pointing at the sweep's runs in the MLflow UI; empty without tracking or a reachable store."""
        from mlflow.exceptions import MlflowException  # as killed_jobs: Hydra imports this plugin for every command

        from vae_sweep.tracking.store import runs_link

        config = self.hydra_context.config_loader.load_sweep_config(self.config, list(jobs[0].overrides or []))
        try:
            link = runs_link(config.tracking)
        except (UserError, MlflowException):  # the summary matters more than the link
            return ""
        return f"\nMLflow runs: {link}" if link else ""
