"""One sweep point: identity -> data -> model -> training with checkpoints -> outputs, inside its tracked run."""

from __future__ import annotations

import copy
import json
import logging
import traceback
from dataclasses import dataclass
from pathlib import Path

import torch
import yaml
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf, open_dict

from vae_sweep import names
from vae_sweep.config import defines_result, flatten, to_container, validate
from vae_sweep.core import signals
from vae_sweep.core.data import RAW_FILES, SHAPES, Data, Split, data_md5s, load_own, prepare_data, raw_folder
from vae_sweep.core.models import VAEModel, build_model, check_model
from vae_sweep.core.optim import build_optimizer, lr_schedule
from vae_sweep.core.sources import Loaded
from vae_sweep.core.train import FitSettings, Hooks, Start, fit
from vae_sweep.errors import UserError
from vae_sweep.jobs import checkpoint, trial
from vae_sweep.jobs.frames import EpochFrames
from vae_sweep.jobs.identity import job_identity
from vae_sweep.jobs.outputs import JobOutputs, classifier_to_train, write_outputs
from vae_sweep.jobs.runtime import job_threads, resolve_device, set_cpu_threads, skip_the_final_collection
from vae_sweep.tracking.heartbeat import beating
from vae_sweep.tracking.resume import Decision, decide, fingerprint, liveness_tag, retire
from vae_sweep.tracking.runs import DataSplit, Tracker, tracked_run
from vae_sweep.tracking.store import Store, open_store

log = logging.getLogger(__name__)


class ContinuingSink:
    """Reports only epochs the run does not hold yet: after a resume, re-trained epochs were already reported
    (with identical numbers, since training is deterministic), and epochs in the checkpoint may not have been.

    Frames are drawn only for epochs trained now: the model of an epoch restored from a checkpoint is gone."""

    def __init__(self, tracker: Tracker, history: list[dict[str, float]], frames: EpochFrames):
        self.tracker, self.frames = tracker, frames
        self.reported = tracker.logged_epochs()
        for row in history[self.reported :]:
            self.report(int(row["epoch"]), {key: value for key, value in row.items() if key != "epoch"})

    def report(self, epoch: int, metrics: dict[str, float]) -> bool:
        if epoch <= self.reported:
            return False
        self.tracker.log_epoch(epoch, metrics)
        self.reported = epoch
        return True

    def log_epoch(self, epoch: int, metrics: dict[str, float]) -> None:
        if self.report(epoch, metrics):
            self.frames(epoch)


class Checkpointer:
    """fit()'s end-of-epoch hook: a resumable state every training.checkpoint_every epochs and at the last one,
    and the latest epoch's state kept in memory for an interruption to save."""

    def __init__(self, model, optimizer, generator: torch.Generator, training, path: Path, kl_history: list):
        self.model, self.optimizer, self.generator, self.path = model, optimizer, generator, path
        self.kl_history = kl_history
        self.every, self.epochs = training.checkpoint_every, training.epochs
        self.unsaved: dict | None = None

    def __call__(self, history: list[dict[str, float]]) -> None:
        state = checkpoint.training_state(self.model, self.optimizer, self.generator, history, self.kl_history)
        if len(history) % self.every == 0 or len(history) == self.epochs:
            checkpoint.save_state(state, self.path)
            self.unsaved = None
        else:
            self.unsaved = copy.deepcopy(state)  # the live tensors move on; an interruption saves this epoch's values

    def save_unsaved(self) -> None:
        if self.unsaved is not None:
            checkpoint.save_state(self.unsaved, self.path)


def previous_run(store: Store | None, key: str, training) -> Decision:
    if store is None or training.resume.value == "never":
        return Decision("new")
    return decide(store.client, store.experiment_id, key, training.heartbeat_timeout_s)


def resumable_run_id(decision: Decision, checkpoints: Path) -> str | None:
    """The run to continue: an interrupted one whose checkpoint is still there (else a fresh run keeps the old
    one's history unmixed)."""
    if decision.action != "resume" or not (checkpoints / f"{decision.run.info.run_id}.pt").exists():
        return None
    return decision.run.info.run_id


