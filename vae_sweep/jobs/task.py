"""One sweep point: identity -> data -> model -> training with checkpoints -> outputs, inside its tracked run."""

from __future__ import annotations

import copy
import json
import logging
import traceback
from pathlib import Path

import torch
import yaml
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, open_dict

from vae_sweep import names
from vae_sweep.config import defines_result, flatten, to_container, validate
from vae_sweep.core import signals
from vae_sweep.core.data import RAW_FILES, Split, file_md5s, prepare_data, raw_folder
from vae_sweep.core.model import build_model
from vae_sweep.core.optim import build_optimizer, lr_schedule
from vae_sweep.core.train import fit
from vae_sweep.errors import UserError
from vae_sweep.jobs import checkpoint, trial
from vae_sweep.jobs.frames import EpochFrames
from vae_sweep.jobs.identity import job_identity
from vae_sweep.jobs.outputs import JobOutputs, classifier_to_train, write_outputs
from vae_sweep.jobs.runtime import job_threads, resolve_device, set_cpu_threads
from vae_sweep.tracking.resume import Decision, decide, fingerprint, liveness_tag
from vae_sweep.tracking.runs import DataSplit, MlflowTracker, NullTracker, tracked_run
from vae_sweep.tracking.store import Store, open_store
from vae_sweep.tracking.sweeps import record_reused

log = logging.getLogger(__name__)


class ContinuingSink:
    """Reports only epochs the run does not hold yet: after a resume, re-trained epochs were already reported
    (with identical numbers, since training is deterministic), and epochs in the checkpoint may not have been.

    Frames are drawn only for epochs trained now: the model of an epoch restored from a checkpoint is gone."""

    def __init__(self, tracker: MlflowTracker | NullTracker, history: list[dict[str, float]], frames: EpochFrames):
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


def data_splits(data_cfg, md5s: dict[str, str], train: Split, test: Split) -> list[DataSplit]:
    """The run's inputs for MLflow's dataset lineage, from the raw files' MD5s the job records anyway."""
    folder, sizes = raw_folder(data_cfg.name.value, data_cfg.root), {"train": len(train), "test": len(test)}
    return [
        DataSplit(data_cfg.name.value, split, {f: md5s[f] for f in files if f in md5s}, folder, sizes[split])
        for split, files in RAW_FILES.items()
    ]


def end_trial(search_trial: trial.Trial, cfg: DictConfig, tracker: MlflowTracker | NullTracker) -> None:
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


