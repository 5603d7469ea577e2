"""`hydra/sweeper=search`: an Optuna study instead of a grid, with pruning and asynchronous parallel trials.

Hydra's Optuna sweeper runs trials in blocking batches and cannot prune. Here the sweeper launches `search.parallel`
long-lived workers through the configured launcher (joblib on one machine, submitit on a cluster), and each worker
loops ask -> train -> tell against the shared storage, the pattern Optuna documents for distributed optimisation: when
a trial ends the next one starts at once, whatever the others are doing. Every trial is an ordinary job (its own
folder, fingerprint, checkpoint and MLflow run), nested under the search's parent run; after every epoch it reports
the objective to its trial, and stops there when the pruner says so.
"""

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, List, Sequence

from hydra.core.config_store import ConfigStore
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.utils import JobReturn, JobStatus, run_job
from omegaconf import DictConfig, open_dict

from hydra_plugins.vae_sweep_sweeper.parent import SweepParent
from hydra_plugins.vae_sweep_sweeper.sweeper import VaeSweeper, VaeSweeperConf
from vae_sweep import names
from vae_sweep.core.signals import JobStopped
from vae_sweep.errors import ConfigError, UserError
from vae_sweep.jobs import trial as trial_hooks
from vae_sweep.tracking.heartbeat import beating

log = logging.getLogger(__name__)


@dataclass
class SearchSweeperConf(VaeSweeperConf):
    _target_: str = "hydra_plugins.vae_sweep_sweeper.search.SearchSweeper"


ConfigStore.instance().store(group="hydra/sweeper", name="search", node=SearchSweeperConf, provider="vae_sweep")


class SearchWorker:
    """The task function each launched worker runs in place of the training job: trials until the budget is spent.

    Trials are composed and run as the launcher would run a job (Hydra's run_job), with the trial's parameters as
    overrides and its number as the job number, so that each has its own folder and run.
    """

    def __init__(self, hydra_context, master: DictConfig, task_function, overrides, dimensions, plan, parent_run):
        self.hydra_context, self.master, self.task_function = hydra_context, master, task_function
        self.overrides, self.dimensions, self.plan, self.parent_run = list(overrides), dimensions, plan, parent_run

    def __call__(self, worker_cfg: DictConfig) -> list[int]:
        from vae_sweep.search import study as studies
        from vae_sweep.tracking.store import open_store

        study = self.plan.study(worker=int(HydraConfig.get().job.num))
        parent = SweepParent(open_store(self.master.tracking), self.parent_run)
        distributions = {dimension.key: dimension.distribution for dimension in self.dimensions}
        ran = []
        while (trial := studies.claim(study, self.plan, distributions)) is not None:
            ran.append(trial.number)
            stopped = self.run_trial(study, trial)
            parent.log(*studies.parent_figures(study, self.dimensions))
            if stopped:
                raise JobStopped(f"trial {trial.number} stopped: run the same command again to resume it")
        return ran

    def trial_config(self, number: int, params: dict) -> DictConfig:
        overrides = [*self.overrides, *(dimension.override(params[dimension.key]) for dimension in self.dimensions)]
        config = self.hydra_context.config_loader.load_sweep_config(self.master, overrides)
        with open_dict(config):
            config.hydra.job.id = f"{config.hydra.job.name}_{number}"
            config.hydra.job.num = number
        return config

    def trial_name(self, number: int, params: dict) -> str:
        """'trial 5: latent=13 lr=0.0008355': what the trial tried, as the runs table shows it."""
        values = []
        for dimension in self.dimensions:
            value = params[dimension.key]
            shown = f"{value:.4g}" if isinstance(value, float) else dimension.override(value).partition("=")[2]
            values.append(f"{dimension.key.rsplit('.', 1)[-1]}={shown}")
        return f"trial {number}: {' '.join(values)}"

    def run_trial(self, study, trial) -> bool:
        """Train one trial and tell the study how it ended; True when a stop signal ended it (it is queued again).

        A trial whose parameters an earlier trial is running waits for it: its job would be refused as busy. Then a
        finished twin's run is reused by the job, and a pruned twin's ending is copied: nothing trains twice."""
        import optuna

        from vae_sweep.search import study as studies

        timeout_s = self.plan.heartbeat_timeout_s
        try:
            # The trial's own heartbeat (its job beats on its run): its evaluation and a wait log no epochs.
            with beating(lambda: studies.beat(study, trial), timeout_s):
                twin = studies.wait_for_twin(study, trial, timeout_s)
                pruned_twin = twin is not None and twin.state == optuna.trial.TrialState.PRUNED
                if not pruned_twin:
                    hooks, result = self.run_job(trial)
        except KeyboardInterrupt:  # in the sweep's own process: the stop goes on up once the trial is queued again
            studies.retry(study, study._storage.get_trial(trial._trial_id))
            raise
        if pruned_twin:
            studies.prune_like(study, trial, twin)
            return False
        return self.tell(study, trial, hooks, result)

    def run_job(self, trial) -> tuple[trial_hooks.Trial, JobReturn]:
        """The trial's job, run as the launcher would run it; its hooks, which learnt how it ended, and its return."""
        config = self.trial_config(trial.number, trial.params)
        hooks = self.hooks_for(trial, config.training.epochs)
        HydraConfig.instance().set_config(config)
        log.info(f"Trial {trial.number}: {' '.join(d.override(trial.params[d.key]) for d in self.dimensions)}")
        with trial_hooks.running(hooks):
            result = run_job(
                hydra_context=self.hydra_context,
                task_function=self.task_function,
                config=config,
                job_dir_key="hydra.sweep.dir",
                job_subdir_key="hydra.sweep.subdir",
            )
        return hooks, result

    def hooks_for(self, trial, epochs: int) -> trial_hooks.Trial:
        """What the trial's job reports to the study, and how it asks whether to stop."""
        from vae_sweep.search import study as studies

        settings = self.master.search

        def report(epoch: int, value: float) -> bool:
            return studies.judged(trial, epoch, value, self.plan.warmup_epochs)

        return trial_hooks.Trial(
            name=self.trial_name(trial.number, trial.params),
            tags={names.TAG_STUDY: self.plan.name, names.TAG_TRIAL: str(trial.number)},
            objective=settings.objective,
            report=report,
            evaluate_pruned=settings.evaluate_pruned,
            epochs=epochs,
        )

    @staticmethod
    def tell(study, trial, hooks: trial_hooks.Trial, result: JobReturn) -> bool:
        """The study learns how the trial's job ended; True when a stop signal ended it (it is queued again)."""
        import optuna

        from vae_sweep.search import study as studies

        if hooks.run_id:
            trial.set_user_attr(studies.RUN_ID, hooks.run_id)
        if result.status == JobStatus.COMPLETED and hooks.pruned_epoch is not None:
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
        elif result.status == JobStatus.COMPLETED and hooks.value is not None:
            study.tell(trial, hooks.value)
        elif isinstance(result._return_value, JobStopped):
            studies.retry(study, study._storage.get_trial(trial._trial_id))
            return True
        else:
            error = result._return_value if result.status != JobStatus.COMPLETED else "no objective value"
            trial.set_user_attr(studies.ERROR, str(error)[:500])
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
        return False