def data_splits(data_cfg, md5s: dict[str, str], train: Split, test: Split, own: Loaded | None) -> list[DataSplit]:
    """The run's inputs for MLflow's dataset lineage, from the raw files' MD5s the job records anyway."""
    sizes = {"train": len(train), "test": len(test)}
    if own is not None:
        return [DataSplit(own.name, split, own.split_md5s[split], own.location, sizes[split]) for split in sizes]
    folder = raw_folder(data_cfg.name.value, data_cfg.root)
    return [
        DataSplit(data_cfg.name.value, split, {f: md5s[f] for f in files if f in md5s}, folder, sizes[split])
        for split, files in RAW_FILES.items()
    ]


def end_trial(search_trial: trial.Trial, cfg: DictConfig, tracker: Tracker) -> None:
    """Say on the run how its trial ended; a pruned one skips the costly evaluation unless the search asks for it."""
    search_trial.run_id = getattr(tracker, "run_id", None)
    pruned = search_trial.pruned_epoch is not None
    complete, pruned_state, _ = names.STUDY_STATES
    tags = {names.TAG_TRIAL_STATE: pruned_state if pruned else complete}
    if pruned:
        tags[names.TAG_PRUNED_EPOCH] = str(search_trial.pruned_epoch)
        if not search_trial.evaluate_pruned:
            with open_dict(cfg):
                cfg.eval.enabled = False
    tracker.set_tags(tags)


@dataclass
class Job:
    """One job's identity and place: its config (resolved too), folder, run name, tags and fingerprint, and a user's
    own images (None for the MNIST datasets), loaded already."""

    cfg: DictConfig
    config: dict
    folder: Path
    name: str
    tags: dict[str, str]
    key: str
    search_trial: trial.Trial | None
    own: Loaded | None = None

    @property
    def data_digest(self) -> str | None:
        return self.own.digest if self.own is not None else None


def identify(cfg: DictConfig) -> Job:
    """Validate the config, write it to the job folder, and name the job (a search's trial names its own)."""
    validate(cfg)
    folder = Path(cfg.paths.output_dir)
    folder.mkdir(parents=True, exist_ok=True)
    config = to_container(cfg)
    (folder / names.CONFIG_RESOLVED).write_text(yaml.safe_dump(config, sort_keys=False))
    name, tags = job_identity(cfg)
    # Before any run exists: a bad folder or file fails here, and its digest tells its runs from other data's.
    own = load_own(cfg.data)
    check_model(cfg.model, own.shape if own else SHAPES[cfg.data.name.value])
    key = tags[names.TAG_FINGERPRINT] = fingerprint(config, own.digest if own else None)
    search_trial = trial.current()
    if search_trial is not None:
        name = search_trial.name
        tags.update(search_trial.tags)
    return Job(cfg, config, folder, name, tags, key, search_trial, own)


def skipped(job: Job, decision: Decision, store: Store | None) -> dict[str, float]:
    """The metrics of the FINISHED run with this config, which the job does not train again."""
    log.info(f"Skipping {job.name}: run {decision.run.info.run_id} already FINISHED with this config.")
    if job.cfg.tracking.parent_run_id:
        from vae_sweep.tracking.sweeps import record_reused  # MLflow's entities: only a tracked job gets here

        record_reused(store, job.cfg.tracking.parent_run_id, job.tags[names.TAG_SWEEP_JOB], decision.run.info.run_id)
    log.info(f"MLflow runs: {store.runs_link()}")
    metrics = names.current_metrics(decision.run.data.metrics)
    if job.search_trial is not None:
        job.search_trial.value = metrics.get(job.search_trial.objective)
        job.search_trial.run_id = decision.run.info.run_id
    return metrics


def busy_error(decision: Decision) -> UserError:
    other = decision.run
    return UserError(
        f"Run {other.info.run_id} with this config is still running (pid {liveness_tag(other, names.TAG_PID)}"
        f" on {liveness_tag(other, names.TAG_HOST)}); wait for it, or pass training.resume=never for a new run."
    )


