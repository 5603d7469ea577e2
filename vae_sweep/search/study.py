"""A search's Optuna study: its storage, sampler and pruner, its name, its budget, and the trials whose worker died.

Workers share nothing but the storage. Each asks for its next trial under a lock, so that N workers never start more
trials than the budget; a trial whose worker is gone (kill -9, a lost node) is failed and its parameters enqueued
again, so that the next worker to ask resumes it from its checkpoint (its job has the same fingerprint).
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import time
import warnings
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import optuna
from filelock import FileLock
from omegaconf import DictConfig, OmegaConf
from optuna.distributions import distribution_to_json
from optuna.trial import FrozenTrial, TrialState

from vae_sweep import names
from vae_sweep.config import defines_result, flatten
from vae_sweep.errors import ConfigError, UserError
from vae_sweep.search.space import Dimension
from vae_sweep.tracking.resume import pid_alive

# User attributes of a trial (optuna-dashboard shows them): who runs it, and since when it has said nothing.
HOST, PID, HEARTBEAT = "worker_host", "worker_pid", "heartbeat"
RUN_ID = "mlflow_run_id"
ERROR = "error"
RETRY_OF = "retry_of"  # on a trial queued again after its worker died: the number of the trial it continues
REQUEUED = "requeued"  # on the trial it continues
TWIN_OF = "twin_of"  # on a trial whose parameters an earlier one was running: the number of the one it waited for
# A study's user attribute: the search settings that decide which trials it proposes and how it judges them, as the
# command that created it had them; another command on the same study must have the same (see check_settings).
SETTINGS = "search_settings"
STUDY_SETTINGS = ("sampler", "seed", "pruner", "warmup_epochs", "objective", "direction")
TWIN_POLL_S = 5.0  # how often a trial waiting for its twin looks whether the twin has ended
SQLITE_WAIT_S = 60  # workers write to one SQLite file: a write waits this long for another's to finish
# The config groups a trial's result depends on (folders and tracking are not among them).
RESULT_GROUPS = ("model", "data", "optimizer", "training", "eval")
REDUCTION_FACTOR = 3  # successive halving and Hyperband keep the best third of the trials at each rung

optuna.logging.set_verbosity(optuna.logging.WARNING)


def storage_label(url: str) -> str:
    """The URL without its password: what runs and logs may show."""
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return url.split("@")[-1]


def open_storage(url: str) -> optuna.storages.RDBStorage:
    engine = {"connect_args": {"timeout": SQLITE_WAIT_S}} if url.startswith("sqlite") else {}
    creating: AbstractContextManager = nullcontext()
    if url.startswith("sqlite:///"):
        database = Path(url.removeprefix("sqlite:///"))
        database.parent.mkdir(parents=True, exist_ok=True)
        # Two processes creating a new SQLite storage's tables at once break it, as they would MLflow's.
        creating = FileLock(f"{database}.lock")
    try:
        with creating:
            return optuna.storages.RDBStorage(url, engine_kwargs=engine)
    except Exception as error:
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise UserError(f"search.storage={storage_label(url)}: cannot open the Optuna storage: {first}") from None


class _GridSampler(optuna.samplers.GridSampler):
    """Optuna's grid sampler stops study.optimize() once every point has run, and raises outside it; with ask and
    tell there is no such loop to stop: the budget, at most the grid's size, ends the workers."""

    def after_trial(self, study, trial, state, values) -> None:
        pass