def train_job(cfg: DictConfig) -> dict[str, float]:
    """Train one configuration inside its tracked run; returns its final metrics.

    A configuration that already FINISHED is skipped; one that was interrupted continues from its checkpoint.
    """
    validate(cfg)
    device = resolve_device(cfg.training.device)
    folder = Path(cfg.paths.output_dir)
    folder.mkdir(parents=True, exist_ok=True)
    config = to_container(cfg)
    (folder / names.CONFIG_RESOLVED).write_text(yaml.safe_dump(config, sort_keys=False))
    name, tags = job_identity(cfg)
    key = tags[names.TAG_FINGERPRINT] = fingerprint(config)
    search_trial = trial.current()
    if search_trial is not None:
        name = search_trial.name
        tags.update(search_trial.tags)

    with signals.held():  # a stop signal inside a store query could surface as the database's error instead
        store = open_store(cfg.tracking)
        decision = previous_run(store, key, cfg.training)
    if decision.action == "skip":
        log.info(f"Skipping {name}: run {decision.run.info.run_id} already FINISHED with this config.")
        if cfg.tracking.parent_run_id:
            record_reused(store, cfg.tracking.parent_run_id, tags[names.TAG_SWEEP_JOB], decision.run.info.run_id)
        log.info(f"MLflow runs: {store.runs_link()}")
        metrics = names.current_metrics(decision.run.data.metrics)
        if search_trial is not None:
            search_trial.value, search_trial.run_id = metrics.get(search_trial.objective), decision.run.info.run_id
        return metrics
    if decision.action == "busy":
        other = decision.run
        raise UserError(
            f"Run {other.info.run_id} with this config is still running (pid {liveness_tag(other, names.TAG_PID)}"
            f" on {liveness_tag(other, names.TAG_HOST)}); wait for it, or pass training.resume=never for a new run."
        )
    checkpoints = Path(cfg.paths.checkpoint_dir)
    resume_id = resumable_run_id(decision, checkpoints)
    resumed_threads = decision.run.data.tags.get(names.TAG_THREADS) if resume_id else None
    # Before any parallel operation starts the intra-op threads (see set_cpu_threads).
    set_cpu_threads(job_threads(cfg.training.threads, HydraConfig.get().launcher, resumed_threads))
    tags.update({names.TAG_THREADS: str(torch.get_num_threads()), names.TAG_DEVICE: str(device)})

    # Placement and runtime settings stay in the config artifact: as params they would pose as swept axes.
    params = {key: value for key, value in flatten(config).items() if defines_result(key)}
    with tracked_run(store, name, params, tags, resume_id, cfg.tracking.system_metrics_s) as tracker:
        if (folder / names.HYDRA_DIR).is_dir():
            tracker.log_artifacts(folder / names.HYDRA_DIR, names.ARTIFACT_HYDRA)
        tracker.log_artifact(folder / names.CONFIG_RESOLVED)

        torch.manual_seed(cfg.training.seed)
        data = prepare_data(cfg.data, device, cfg.training.seed)
        train, test = data.train, data.test
        if classifier_to_train(cfg):
            # Its standardization needs the training pixels' statistics, from a float copy of them (~190 MB on the
            # CPU): taken now, when the job holds the least memory, rather than at the end of the run.
            data.classifier_train.pixel_statistics()
        md5s = file_md5s(cfg.data.name.value, cfg.data.root)
        tags.update({f"{names.TAG_DATA_MD5}{file}": md5 for file, md5 in md5s.items()})
        tracker.set_tags(tags)
        tracker.log_datasets(data_splits(cfg.data, md5s, train, test))
        (folder / names.PROVENANCE).write_text(json.dumps(tags, indent=1))

        model = build_model(cfg.model).to(device)
        optimizer = build_optimizer(model, cfg.optimizer)
        generator = torch.Generator().manual_seed(cfg.training.seed)
        state_path = checkpoints / f"{tracker.run_id or key}.pt"
        state = checkpoint.load_state(state_path) if cfg.training.resume.value == "auto" else None
        history = checkpoint.restore_training_state(state, model, optimizer, generator) if state else []
        kl_history = checkpoint.restored_kl_history(state)
        log.info(
            f"{cfg.data.name.value}: {len(train)} train / {len(test)} test images on {device}; "
            f"model {list(cfg.model.hidden)} -> latent {cfg.model.latent}"
            + (f"; resuming after epoch {len(history)}" if history else "")
        )

        if search_trial is not None:
            # A resumed trial is a new trial in the study: it learns the epochs the checkpoint holds first.
            for row in history:
                search_trial.report(int(row["epoch"]), row[search_trial.objective])
        saver = Checkpointer(model, optimizer, generator, cfg.training, state_path, kl_history)
        dynamic = cfg.data.binarize.value == "dynamic"
        frames = EpochFrames(model, test, tracker, cfg.tracking.image_every, cfg.training.epochs)
        try:
            history = fit(
                model, optimizer, train, test, cfg.training, ContinuingSink(tracker, history, frames), dynamic,
                generator, history, saver, lr_schedule(cfg.optimizer),
                lambda epoch, posterior: kl_history.append(posterior.kl_per_dim.tolist()),
                search_trial.stop_after if search_trial is not None else None,
            )  # fmt: skip
        except KeyboardInterrupt:
            saver.save_unsaved()
            raise
        # Past training, the optimizer's moments and the last gradients (3x the model's size) only take memory.
        optimizer.zero_grad(set_to_none=True)
        del optimizer, saver
        if search_trial is not None:
            end_trial(search_trial, cfg, tracker)
        final = write_outputs(model, data, history, JobOutputs(cfg, config, folder, tracker, kl_history))
        if search_trial is not None:
            search_trial.value = final[search_trial.objective]
    state_path.unlink(missing_ok=True)
    if store is not None:
        log.info(f"MLflow runs: {store.runs_link()}")
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