def load_data(job: Job, tracker: Tracker, device: torch.device) -> Data:
    """The job's splits on its device, their files' MD5s and lineage on the run."""
    cfg, tags = job.cfg, job.tags
    torch.manual_seed(cfg.training.seed)
    data = prepare_data(cfg.data, device, cfg.training.seed, job.own)
    if classifier_to_train(cfg, data, job.data_digest):
        # Its standardization needs the training pixels' statistics, from a float copy of them (~190 MB on the
        # CPU): taken now, when the job holds the least memory, rather than at the end of the run.
        data.classifier_train.pixel_statistics()
    md5s = data_md5s(cfg.data, job.own)
    tags.update({f"{names.TAG_DATA_MD5}{file}": md5 for file, md5 in md5s.items()})
    tracker.set_tags(tags)
    tracker.log_datasets(data_splits(cfg.data, md5s, data.train, data.test, job.own))
    (job.folder / names.PROVENANCE).write_text(json.dumps(tags, indent=1))
    return data


def model_summary(model_cfg) -> str:
    """'mlp [512, 256] -> latent 2, elbo, normal prior': the family's own keys, then what every family has."""
    common = {"name", "latent", "objective", "samples", "prior", "prior_components"}
    shown = {key: list(v) if OmegaConf.is_list(v) else getattr(v, "value", v) for key, v in model_cfg.items()}
    own = ", ".join(f"{key} {value}" for key, value in shown.items() if key not in common)
    objective, prior = shown["objective"], shown["prior"]  # enums, or strings in a reproduced run's plain config
    objective += f" k={model_cfg.samples}" if model_cfg.samples > 1 else ""
    prior += f" K={model_cfg.prior_components}" if prior == "vamp" else ""
    return f"{model_cfg.name} ({own}) -> latent {model_cfg.latent}, {objective}, {prior} prior"


def train(job: Job, tracker, data: Data, model: VAEModel, state_path: Path, kl_history: list) -> list[dict]:
    """Training with checkpoints, from the checkpoint's state when resuming; a search's trial learns each epoch."""
    cfg, search_trial = job.cfg, job.search_trial
    optimizer = build_optimizer(model, cfg.optimizer)
    start = Start(torch.Generator().manual_seed(cfg.training.seed))
    state = checkpoint.load_state(state_path) if cfg.training.resume.value == "auto" else None
    if state:
        start.history = checkpoint.restore_training_state(state, model, optimizer, start.generator)
        kl_history += checkpoint.restored_kl_history(state)
    held_out = f" / {len(data.val)} validation images held out of training" if data.val is not None else ""
    log.info(
        f"{job.own.name if job.own else cfg.data.name.value}: {len(data.train)} train / {len(data.test)} test images"
        f"{held_out} of {data.shape} on {data.test.images.device}; model {model_summary(cfg.model)}"
        + (f"; resuming after epoch {len(start.history)}" if start.history else "")
    )
    if search_trial is not None:
        # A resumed trial is a new trial in the study: it learns the epochs the checkpoint holds first.
        for row in start.history:
            search_trial.report(int(row["epoch"]), row[search_trial.objective])
    saver = Checkpointer(model, optimizer, start.generator, cfg.training, state_path, kl_history)
    frames = EpochFrames(model, data.test, tracker, cfg.tracking.image_every, cfg.training.epochs)
    hooks = Hooks(
        ContinuingSink(tracker, start.history, frames), saver,
        lambda epoch, usage: kl_history.append(usage.kl_per_dim.tolist()), lr_schedule(cfg.optimizer),
        search_trial.stop_after if search_trial is not None else None,
    )  # fmt: skip
    settings = FitSettings.of(cfg.training, cfg.data.binarize.value == "dynamic")
    try:
        history = fit(model, optimizer, data.train, data.evaluated(), settings, hooks, start)
    except KeyboardInterrupt:
        saver.save_unsaved()
        raise
    # Past training, the optimizer's moments and the last gradients (3x the model's size) only take memory.
    optimizer.zero_grad(set_to_none=True)
    return history