@dataclass
class Plan:
    """Everything a worker needs to open the study the sweeper set up; plain values, so that it travels to workers."""

    storage: str
    name: str
    objective: str
    direction: str
    sampler: str
    pruner: str
    seed: int
    parallel: int
    budget: int
    epochs: int
    warmup_epochs: int
    heartbeat_timeout_s: float
    lock_file: str
    grid: dict | None = None  # key -> values, for the grid sampler

    def sampler_for(self, worker: int, trials_before: int) -> optuna.samplers.BaseSampler:
        # Workers with one seed would propose the same first points, and so would a resumed study; each worker gets
        # its own seed, fixed by search.seed, its index and how many trials the study held when it started.
        text = f"{self.seed}:{worker}:{trials_before}"
        seed = int(hashlib.sha256(text.encode()).hexdigest()[:8], 16)
        if self.sampler == "random":
            return optuna.samplers.RandomSampler(seed=seed)
        if self.sampler == "cmaes":
            return optuna.samplers.CmaEsSampler(seed=seed, warn_independent_sampling=False)
        if self.sampler == "grid":
            # Its seed orders the grid, and a grid point is known by its place in that order: one seed for all.
            return _GridSampler(self.grid, seed=self.seed)
        # With trials in flight, TPE assumes the worst of them rather than proposing their points again.
        return optuna.samplers.TPESampler(seed=seed, constant_liar=self.parallel > 1)

    def pruner_made(self) -> optuna.pruners.BasePruner:
        return self.pruner_for(self.pruner, self.warmup_epochs, self.epochs)

    @staticmethod
    def pruner_for(
        name: str, warmup_epochs: int, epochs: int, reduction_factor: int = REDUCTION_FACTOR
    ) -> optuna.pruners.BasePruner:
        start = max(1, warmup_epochs)
        if name == "median":
            return optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=start - 1)
        if name == "successive_halving":
            return optuna.pruners.SuccessiveHalvingPruner(min_resource=start, reduction_factor=reduction_factor)
        if name == "hyperband":
            return optuna.pruners.HyperbandPruner(
                min_resource=start, max_resource=epochs, reduction_factor=reduction_factor
            )
        return optuna.pruners.NopPruner()

    def study(self, worker: int = 0) -> optuna.Study:
        storage = open_storage(self.storage)
        try:
            before = len(optuna.load_study(study_name=self.name, storage=storage).trials)
        except KeyError:
            before = 0
        study = optuna.create_study(
            storage=storage,
            study_name=self.name,
            direction=self.direction,
            sampler=self.sampler_for(worker, before),
            pruner=self.pruner_made(),
            load_if_exists=True,
        )
        check_settings(study, self.settings())
        if study.metric_names != [self.objective]:
            with warnings.catch_warnings(category=optuna.exceptions.ExperimentalWarning, action="ignore"):
                study.set_metric_names([self.objective])  # optuna-dashboard's name for the value, else "Objective 0"
        return study

    def settings(self) -> dict[str, str]:
        return {f"search.{key}": str(getattr(self, key)) for key in STUDY_SETTINGS}

    def lock(self) -> AbstractContextManager:
        if is_postgresql(self.storage):
            return storage_lock(self.storage, self.name)
        return FileLock(self.lock_file)


def judged(trial: optuna.Trial, epoch: int, value: float, warmup_epochs: int) -> bool:
    """Report an epoch's objective to the study; whether the pruner would stop the trial here (from the warm-up on)."""
    trial.report(value, epoch)
    return epoch >= warmup_epochs and trial.should_prune()


def is_postgresql(url: str) -> bool:
    from sqlalchemy.engine import make_url

    return make_url(url).get_backend_name() == "postgresql"


