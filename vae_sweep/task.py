"""One sweep point: config -> data -> model -> training loop -> tracker, with the outputs written to its job folder."""

from __future__ import annotations

import copy
import csv
import json
import logging
import os
import sys
import traceback
from pathlib import Path

import torch
import yaml
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from vae_sweep import checkpoint, figures, metrics, quality
from vae_sweep.config import UserError, flatten, to_container, validate
from vae_sweep.data import Split, binarize_split, file_md5s, load, to_float
from vae_sweep.launcher import available_cores, set_cpu_threads, threads_per_job
from vae_sweep.memory import release_freed_memory
from vae_sweep.model import VAE, build_model
from vae_sweep.optim import build_optimizer
from vae_sweep.provenance import provenance
from vae_sweep.resume import Decision, decide, fingerprint
from vae_sweep.tracking import MlflowTracker, NullTracker, Store, open_store, tracked_run
from vae_sweep.train import fit

log = logging.getLogger(__name__)


# Overrides that say where a run goes rather than what it is: left out of run names.
_PLACEMENT_PREFIXES = ("tracking.", "paths.", "hydra.", "hydra/", "experiment=", "training.progress")


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"training.device={name} but this machine has no CUDA device; use training.device=auto or cpu.")
    return device


def prepare_data(data_cfg, device: torch.device, seed: int) -> tuple[Split, Split]:
    """Both splits on the device; binarized once with a fixed seed where the config asks for it."""
    train, test = load(data_cfg.name.value, data_cfg.root, data_cfg.download)
    mode = data_cfg.binarize.value
    generator = torch.Generator().manual_seed(seed)
    if mode == "fixed":
        train = binarize_split(train, generator)
    if mode in ("fixed", "dynamic"):
        # The test set is binarized once in both modes so that test numbers are comparable between epochs.
        test = binarize_split(test, generator)
    return train.to(device), test.to(device)


def write_history(history: list[dict[str, float]], path: Path) -> None:
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(history[0]))
        writer.writeheader()
        writer.writerows(history)


def run_name(overrides: list[str]) -> str:
    """'model.latent=100 training.epochs=100' -> 'latent=100 epochs=100'."""
    parts = []
    for override in overrides:
        if override.lstrip("+~").startswith(_PLACEMENT_PREFIXES):
            continue
        key, _, value = override.lstrip("+~").partition("=")
        parts.append(f"{key.rsplit('.', 1)[-1]}={value}")
    return " ".join(parts) or "defaults"


def job_identity(cfg: DictConfig) -> tuple[str, dict[str, str]]:
    """The run name and the tags that place this job in its sweep and say what code and machine produced it."""
    hydra_cfg = HydraConfig.get()
    overrides = list(hydra_cfg.overrides.task)
    multirun = hydra_cfg.mode == RunMode.MULTIRUN
    tags = {
        "sweep.id": str(Path(hydra_cfg.sweep.dir if multirun else hydra_cfg.run.dir).resolve()),
        "sweep.job": str(hydra_cfg.job.num if multirun else 0),
        "hydra.overrides": " ".join(overrides),
        "torch.threads": str(torch.get_num_threads()),
        "pid": str(os.getpid()),
        **provenance(Path(cfg.paths.root_dir)),
        **cfg.tracking.tags,
    }
    return run_name(overrides), tags


@torch.no_grad()
def write_figures(model: VAE, test: Split, history: list[dict[str, float]], folder: Path, means, logvars) -> None:
    """The study's figures for a trained model, from the test set and fixed seeds so that runs compare."""
    images = test.images
    figures.losses(history, folder / "losses.png")
    figures.reconstructions(to_float(images[:16]).cpu(), model.decode(means[:16]).cpu(), folder / "reconstructions.png")
    figures.samples(model.sample(64, torch.Generator(images.device).manual_seed(0)).cpu(), folder / "samples.png")
    figures.latent_scatter(means.cpu(), test.labels.cpu(), folder / "latent_scatter.png")
    if model.latent == 2:
        figures.manifold(model.decode, folder / "manifold.png", device=images.device)
    figures.kl_per_dim(metrics.kl_per_dimension(means, logvars).cpu(), folder / "kl_per_dim.png")


def classifier_key(cfg: DictConfig) -> str:
    """The classifier cache entry of the job's data: binarized runs score against a classifier of binarized data."""
    return cfg.data.name.value + ("" if cfg.data.binarize.value == "none" else f"_{cfg.data.binarize.value}")


def classifier_to_train(cfg: DictConfig) -> bool:
    """Whether the end-of-run evaluation will find no cached classifier to score samples with, and train one."""
    if not (cfg.eval.enabled and cfg.eval.sample_quality):
        return False
    return not (Path(cfg.eval.classifier_dir) / f"{classifier_key(cfg)}_cnn.pt").exists()


