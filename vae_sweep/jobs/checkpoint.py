"""Checkpoints: a model's weights with the resolved config that built it, loadable from a file or an MLflow run."""

from __future__ import annotations

import tempfile
from pathlib import Path

import torch

from vae_sweep import names
from vae_sweep.core.io import save_atomically
from vae_sweep.core.model import VAE, build_model


def save(model: VAE, config: dict, path: Path, **extra) -> None:
    """The trained model with its config, for `load` / `load_model`."""
    save_state({"state_dict": model.state_dict(), "config": config, **extra}, path)


def load(path: str | Path, map_location: str | torch.device = "cpu") -> tuple[VAE, dict]:
    """The trained model (in eval mode) and the resolved config it was trained with."""
    checkpoint = torch.load(path, map_location=map_location, weights_only=True)
    model = build_model(checkpoint["config"]["model"])
    model.load_state_dict(checkpoint["state_dict"])
    return model.eval(), checkpoint["config"]


def load_model(run_id_or_path: str | Path, tracking_uri: str | None = None) -> tuple[VAE, dict]:
    """`load_model("<run id>")` or `load_model("multirun/.../0/checkpoint.pt")`: the model and its config."""
    if Path(run_id_or_path).exists():
        return load(run_id_or_path)
    from mlflow.tracking import MlflowClient

    with tempfile.TemporaryDirectory() as folder:
        local = MlflowClient(tracking_uri=tracking_uri).download_artifacts(
            str(run_id_or_path), f"{names.ARTIFACT_CHECKPOINT}/{names.CHECKPOINT}", folder
        )
        return load(local)


def training_state(
    model: VAE,
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
    state: dict, model: VAE, optimizer: torch.optim.Optimizer, generator: torch.Generator
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