@contextmanager
def storage_lock(url: str, name: str) -> Iterator[None]:
    """The study's lock on its PostgreSQL server: every command on the study takes the same one, whatever its sweep
    folder. A transaction's advisory lock: the server frees it as the transaction ends, and when its holder dies."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.pool import NullPool

    engine = create_engine(url, poolclass=NullPool)
    try:
        with engine.begin() as connection:
            key = f"vae_sweep budget of {name}"
            connection.execute(text("SELECT pg_advisory_xact_lock(hashtext(:key))"), {"key": key})
            yield
    finally:
        engine.dispose()


def check_settings(study: optuna.Study, settings: dict[str, str]) -> None:
    """Record the settings on a new study; refuse a command whose settings differ from the ones it was made with:
    the study would go on with another sampler or judge, and a finished one would report its old best as the new."""
    made_with = study.user_attrs.get(SETTINGS)
    if made_with is None:
        study.set_user_attr(SETTINGS, settings)
        return
    changed = {key: value for key, value in made_with.items() if settings.get(key) != value}
    if changed:
        was = " ".join(f"{key}={value}" for key, value in changed.items())
        now = " ".join(f"{key}={settings.get(key)}" for key in changed)
        raise ConfigError(
            f"search.study={study.study_name} was made with {was}; this command has {now}. To continue it, pass "
            f"{was}; to start a new study, pass search.study=<a new name>."
        )


def dimension_identity(dimension: Dimension) -> list:
    """What a dimension means, whatever its spelling: range(2, 5) and range(2,5) are one space."""
    return [dimension.key, distribution_to_json(dimension.distribution), list(dimension.override_values)]


def study_name(config: DictConfig, dimensions: Sequence[Dimension]) -> str:
    """The experiment, the searched keys, and a hash of everything the trials' results depend on but the space's
    values, of the space and of the settings that propose and judge trials (STUDY_SETTINGS): the same command, or the
    same preset, continues the same study; another space, objective, sampler, seed or pruner starts one."""
    searched = {dimension.key for dimension in dimensions}
    # Folders and tracking are left out before resolving: the sweep's own config has no job folder yet.
    groups = {key: OmegaConf.to_container(config[key], resolve=True, enum_to_str=True) for key in RESULT_GROUPS}
    fixed = {k: v for k, v in flatten(groups).items() if defines_result(k) and k not in searched}
    search = OmegaConf.to_container(config.search, resolve=True, enum_to_str=True)
    settings = {key: search[key] for key in STUDY_SETTINGS}
    payload = [fixed, sorted(dimension_identity(d) for d in dimensions), settings]
    digest = hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:8]
    keys = "-".join(sorted(key.rsplit(".", 1)[-1] for key in searched))
    return f"{config.tracking.experiment}-{keys}-{digest}"


def lock_file(storage: str, sweep_dir: Path, name: str) -> str:
    """Beside a SQLite storage (every worker is on this machine); else in the sweep folder, which a cluster shares
    (a PostgreSQL storage is locked on its server instead: see storage_lock)."""
    if storage.startswith("sqlite:///"):
        return f"{storage.removeprefix('sqlite:///')}.{name}.lock"
    return str(sweep_dir / "search.lock")


def check_objective(config: DictConfig) -> None:
    """A validation metric needs a validation split to be logged."""
    objective = config.search.objective
    if objective.endswith("/" + names.VAL) and not config.data.validation:
        raise ConfigError(
            f"search.objective={objective} is measured on the validation split, and data.validation=0 holds none "
            "out: pass data.validation=10000 (the search presets do), or search.objective=loss/test to select on "
            "the test set (its winner's test loss is then optimistic)."
        )


def make_plan(config: DictConfig, dimensions: Sequence[Dimension], sweep_dir: Path) -> Plan:
    settings = config.search
    check_objective(config)
    name = settings.study or study_name(config, dimensions)
    grid = None
    budget = settings.trials
    if settings.sampler.value == "grid":
        grid = {dimension.key: dimension.grid_values() for dimension in dimensions}
        budget = min(budget, _grid_size(grid))
    if settings.pruner.value != "none" and config.training.epochs < 2:
        raise ConfigError(
            f"search.pruner={settings.pruner.value} stops trials between epochs; training.epochs="
            f"{config.training.epochs} leaves none: allowed with training.epochs >= 2, or search.pruner=none."
        )
    return Plan(
        storage=settings.storage,
        name=name,
        objective=settings.objective,
        direction=settings.direction.value,
        sampler=settings.sampler.value,
        pruner=settings.pruner.value,
        seed=settings.seed,
        parallel=settings.parallel,
        budget=budget,
        epochs=config.training.epochs,
        warmup_epochs=settings.warmup_epochs,
        heartbeat_timeout_s=config.training.heartbeat_timeout_s,
        lock_file=lock_file(settings.storage, sweep_dir, name),
        grid=grid,
    )


def _grid_size(grid: dict) -> int:
    size = 1
    for values in grid.values():
        size *= len(values)
    return size


# ---- the budget, and trials whose worker died -----------------------------------------------------------------------


def retried(trials: Sequence[FrozenTrial]) -> set[int]:
    """Numbers of the trials that another trial continues (queued again after their worker died or was stopped)."""
    return {t.number for t in trials if t.user_attrs.get(REQUEUED)}


def spent(trials: Sequence[FrozenTrial]) -> int:
    """Trials that count against the budget: all but those continued by another (waiting ones count: they will run)."""
    again = retried(trials)
    return sum(1 for t in trials if t.number not in again)


def is_dead(trial: FrozenTrial, timeout_s: float, now: float | None = None) -> bool:
    """A RUNNING trial nobody runs: its worker's process is gone (same host), or it has said nothing for too long."""
    attrs = trial.user_attrs
    if attrs.get(HOST) == platform.node() and str(attrs.get(PID, "")).isdigit():
        return not pid_alive(int(attrs[PID]))
    started = trial.datetime_start.timestamp() if trial.datetime_start else time.time()
    return (now or time.time()) - float(attrs.get(HEARTBEAT, started)) > timeout_s


def retry(study: optuna.Study, trial: FrozenTrial) -> None:
    """Fail a trial that did not end by itself and queue it again: its job resumes from its checkpoint.

    The copy keeps the trial's sampler bookkeeping (a grid sampler's grid point) along with its parameters, as
    Optuna's own retry callback does, so that a grid search does not count the point as visited.
    """
    storage = study._storage
    try:
        storage.set_trial_user_attr(trial._trial_id, REQUEUED, True)
        storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)
    except optuna.exceptions.UpdateFinishedTrialError:
        return  # another worker got there first
    again = optuna.trial.create_trial(
        state=TrialState.WAITING,
        params=trial.params,
        distributions=trial.distributions,
        user_attrs={RETRY_OF: trial.number},
        system_attrs=dict(trial.system_attrs),
    )
    study.add_trial(again)


def recover_dead(study: optuna.Study, timeout_s: float) -> list[int]:
    """Retry every RUNNING trial whose worker is gone; their numbers."""
    dead = [t for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)) if is_dead(t, timeout_s)]
    for trial in dead:
        retry(study, trial)
    return [trial.number for trial in dead]


