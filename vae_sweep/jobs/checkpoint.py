"""Checkpoints: a model's weights with the resolved config that built it, loadable from a file or an MLflow run.

MLflow is imported where a checkpoint is read from a store: a job that only writes files never loads it."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from vae_sweep import names
from vae_sweep.core.data import SHAPES
from vae_sweep.core.io import save_atomically
from vae_sweep.core.models import VAEModel, build_model
from vae_sweep.errors import UserError

if TYPE_CHECKING:
    from mlflow.tracking import MlflowClient


def save(model: VAEModel, config: dict, path: Path, **extra) -> None:
    """The trained model with its config and image shape, for `load` / `load_model`."""
    save_state({"state_dict": model.state_dict(), "config": config, "shape": list(model.shape), **extra}, path)


def checkpoint_shape(checkpoint: dict) -> tuple[int, int, int]:
    """The image shape the model was built for; checkpoints from before it was stored hold MNIST-style data's."""
    if "shape" in checkpoint:
        return tuple(checkpoint["shape"])
    return SHAPES[checkpoint["config"].get("data", {}).get("name", "mnist")]


def load(path: str | Path, map_location: str | torch.device = "cpu") -> tuple[VAEModel, dict]:
    """The trained model (in eval mode) and the resolved config it was trained with."""
    checkpoint = torch.load(path, map_location=map_location, weights_only=True)
    config = checkpoint["config"]
    model = build_model(config["model"], checkpoint_shape(checkpoint))
    model.load_state_dict(checkpoint["state_dict"])
    return model.eval(), checkpoint["config"]


def registered_run(client: MlflowClient, uri: str) -> str:
    """The run a registered model version was made from: 'models:/NAME@ALIAS' or 'models:/NAME/VERSION'."""
    from mlflow.exceptions import MlflowException

    name, at, alias = uri.removeprefix(names.MODELS_SCHEME).partition("@")
    name, slash, version = name.partition("/")
    try:
        if at:
            return client.get_model_version_by_alias(name, alias).run_id
        if slash:
            return client.get_model_version(name, version).run_id
    except MlflowException as error:
        raise UserError(
            f"No model version {uri} in the registry of {client.tracking_uri} ({error.message}); register one with "
            "`python -m vae_sweep.registry register NAME`, or pass tracking_uri."
        ) from None
    raise UserError(f"{uri} names no version: write {names.model_uri(name)} or {names.MODELS_SCHEME}{name}/1.")


def load_model(source: str | Path, tracking_uri: str | None = None) -> tuple[VAEModel, dict]:
    """The model and its config, from a checkpoint file ("multirun/.../0/checkpoint.pt"), a run id, or a
    registered model version ("models:/NAME@best")."""
    if Path(source).exists():
        return load(source)
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri)
    run_id = registered_run(client, str(source)) if str(source).startswith(names.MODELS_SCHEME) else str(source)
    with tempfile.TemporaryDirectory() as folder:
        return load(client.download_artifacts(run_id, f"{names.ARTIFACT_CHECKPOINT}/{names.CHECKPOINT}", folder))


def training_state(
    model: VAEModel,
    optimizer: torch.optim.Optimizer,
    generator: torch.Generator,
    history: list[dict],
    kl_history: list[list[float]],
) -> dict:
    """Everything a resumed job needs to continue bitwise-identically after the last epoch in `history`, with the
    per-dimension KL of each of those epochs (kl_history), which the run's figure and file cover from epoch 1."""
    return {
        "state_dict": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "batch_order_rng": generator.get_state(),
        "torch_rng": torch.get_rng_state(),
        "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "history": history,
        "kl_per_dim_history": kl_history,
    }


def restore_training_state(
    state: dict, model: VAEModel, optimizer: torch.optim.Optimizer, generator: torch.Generator
) -> list[dict]:
    """Put a saved state back into the live objects; returns the history of the epochs already done."""
    model.load_state_dict(state["state_dict"])
    optimizer.load_state_dict(state["optimizer"])
    generator.set_state(state["batch_order_rng"])
    torch.set_rng_state(state["torch_rng"])
    if state["cuda_rng"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda_rng"])
    return state["history"]


def restored_kl_history(state: dict | None) -> list[list[float]]:
    """The per-dimension KL of each epoch in a saved state (none in states saved before it was kept)."""
    return list(state.get("kl_per_dim_history", [])) if state else []


def save_state(state: dict, path: Path) -> None:
    """Atomic, like `save`: a kill or signal mid-write leaves the previous checkpoint intact."""
    save_atomically(state, path)


def load_state(path: Path) -> dict | None:
    if not path.exists():
        return None
    # Optimizer states and RNG tensors are plain tensors and containers: the safe loader reads them.
    return torch.load(path, map_location="cpu", weights_only=True)