def evaluate_quality(model: VAE, train: Split, test: Split, means, logvars, cfg, output_dir: Path, tracker) -> dict:
    """The quality/ metrics; the per-dimension KL goes to kl_per_dim.json, a newly trained classifier to the run."""
    # Each step starts from what the last one left live, not from its high-water mark.
    release_freed_memory()
    results = quality.generalisation(model, train, test, cfg.training)
    release_freed_memory()
    results.update(quality.likelihood(model, test, cfg.eval))
    release_freed_memory()
    usage, kl = quality.latent_usage(means, logvars)
    results.update(usage)
    (output_dir / "kl_per_dim.json").write_text(json.dumps([round(value, 6) for value in kl.tolist()]))
    tracker.log_artifact(output_dir / "kl_per_dim.json")
    if cfg.eval.sample_quality:
        key = classifier_key(cfg)
        cache = Path(cfg.eval.classifier_dir)
        scorer = quality.load_classifier(key, train, test, cache)
        release_freed_memory()
        results["quality/classifier_accuracy"] = scorer.accuracy
        results.update(quality.sample_quality(model, scorer, test, cfg.eval))
        if scorer.newly_trained:
            tracker.log_artifact(cache / f"{key}_cnn.pt", "classifier")
    log.info(
        f"quality: IWAE NLL (k={cfg.eval.iwae_k}) {results['quality/iwae_nll']:.2f} nats, "
        f"{results['quality/active_units']} active units, train-test gap {results['quality/train_test_gap']:.2f}"
    )
    return results


class ContinuingSink:
    """Reports only epochs the run does not hold yet: after a resume, re-trained epochs were already reported
    (with identical numbers, since training is deterministic), and epochs in the checkpoint may not have been."""

    def __init__(self, tracker: MlflowTracker | NullTracker, history: list[dict[str, float]]):
        self.tracker = tracker
        self.reported = tracker.logged_epochs()
        for row in history[self.reported :]:
            self.log_epoch(int(row["epoch"]), {key: value for key, value in row.items() if key != "epoch"})

    def log_epoch(self, epoch: int, metrics: dict[str, float]) -> None:
        if epoch > self.reported:
            self.tracker.log_epoch(epoch, metrics)
            self.reported = epoch


def train_with_checkpoints(model, optimizer, train, test, cfg, tracker, generator, history, state_path):
    """fit(), saving a resumable state every training.checkpoint_every epochs, at the last one and on Ctrl-C."""
    every, epochs = cfg.training.checkpoint_every, cfg.training.epochs
    unsaved = None

    def save(history: list[dict[str, float]]) -> None:
        nonlocal unsaved
        state = checkpoint.training_state(model, optimizer, generator, history)
        if len(history) % every == 0 or len(history) == epochs:
            checkpoint.save_state(state, state_path)
            unsaved = None
        else:
            unsaved = copy.deepcopy(state)  # the live tensors move on; Ctrl-C must save this epoch's values

    sink = ContinuingSink(tracker, history)
    dynamic = cfg.data.binarize.value == "dynamic"
    try:
        return fit(model, optimizer, train, test, cfg.training, sink, dynamic, generator, history, save)
    except KeyboardInterrupt:
        if unsaved is not None:
            checkpoint.save_state(unsaved, state_path)
        raise


def previous_run(store: Store | None, key: str, training) -> Decision:
    if store is None or training.resume.value == "never":
        return Decision("new")
    return decide(store.client, store.experiment_id, key, training.heartbeat_timeout_s)


def write_outputs(model, cfg, config, train, test, history, output_dir: Path, tracker) -> dict[str, float]:
    """History, model checkpoint, figures, final and quality metrics: in the job folder and on the run."""
    model.eval()
    release_freed_memory()  # what training freed
    write_history(history, output_dir / "history.csv")
    checkpoint.save(model, config, output_dir / checkpoint.FILENAME, epoch=cfg.training.epochs)
    means, logvars = metrics.posterior_means(model, test.images, cfg.training.eval_batch_size)
    write_figures(model, test, history, output_dir / "figures", means, logvars)
    final = {f"final/{key}": value for key, value in history[-1].items() if "/" in key}
    final["final/train_time_s"] = sum(row["epoch_time_s"] for row in history)
    if cfg.eval.enabled:
        final.update(evaluate_quality(model, train, test, means, logvars, cfg, output_dir, tracker))
    tracker.log_metrics(final, step=cfg.training.epochs)
    (output_dir / "final_metrics.json").write_text(json.dumps(final, indent=1))
    tracker.log_artifact(output_dir / "history.csv")
    tracker.log_artifact(output_dir / checkpoint.FILENAME, checkpoint.ARTIFACT_PATH)
    tracker.log_artifacts(output_dir / "figures", "figures")
    # Python's exit then touches ~110 MB more of the CUDA libraries (unregistering their kernels): on a trimmed heap.
    release_freed_memory()
    return final


