"""Model families, priors and objectives, and the registry that builds a model from its `model` config node.

A family is one module with a settings schema (a dataclass of ModelSettings with its RULES) and two builders,
`encoder(settings, shape) -> (module, features)` and `decoder(settings, shape) -> module`, plus one entry in FAMILIES
and one conf/model/<name>.yaml. The config's `model=` choices and schemas come from FAMILIES.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import ModuleType

from torch import nn

from vae_sweep.core.models import conv, mlp
from vae_sweep.core.models.base import Activation, Posterior
from vae_sweep.core.models.model import VAEModel
from vae_sweep.core.models.objectives import OBJECTIVES
from vae_sweep.core.models.priors import PRIORS
from vae_sweep.core.models.settings import ADDED_DEFAULTS, ModelSettings, read_settings

__all__ = [
    "ADDED_DEFAULTS", "Activation", "FAMILIES", "OBJECTIVES", "PRIORS", "ModelSettings", "Posterior", "VAEModel",
    "build_model", "check_model", "schemas", "settings_of",
]  # fmt: skip


@dataclass(frozen=True)
class Family:
    schema: type
    module: ModuleType


FAMILIES = {"mlp": Family(mlp.MLPSettings, mlp), "conv": Family(conv.ConvSettings, conv)}


def schemas() -> dict[str, type]:
    """Family name -> its settings dataclass: what the config's `model` group registers."""
    return {name: family.schema for name, family in FAMILIES.items()}


def settings_of(model_cfg) -> ModelSettings:
    """The family settings a `model` node (or a checkpoint's dict of it) describes; a config from before a key
    existed gets its default. A config without a name is the MLP's: the only family there was."""
    name = model_cfg.get("name", "mlp") or "mlp"
    if name not in FAMILIES:
        raise ValueError(f"unknown model family {name!r}; allowed: {', '.join(FAMILIES)}")
    return read_settings(FAMILIES[name].schema, model_cfg)


def check_model(model_cfg, shape: tuple[int, int, int]) -> None:
    """A UserError, before any run exists, where the family cannot take images of `shape` (a family without a
    `check` takes any)."""
    settings = settings_of(model_cfg)
    check = getattr(FAMILIES[settings.name].module, "check", None)
    if check is not None:
        check(settings, shape)


def build_model(model_cfg, shape: tuple[int, int, int]) -> VAEModel:
    """The model a `model` config node describes, for images of `shape` (channels, height, width)."""
    settings = settings_of(model_cfg)
    module = FAMILIES[settings.name].module
    # Built in this order, the weights draw from the global RNG as the single MLP class always did: a seed trains the
    # model it trained before.
    encoder, features = module.encoder(settings, shape)
    head = nn.Linear(features, 2 * settings.latent)
    return VAEModel(encoder, head, module.decoder(settings, shape), settings, shape)
