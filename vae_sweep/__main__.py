"""`python -m vae_sweep [-m] [overrides...]`: train one job per sweep point."""

import hydra
from omegaconf import DictConfig

from vae_sweep import names
from vae_sweep.cli import collect_only_new_objects, main_with_clean_errors, single_run_exits_on_user_error
from vae_sweep.config import CONFIG_PACKAGE, register_configs
from vae_sweep.core.models import schemas
from vae_sweep.jobs.task import run

register_configs(schemas())


@hydra.main(version_base="1.3", config_path=CONFIG_PACKAGE, config_name="config")
@single_run_exits_on_user_error
def main(cfg: DictConfig) -> float:
    return run(cfg)[names.TEST_LOSS]


if __name__ == "__main__":
    collect_only_new_objects()
    main_with_clean_errors(main)