def train_job(cfg: DictConfig) -> dict[str, float]:
    """Train one configuration inside its tracked run; returns its final metrics.

    A configuration that already FINISHED is skipped; one that was interrupted continues from its checkpoint.
    """
    validate(cfg)
    device = resolve_device(cfg.training.device)
    # First, before any parallel operation starts the intra-op threads (see set_cpu_threads).
    set_cpu_threads(cfg.training.threads or threads_per_job(HydraConfig.get().launcher, available_cores()))
    output_dir = Path(cfg.paths.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    config = to_container(cfg)
    (output_dir / "config_resolved.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    name, tags = job_identity(cfg)
    key = tags["fingerprint"] = fingerprint(config)

    store = open_store(cfg.tracking)
    decision = previous_run(store, key, cfg.training)
    if decision.action == "skip":
        log.info(f"Skipping {name}: run {decision.run.info.run_id} already FINISHED with this config.")
        return {k: v for k, v in decision.run.data.metrics.items() if k.startswith("final/")}
    if decision.action == "busy":
        raise UserError(
            f"Run {decision.run.info.run_id} with this config is still running (pid {decision.run.data.tags.get('pid')}"
            f" on {decision.run.data.tags.get('host')}); wait for it, or pass training.resume=never for a new run."
        )
    checkpoints = Path(cfg.paths.checkpoint_dir)
    resume_id = decision.run.info.run_id if decision.action == "resume" else None
    if resume_id and not (checkpoints / f"{resume_id}.pt").exists():
        resume_id = None  # nothing to continue from: a fresh run keeps the old one's history unmixed

    with tracked_run(store, name, flatten(config), tags, resume_id) as tracker:
        state_path = checkpoints / f"{tracker.run_id or key}.pt"
        if (output_dir / ".hydra").is_dir():
            tracker.log_artifacts(output_dir / ".hydra", "hydra")
        tracker.log_artifact(output_dir / "config_resolved.yaml")

        torch.manual_seed(cfg.training.seed)
        train, test = prepare_data(cfg.data, device, cfg.training.seed)
        if classifier_to_train(cfg):
            # Its standardization needs the training pixels' statistics, from a float copy of them (~190 MB on the
            # CPU): taken now, when the job holds the least memory, rather than at the end of the run.
            train.pixel_statistics()
        tags.update({f"data.md5.{file}": md5 for file, md5 in file_md5s(cfg.data.name.value, cfg.data.root).items()})
        tracker.set_tags(tags)
        (output_dir / "provenance.json").write_text(json.dumps(tags, indent=1))
        model = build_model(cfg.model).to(device)
        optimizer = build_optimizer(model, cfg.optimizer)
        generator = torch.Generator().manual_seed(cfg.training.seed)
        state = checkpoint.load_state(state_path) if cfg.training.resume.value == "auto" else None
        history = checkpoint.restore_training_state(state, model, optimizer, generator) if state else []
        log.info(
            f"{cfg.data.name.value}: {len(train)} train / {len(test)} test images on {device}; "
            f"model {list(cfg.model.hidden)} -> latent {cfg.model.latent}"
            + (f"; resuming after epoch {len(history)}" if history else "")
        )

        history = train_with_checkpoints(model, optimizer, train, test, cfg, tracker, generator, history, state_path)
        # Past training, the optimizer's moments and the last gradients (3x the model's size) only take memory.
        optimizer.zero_grad(set_to_none=True)
        del optimizer
        final = write_outputs(model, cfg, config, train, test, history, output_dir, tracker)
    state_path.unlink(missing_ok=True)
    return final


def run(cfg: DictConfig) -> dict[str, float]:
    """The job wrapper: a user error ends in its message alone; anything else also leaves its traceback in error.log."""
    try:
        return train_job(cfg)
    except UserError as error:
        if HydraConfig.get().mode == RunMode.MULTIRUN:
            log.error(str(error))
            raise  # the sweeper lists it among the failed jobs and goes on
        # A single run: this message alone, rather than Hydra's report around it.
        sys.stderr.write(f"error: {error}\n")
        raise SystemExit(1) from None
    except Exception as error:
        log.error(f"{type(error).__name__}: {error}")
        output_dir = Path(cfg.paths.output_dir)
        output_dir.mkdir(parents=True, exist_ok=True)
        (output_dir / "error.log").write_text(traceback.format_exc())
        raise
