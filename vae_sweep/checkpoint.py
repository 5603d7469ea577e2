"""Checkpoints: a model's weights with the resolved config that built it, loadable from a file or an MLflow run."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import torch

from vae_sweep.model import VAE, build_model

ARTIFACT_PATH = "checkpoint"
FILENAME = "checkpoint.pt"


def save(model: VAE, config: dict, path: Path, **extra) -> None:
    """Written to a temporary file and renamed, so a crash never leaves a half-written checkpoint."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    os.close(handle)
    torch.save({"state_dict": model.state_dict(), "config": config, **extra}, temporary)
    os.replace(temporary, path)


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
            str(run_id_or_path), f"{ARTIFACT_PATH}/{FILENAME}", folder
        )
        return load(local)
