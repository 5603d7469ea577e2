"""Hydra callbacks: work that belongs before all jobs of a sweep rather than inside each one."""

from __future__ import annotations

import logging
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from vae_sweep.tracking.store import connect

log = logging.getLogger(__name__)


class PrepareTrackingStore(Callback):
    """Create the MLflow store and experiment once, before parallel jobs would race to create them."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        HydraConfig.instance().set_config(config)  # the tracking URI interpolates Hydra's launch directory
        tracking = config.tracking
        if tracking.enabled:
            connect(tracking.uri, tracking.experiment, tracking.artifact_root)
            log.info(f"MLflow experiment {tracking.experiment!r} ready at {tracking.uri}")
