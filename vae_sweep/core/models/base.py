"""What every model family shares: the posterior, the settings every family has, and the model built from parts.

A model is an encoder and a decoder (the family's networks) with a prior and a training objective (parts any family
can take); everything downstream uses it through VAEModel's methods, never through its networks.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import Enum
from typing import Callable

import torch
from torch import Tensor, nn

LOG_2PI = math.log(2 * math.pi)


class Activation(Enum):
    relu = "relu"
    tanh = "tanh"


ACTIVATIONS = {Activation.relu.value: nn.ReLU, Activation.tanh.value: nn.Tanh}


@dataclass
class Posterior:
    """A diagonal Gaussian q(z|x): one row per image (or per pseudo-input), one column per latent dimension."""

    mean: Tensor
    logvar: Tensor

    def sample(self, generator: torch.Generator | None = None) -> Tensor:
        """One reparameterized draw per row; with a generator, its noise instead of the global RNG's."""
        if generator is None:
            return self.mean + torch.randn_like(self.mean) * torch.exp(0.5 * self.logvar)
        noise = torch.randn(self.mean.shape, generator=generator, device=self.mean.device)
        return self.mean + noise * torch.exp(0.5 * self.logvar)

    def log_prob_per_dim(self, z: Tensor) -> Tensor:
        """log q(z_d|x) of each dimension; z broadcasts against the rows, e.g. (samples, images, latent)."""
        return -0.5 * (LOG_2PI + self.logvar + (z - self.mean).pow(2) * torch.exp(-self.logvar))

    def log_prob(self, z: Tensor) -> Tensor:
        return self.log_prob_per_dim(z).sum(-1)

    def rows(self, index: slice) -> "Posterior":
        return Posterior(self.mean[index], self.logvar[index])

    @staticmethod
    def cat(parts: list["Posterior"]) -> "Posterior":
        return Posterior(torch.cat([p.mean for p in parts]), torch.cat([p.logvar for p in parts]))


Encode = Callable[[Tensor], Posterior]