class SearchSweeper(VaeSweeper):
    def sweep(self, arguments: List[str]) -> Any:
        from vae_sweep.search import study as studies
        from vae_sweep.search.space import SPACE, read_space

        parser = OverridesParser.create(config_loader=self.hydra_context.config_loader)
        parsed = parser.parse_overrides([*self._parse_config(), *arguments])
        grid = [o.input_line for o in parsed if o.is_sweep_override() and not o.key_or_group.startswith(SPACE)]
        if grid:
            raise ConfigError(
                f"A search takes its dimensions from search.space.<key>, not from a grid: {' '.join(grid)}; write "
                "e.g. 'search.space.model.latent=choice(2,100,200)', or drop hydra/sweeper=search for a grid."
            )
        fixed = [o.input_line for o in parsed if not o.key_or_group.startswith(SPACE)]
        dimensions = read_space(self.config, parsed, parser)

        sweep_dir = self.make_sweep_dir()
        # Every dimension's ends (and every choice) composed and range-checked before any trial starts.
        self.validate_batch_is_legal([[*fixed, *end] for dimension in dimensions for end in self.extremes(dimension)])
        HydraConfig.instance().set_config(self.config)  # the study's name resolves the config's interpolations
        plan = studies.make_plan(self.config, dimensions, sweep_dir)
        study = plan.study()
        self.prepare_tracking_store()
        before = studies.standing(study)
        parent = SweepParent.open(
            self.config, [], f"search {plan.name}", names.SWEEP_SEARCH, key=plan.name, tags=self.parent_tags(plan),
            params={
                **{names.SEARCH_SPACE_PARAM + d.key: d.text for d in dimensions},
                "search.sampler": plan.sampler, "search.pruner": plan.pruner, "search.trials": str(plan.budget),
            },
        )  # fmt: skip
        log.info(
            f"Study {plan.name!r} in {studies.storage_label(plan.storage)}: {before.ended} of {plan.budget} trials"
            f" ended before this run; {plan.parallel} at a time. optuna-dashboard {studies.storage_label(plan.storage)}"
        )
        placement = self.parallel_launcher(plan.parallel)
        worker = SearchWorker(
            self.hydra_context, self.config, self.launcher.task_function, [*fixed, *placement, *parent.overrides()],
            dimensions, plan, parent.run_id,
        )  # fmt: skip
        workers = [[*fixed, *placement, f"hydra.sweep.subdir=worker-{index}"] for index in range(plan.parallel)]
        try:
            results = self.launch_workers(worker, workers)
        except BaseException:
            parent.log(*studies.parent_figures(study, dimensions))
            parent.close("KILLED")
            raise
        parent.log(*studies.parent_figures(study, dimensions))
        return self.finish(study, plan, results, sweep_dir, parent)

    @staticmethod
    def extremes(dimension) -> list[list[str]]:
        """A sweep point per end of an interval or range and per choice: every value a check can refuse is one of them
        (range checks are bounds, so the inside of an interval passes when both its ends do)."""
        from optuna.distributions import CategoricalDistribution

        distribution = dimension.distribution
        if isinstance(distribution, CategoricalDistribution):
            return [[dimension.override(choice)] for choice in distribution.choices]
        return [[dimension.override(distribution.low)], [dimension.override(distribution.high)]]

    def parent_tags(self, plan) -> dict[str, str]:
        from vae_sweep.search.study import storage_label

        return {
            names.TAG_STUDY: plan.name,
            names.TAG_STORAGE: storage_label(plan.storage),
            names.TAG_OBJECTIVE: self.config.search.objective,
            names.TAG_DIRECTION: plan.direction,
        }

    def parallel_launcher(self, parallel: int) -> list[str]:
        """Overrides that give each trial its share of the cores; with parallel > 1 and Hydra's basic launcher (one
        job at a time, in this process), the workers go to joblib instead."""
        from hydra._internal.core_plugins.basic_launcher import BasicLauncher

        if isinstance(self.launcher, BasicLauncher):
            if parallel == 1:
                return []
            from hydra_plugins.hydra_joblib_launcher.joblib_launcher import JoblibLauncher

            launcher = JoblibLauncher(n_jobs=parallel)
            launcher.setup(
                hydra_context=self.hydra_context, task_function=self.launcher.task_function, config=self.config
            )
            self.launcher = launcher
            return ["hydra/launcher=joblib", f"hydra.launcher.n_jobs={parallel}"]
        if hasattr(self.launcher, "joblib"):
            self.launcher.joblib["n_jobs"] = parallel
            return [f"hydra.launcher.n_jobs={parallel}"]
        return []

    def launch_workers(self, worker: SearchWorker, workers: Sequence[Sequence[str]]) -> Sequence[JobReturn]:
        task_function = self.launcher.task_function
        self.launcher.task_function = worker
        try:
            return self.launch(workers, 0)
        except Exception as error:
            if type(error).__name__ != "TerminatedWorkerError":
                raise
            raise UserError(
                f"A search worker was killed ({str(error).splitlines()[0]}); run the same command again: "
                "finished trials are kept and the killed trial resumes from its checkpoint."
            ) from None
        finally:
            self.launcher.task_function = task_function

    def finish(self, study, plan, workers: Sequence[JobReturn], sweep_dir: Path, parent: SweepParent) -> Any:
        from vae_sweep.search import study as studies

        now = studies.standing(study)
        best = now.best
        summary = (
            f"Study {plan.name!r}: {now.complete} complete, {now.pruned} pruned, {now.failed} failed of "
            f"{plan.budget} trials."
        )
        if best is not None:
            summary += (
                f" Best: trial {best.number}, {self.config.search.objective} {best.value:.4g}"
                f" (MLflow run {best.user_attrs.get(studies.RUN_ID, '?')})."
            )
        summary += studies.few_complete(now, plan.pruner)
        broken = [job for job in workers if job.status != JobStatus.COMPLETED]
        ran = {number for job in workers if job.status == JobStatus.COMPLETED for number in job._return_value}
        # Trials that failed in an earlier run of the command were reported then; they count against the budget.
        failed_trials = [
            t for t in study.get_trials(deepcopy=False) if t.state.name == "FAIL" and t.number in ran
            and not t.user_attrs.get(studies.REQUEUED)
        ]  # fmt: skip
        parent.close("FAILED" if broken or failed_trials else "FINISHED", sweep_dir / names.SWEEP_CONFIG, summary)
        if broken:
            lines = "\n".join(f"  worker {job.hydra_cfg.hydra.job.num}: {job._return_value}" for job in broken)
            raise UserError(f"{summary}\n{len(broken)} search worker(s) failed:\n{lines}")
        if failed_trials:
            lines = "\n".join(f"  trial {t.number}: {t.user_attrs.get(studies.ERROR, '?')}" for t in failed_trials)
            raise UserError(f"{summary}\n{len(failed_trials)} trial(s) failed:\n{lines}")
        log.info(summary + self.runs_link(workers) + parent.link())
        return [workers]