def train_job(cfg: DictConfig) -> dict[str, float]:
    """Train one configuration inside its tracked run; returns its final metrics.

    A configuration that already FINISHED is skipped; one that was interrupted continues from its checkpoint.
    """
    job = identify(cfg)
    device = resolve_device(cfg.training.device)
    with signals.held():  # a stop signal inside a store query could surface as the database's error instead
        store = open_store(cfg.tracking)
        decision = previous_run(store, job.key, cfg.training)
    if decision.action == "skip":
        return skipped(job, decision, store)
    if decision.action == "busy":
        raise busy_error(decision)
    checkpoints = Path(cfg.paths.checkpoint_dir)
    resume_id = resumable_run_id(decision, checkpoints)
    if decision.action == "resume" and resume_id is None and decision.run.info.status == "RUNNING":
        retire(store, decision.run)
    resumed_threads = decision.run.data.tags.get(names.TAG_THREADS) if resume_id else None
    # Before any parallel operation starts the intra-op threads (see set_cpu_threads).
    set_cpu_threads(job_threads(cfg.training.threads, HydraConfig.get().launcher, resumed_threads))
    job.tags.update({names.TAG_THREADS: str(torch.get_num_threads()), names.TAG_DEVICE: str(device)})
    # Placement and runtime settings stay in the config artifact: as params they would pose as swept axes.
    # Unset keys stay out, as they do of the fingerprint: runs from before a key existed compare with later ones.
    params = {key: value for key, value in flatten(job.config).items() if defines_result(key) and value is not None}
    with (
        tracked_run(store, job.name, params, job.tags, resume_id, cfg.tracking.system_metrics_s) as tracker,
        beating(tracker.beat, cfg.training.heartbeat_timeout_s),  # ended before the run is: no beat on an ended run
    ):
        if (job.folder / names.HYDRA_DIR).is_dir():
            tracker.log_artifacts(job.folder / names.HYDRA_DIR, names.ARTIFACT_HYDRA)
        tracker.log_artifact(job.folder / names.CONFIG_RESOLVED)
        data = load_data(job, tracker, device)
        model = build_model(cfg.model, data.shape).to(device)
        state_path, kl_history = checkpoints / f"{tracker.run_id or job.key}.pt", []
        history = train(job, tracker, data, model, state_path, kl_history)
        final = finish(job, tracker, model, data, history, kl_history)
    state_path.unlink(missing_ok=True)
    if store is not None:
        log.info(f"MLflow runs: {store.runs_link()}")
    return final


def finish(job: Job, tracker, model: VAEModel, data: Data, history: list[dict], kl_history: list) -> dict:
    """The trial's ending, then the job's outputs: the search learns the final value of its objective."""
    if job.search_trial is not None:
        end_trial(job.search_trial, job.cfg, tracker)
    outputs = JobOutputs(job.cfg, job.config, job.folder, tracker, kl_history, job.data_digest)
    final = write_outputs(model, data, history, outputs)
    if job.search_trial is not None:
        job.search_trial.value = final[job.search_trial.objective]
    return final


def run(cfg: DictConfig) -> dict[str, float]:
    """The job wrapper: a user error goes to the job's log; anything else also leaves its traceback in error.log.

    A stop signal ends the job as Ctrl-C does (checkpoint written, run KILLED). In a process whose entry point carries
    stops out (a single run, the basic launcher) it goes on up and ends the process; in a launcher's worker process it
    becomes this job's failure, so that the launcher collects every job.
    """
    entry_stops = signals.is_stoppable()
    if not entry_stops:
        # A launcher's worker: between jobs too, a stop signal is remembered rather than the end of the process (for
        # joblib, a worker that dies breaks the pool and the others are killed in the middle of their own stop).
        signals.install()
        skip_the_final_collection()
    try:
        with signals.stoppable():
            return train_job(cfg)
    except signals.Stopped as stop:
        if entry_stops:
            raise
        log.error(f"Job {stop}.")
        raise signals.JobStopped(f"{stop}: run the same command again to resume it") from None
    except UserError as error:
        if HydraConfig.get().mode == RunMode.MULTIRUN:
            log.error(str(error))  # a single run's entry point prints it instead
        raise
    except Exception as error:
        log.error(f"{type(error).__name__}: {error}")
        folder = Path(cfg.paths.output_dir)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / names.ERROR_LOG).write_text(traceback.format_exc())
        raise
