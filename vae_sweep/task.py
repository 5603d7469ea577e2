"""One sweep point: config -> data -> model -> training loop -> tracker, with the outputs written to its job folder."""

from __future__ import annotations

import csv
import json
import logging
import sys
import traceback
from pathlib import Path

import torch
import yaml
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from vae_sweep import checkpoint, figures
from vae_sweep.config import UserError, flatten, to_container, validate
from vae_sweep.data import Split, binarize, file_md5s, load
from vae_sweep.model import VAE, build_model, kl_per_dim
from vae_sweep.provenance import provenance
from vae_sweep.tracking import tracked_run
from vae_sweep.train import fit

log = logging.getLogger(__name__)

OPTIMIZERS = {"adam": torch.optim.Adam, "sgd": torch.optim.SGD, "adagrad": torch.optim.Adagrad}

# Overrides that say where a run goes rather than what it is: left out of run names.
_PLACEMENT_PREFIXES = ("tracking.", "paths.", "hydra.", "hydra/", "experiment=", "training.progress")


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"training.device={name} but this machine has no CUDA device; use training.device=auto or cpu.")
    return device


def build_optimizer(model: VAE, optimizer_cfg) -> torch.optim.Optimizer:
    name = optimizer_cfg.name.value
    options = {"lr": optimizer_cfg.lr, "weight_decay": optimizer_cfg.weight_decay}
    if name == "sgd":
        options["momentum"] = optimizer_cfg.momentum
    return OPTIMIZERS[name](model.parameters(), **options)


def prepare_data(data_cfg, device: torch.device, seed: int) -> tuple[Split, Split]:
    """Both splits on the device; binarized once with a fixed seed where the config asks for it."""
    train, test = load(data_cfg.name.value, data_cfg.root, data_cfg.download)
    mode = data_cfg.binarize.value
    generator = torch.Generator().manual_seed(seed)
    if mode == "fixed":
        train = Split(binarize(train.images, generator), train.labels)
    if mode in ("fixed", "dynamic"):
        # The test set is binarized once in both modes so that test numbers are comparable between epochs.
        test = Split(binarize(test.images, generator), test.labels)
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
        **provenance(Path(cfg.paths.root_dir)),
        **cfg.tracking.tags,
    }
    return run_name(overrides), tags


@torch.no_grad()
def write_figures(model: VAE, test: Split, history: list[dict[str, float]], folder: Path, eval_batch_size: int) -> None:
    """The study's figures for a trained model, from the test set and fixed seeds so that runs compare."""
    model.eval()
    images = test.images
    means, logvars = (
        torch.cat(parts) for parts in zip(*(model.encode(x) for x in images.split(eval_batch_size)), strict=True)
    )
    figures.losses(history, folder / "losses.png")
    figures.reconstructions(images[:16].cpu(), model.decode(means[:16]).cpu(), folder / "reconstructions.png")
    figures.samples(model.sample(64, torch.Generator(images.device).manual_seed(0)).cpu(), folder / "samples.png")
    figures.latent_scatter(means.cpu(), test.labels.cpu(), folder / "latent_scatter.png")
    if model.latent == 2:
        figures.manifold(model.decode, folder / "manifold.png", device=images.device)
    figures.kl_per_dim(kl_per_dim(means, logvars).mean(dim=0).cpu(), folder / "kl_per_dim.png")


def train_job(cfg: DictConfig) -> dict[str, float]:
    """Train one configuration inside its tracked run; returns the last epoch's metrics."""
    validate(cfg)
    device = resolve_device(cfg.training.device)
    if cfg.training.threads > 0:
        torch.set_num_threads(cfg.training.threads)
    output_dir = Path(cfg.paths.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    config = to_container(cfg)
    (output_dir / "config_resolved.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    name, tags = job_identity(cfg)

    with tracked_run(cfg.tracking, name, flatten(config), tags) as tracker:
        if (output_dir / ".hydra").is_dir():
            tracker.log_artifacts(output_dir / ".hydra", "hydra")
        tracker.log_artifact(output_dir / "config_resolved.yaml")

        torch.manual_seed(cfg.training.seed)
        train, test = prepare_data(cfg.data, device, cfg.training.seed)
        tags.update({f"data.md5.{file}": md5 for file, md5 in file_md5s(cfg.data.name.value, cfg.data.root).items()})
        tracker.set_tags(tags)
        (output_dir / "provenance.json").write_text(json.dumps(tags, indent=1))
        model = build_model(cfg.model).to(device)
        optimizer = build_optimizer(model, cfg.optimizer)
        log.info(
            f"{cfg.data.name.value}: {len(train)} train / {len(test)} test images on {device}; "
            f"model {list(cfg.model.hidden)} -> latent {cfg.model.latent}"
        )

        history = fit(model, optimizer, train, test, cfg.training, tracker, cfg.data.binarize.value == "dynamic")
        write_history(history, output_dir / "history.csv")
        checkpoint.save(model, config, output_dir / checkpoint.FILENAME, epoch=cfg.training.epochs)
        write_figures(model, test, history, output_dir / "figures", cfg.training.eval_batch_size)

        final = {f"final/{key}": value for key, value in history[-1].items() if "/" in key}
        tracker.log_metrics(final, step=cfg.training.epochs)
        (output_dir / "final_metrics.json").write_text(json.dumps(final, indent=1))
        tracker.log_artifact(output_dir / "history.csv")
        tracker.log_artifact(output_dir / checkpoint.FILENAME, checkpoint.ARTIFACT_PATH)
        tracker.log_artifacts(output_dir / "figures", "figures")
    return history[-1]


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
