"""`python -m vae_sweep [-m] [overrides...]`: train one job per sweep point."""

import hydra
from omegaconf import DictConfig

from vae_sweep.cli import main_with_clean_errors
from vae_sweep.config import register_configs
from vae_sweep.task import run

register_configs()


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
def main(cfg: DictConfig) -> float:
    return run(cfg)["final/test/loss"]


if __name__ == "__main__":
    main_with_clean_errors(main)
