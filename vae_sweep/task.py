"""One sweep point: config -> data -> model -> training loop -> tracker, with the outputs written to its job folder."""

from __future__ import annotations

import csv
import logging
import sys
import traceback
from pathlib import Path

import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from vae_sweep.config import UserError, to_container, validate
from vae_sweep.data import Split, binarize, load
from vae_sweep.model import VAE, build_model
from vae_sweep.train import fit

log = logging.getLogger(__name__)

OPTIMIZERS = {"adam": torch.optim.Adam, "sgd": torch.optim.SGD, "adagrad": torch.optim.Adagrad}


class NullTracker:
    """The loop's sink when nothing records the run."""

    def log_epoch(self, epoch: int, metrics: dict[str, float]) -> None:
        pass


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


def save_checkpoint(model: VAE, cfg: DictConfig, path: Path, epoch: int) -> None:
    torch.save({"state_dict": model.state_dict(), "config": to_container(cfg), "epoch": epoch}, path)


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> tuple[VAE, dict]:
    """A trained model and the resolved config it was trained with, from a checkpoint file."""
    checkpoint = torch.load(path, map_location=map_location, weights_only=True)
    model = build_model(checkpoint["config"]["model"])
    model.load_state_dict(checkpoint["state_dict"])
    return model.eval(), checkpoint["config"]


def train_job(cfg: DictConfig) -> dict[str, float]:
    """Train one configuration; returns the last epoch's metrics."""
    validate(cfg)
    device = resolve_device(cfg.training.device)
    if cfg.training.threads > 0:
        torch.set_num_threads(cfg.training.threads)
    output_dir = Path(cfg.paths.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)

    torch.manual_seed(cfg.training.seed)
    train, test = prepare_data(cfg.data, device, cfg.training.seed)
    model = build_model(cfg.model).to(device)
    optimizer = build_optimizer(model, cfg.optimizer)
    log.info(
        f"{cfg.data.name.value}: {len(train)} train / {len(test)} test images on {device}; "
        f"model {list(cfg.model.hidden)} -> latent {cfg.model.latent}"
    )

    history = fit(model, optimizer, train, test, cfg.training, NullTracker(), cfg.data.binarize.value == "dynamic")
    write_history(history, output_dir / "history.csv")
    save_checkpoint(model, cfg, output_dir / "checkpoint.pt", cfg.training.epochs)
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