def claim(study: optuna.Study, plan: Plan, distributions: dict) -> optuna.Trial | None:
    """The next trial for this worker, or None once the budget is spent. Under the plan's lock: N workers never
    start more than the budget, and a queued trial (a dead worker's) always runs."""
    with plan.lock():
        recover_dead(study, plan.heartbeat_timeout_s)
        trials = study.get_trials(deepcopy=False)
        waiting = any(t.state == TrialState.WAITING for t in trials)
        if not waiting and spent(trials) >= plan.budget:
            return None
        trial = study.ask(distributions)
        trial.set_user_attr(HOST, platform.node())
        trial.set_user_attr(PID, os.getpid())
        trial.set_user_attr(HEARTBEAT, time.time())
        return trial


def beat(study: optuna.Study, trial: optuna.Trial) -> None:
    """The trial's heartbeat, which tracking.heartbeat writes while its worker waits for a twin or runs its job."""
    study._storage.set_trial_user_attr(trial._trial_id, HEARTBEAT, time.time())


def running_twin(study: optuna.Study, trial: optuna.Trial, timeout_s: float) -> FrozenTrial | None:
    """The earliest live RUNNING trial before this one with the same parameters: its job is this trial's job.

    Only earlier ones: two twins claimed at once would otherwise each wait for the other."""
    for other in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if other.number < trial.number and other.params == trial.params and not is_dead(other, timeout_s):
            return other
    return None


def wait_for_twin(
    study: optuna.Study, trial: optuna.Trial, timeout_s: float, poll_s: float = TWIN_POLL_S
) -> FrozenTrial | None:
    """Wait while a twin of this trial runs (its job would be refused as busy), then the twin as it ended; None when
    there was none. A twin that dies is not waited for: this trial's job resumes its run from the checkpoint."""
    running = running_twin(study, trial, timeout_s)
    if running is None:
        return None
    trial.set_user_attr(TWIN_OF, running.number)
    while running is not None:
        twin = running
        time.sleep(min(poll_s, timeout_s / 4))
        running = running_twin(study, trial, timeout_s)
    return study._storage.get_trial(twin._trial_id)


def prune_like(study: optuna.Study, trial: optuna.Trial, twin: FrozenTrial) -> None:
    """End a trial as its pruned twin ended, with the twin's epochs and run: its job would train the point again (a
    pruned run stands for no finished config)."""
    for epoch, value in sorted(twin.intermediate_values.items()):
        trial.report(value, epoch)
    if RUN_ID in twin.user_attrs:
        trial.set_user_attr(RUN_ID, twin.user_attrs[RUN_ID])
    study.tell(trial, state=TrialState.PRUNED)


# ---- how the study stands ----------------------------------------------------------------------------------------


@dataclass
class Standing:
    complete: int
    pruned: int
    failed: int  # failed trials that nothing continues
    best: FrozenTrial | None

    @property
    def ended(self) -> int:
        return self.complete + self.pruned + self.failed


def few_complete(now: Standing, pruner: str) -> str:
    """What a summary line adds when the pruner left fewer than two complete trials: its best compares with nothing."""
    if pruner == "none" or now.complete >= 2 or now.pruned == 0:
        return ""
    return (
        f" Only {now.complete} trial(s) trained to the end: the pruner stopped {now.pruned}, so the best was compared "
        "with no other complete trial; the early epochs may have misled it (README: Which pruner)."
    )


def standing(study: optuna.Study) -> Standing:
    trials = study.get_trials(deepcopy=False)
    again = retried(trials)
    count = {state: sum(1 for t in trials if t.state == state and t.number not in again) for state in TrialState}
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    best = None
    if complete:
        best = study.best_trial
    return Standing(count[TrialState.COMPLETE], count[TrialState.PRUNED], count[TrialState.FAIL], best)


def parent_figures(study: optuna.Study, dimensions: Sequence[Dimension]) -> tuple[dict[str, float], dict[str, str]]:
    """The parent run's metrics and tags for how the study stands."""
    now = standing(study)
    metrics = {names.SWEEP_JOBS: now.ended, names.SWEEP_FAILED: now.failed, names.SWEEP_PRUNED: now.pruned}
    tags: dict[str, str] = {}
    if now.best is not None:
        metrics[names.SEARCH_BEST_VALUE] = now.best.value
        tags[names.TAG_BEST_TRIAL] = str(now.best.number)
        tags[names.TAG_BEST_RUN] = str(now.best.user_attrs.get(RUN_ID, ""))
        for dimension in dimensions:
            if dimension.key in now.best.params:
                value = dimension.override(now.best.params[dimension.key]).partition("=")[2]
                tags[names.TAG_BEST_PARAM + dimension.key] = value
    return metrics, tags
