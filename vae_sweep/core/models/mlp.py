"""The MLP family of Kingma & Welling (2013): pixels -> hidden... -> latent, the decoder the mirror image."""

import itertools
from dataclasses import dataclass, field
from typing import ClassVar, List, Sequence

from torch import nn

from vae_sweep.core.models.base import ACTIVATIONS, Activation
from vae_sweep.core.models.settings import ModelSettings, Rules


@dataclass
class MLPSettings(ModelSettings):
    name: str = "mlp"
    hidden: List[int] = field(default_factory=lambda: [512, 256])
    activation: Activation = Activation.relu

    RULES: ClassVar[Rules] = {
        **ModelSettings.RULES,
        "hidden": (lambda v: len(v) >= 1 and all(h >= 1 for h in v), "a non-empty list of integers >= 1"),
    }


def mlp(sizes: Sequence[int], activation: str) -> nn.Sequential:
    """Linear layers between consecutive sizes, the activation after each one."""
    layers: list[nn.Module] = []
    for size_in, size_out in itertools.pairwise(sizes):
        layers += [nn.Linear(size_in, size_out), ACTIVATIONS[activation]()]
    return nn.Sequential(*layers)


def encoder(settings: MLPSettings, shape: tuple[int, int, int]) -> tuple[nn.Module, int]:
    """The encoder body on flattened pixels, and the size of its features."""
    channels, height, width = shape
    return mlp([channels * height * width, *settings.hidden], settings.activation.value), settings.hidden[-1]


def decoder(settings: MLPSettings, shape: tuple[int, int, int]) -> nn.Module:
    """latent -> flattened pixel logits, through the hidden sizes in reverse."""
    channels, height, width = shape
    hidden = settings.hidden
    body = mlp([settings.latent, *reversed(hidden)], settings.activation.value)
    return nn.Sequential(body, nn.Linear(hidden[0], channels * height * width))
