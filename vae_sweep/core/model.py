"""The MLP VAE of Kingma & Welling (2013) and its objective, in nats per image."""

from __future__ import annotations

import itertools
import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

IMAGE_SIZE = 28
PIXELS = IMAGE_SIZE * IMAGE_SIZE

ACTIVATIONS = {"relu": nn.ReLU, "tanh": nn.Tanh}


def mlp(sizes: Sequence[int], activation: str) -> nn.Sequential:
    """Linear layers between consecutive sizes, the activation after each one."""
    layers: list[nn.Module] = []
    for size_in, size_out in itertools.pairwise(sizes):
        layers += [nn.Linear(size_in, size_out), ACTIVATIONS[activation]()]
    return nn.Sequential(*layers)


class VAE(nn.Module):
    def __init__(self, latent: int, hidden: Sequence[int] = (512, 256), activation: str = "relu", pixels: int = PIXELS):
        super().__init__()
        self.latent = latent
        hidden = list(hidden)
        self.encoder = mlp([pixels, *hidden], activation)
        # mu and logvar come out of one layer: one matmul instead of two.
        self.posterior = nn.Linear(hidden[-1], 2 * latent)
        self.decoder = nn.Sequential(mlp([latent, *reversed(hidden)], activation), nn.Linear(hidden[0], pixels))

    def encode(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Mean and log-variance of q(z|x)."""
        mu, logvar = self.posterior(self.encoder(x)).chunk(2, dim=-1)
        return mu, logvar

    def decode_logits(self, z: Tensor) -> Tensor:
        """Bernoulli logits of the pixels; the loss works on these for numerical stability."""
        return self.decoder(z)

    def decode(self, z: Tensor) -> Tensor:
        """Bernoulli means (pixel probabilities) of p(x|z)."""
        return torch.sigmoid(self.decode_logits(z))

    @staticmethod
    def reparameterize(mu: Tensor, logvar: Tensor) -> Tensor:
        return mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Decoder logits for a posterior sample, with the posterior's mu and logvar."""
        mu, logvar = self.encode(x)
        return self.decode_logits(self.reparameterize(mu, logvar)), mu, logvar

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """n images (pixel probabilities) decoded from z ~ N(0, I)."""
        device = next(self.parameters()).device
        z = torch.randn(n, self.latent, generator=generator, device=device)
        return self.decode(z)


def kl_per_dim(mu: Tensor, logvar: Tensor) -> Tensor:
    """Analytic KL(N(mu, exp(logvar)) || N(0, 1)) for each image and latent dimension."""
    return -0.5 * (1 + logvar - mu.pow(2) - logvar.exp())


def loss_terms(x: Tensor, logits: Tensor, mu: Tensor, logvar: Tensor, beta: float = 1.0) -> dict[str, Tensor]:
    """recon, kl and loss = recon + beta * kl: sums over pixels / latent dims, averaged over images, in nats."""
    images = x.shape[0]
    recon = F.binary_cross_entropy_with_logits(logits, x, reduction="sum") / images
    kl = kl_per_dim(mu, logvar).sum() / images
    return {"recon": recon, "kl": kl, "loss": recon + beta * kl}


def build_model(model_cfg, shape: Sequence[int] = (1, IMAGE_SIZE, IMAGE_SIZE)) -> VAE:
    """The VAE a `model` config node (or its plain-dict form) describes, for images of `shape` (C, H, W)."""
    activation = model_cfg["activation"]
    pixels = math.prod(shape)
    return VAE(model_cfg["latent"], list(model_cfg["hidden"]), getattr(activation, "value", activation), pixels)
