"""The model every family builds: its networks with a prior and an objective, used only through these methods."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from vae_sweep.core.models.base import Posterior
from vae_sweep.core.models.objectives import OBJECTIVES, Terms
from vae_sweep.core.models.priors import PRIORS
from vae_sweep.core.models.settings import ModelSettings
from vae_sweep.errors import UserError


class VAEModel(nn.Module):
    """encode -> q(z|x), decode -> Bernoulli logits of p(x|z), log_prior, sample, objective.

    Images go in and come out flattened, (..., channels * height * width); `shape` is their geometry.
    """

    def __init__(
        self, encoder: nn.Module, head: nn.Linear, decoder: nn.Module, settings: ModelSettings, shape: tuple[int, ...]
    ):
        """`head` maps the encoder's features to (mu, logvar): one layer, one matmul instead of two."""
        super().__init__()
        self.settings, self.shape, self.latent = settings, tuple(shape), settings.latent
        self.encoder = encoder
        self.posterior = head
        self.decoder = decoder
        self.pixels = shape[0] * shape[1] * shape[2]
        self.prior = PRIORS[settings.prior.value](settings.latent, self.pixels, settings.prior_components)
        self._objective = OBJECTIVES[settings.objective.value]

    def encode(self, x: Tensor) -> Posterior:
        if x.shape[-1] != self.pixels:
            raise UserError(self._not_built_for(x))
        mu, logvar = self.posterior(self.encoder(x)).chunk(2, dim=-1)
        return Posterior(mu, logvar)

    def _not_built_for(self, x: Tensor) -> str:
        channels, height, width = self.shape
        return (
            f"images of {x.shape[-1]} values each given to a model built for {channels}x{height}x{width} images "
            f"({self.pixels} values, flattened): more channels or pixels than it was built for. Give it the data it "
            "was trained on (its config's data), or train a model on this data."
        )

    def decode(self, z: Tensor) -> Tensor:
        """Bernoulli logits of the pixels for z of any leading shape; the losses work on these for stability."""
        return self.decoder(z)

    def pixel_means(self, z: Tensor) -> Tensor:
        """Bernoulli means (pixel probabilities) of p(x|z)."""
        return torch.sigmoid(self.decode(z))

    def log_prior(self, z: Tensor) -> Tensor:
        """log p(z) in nats, over the last dimension."""
        return self.prior.log_prob(z, self.encode)

    def prior_draws(self, n: int, generator: torch.Generator) -> Tensor:
        """n latent codes z ~ p(z), the model's own prior, from the generator's noise."""
        return self.prior.sample(n, generator, self.encode, next(self.parameters()).device)

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """n images (pixel probabilities) decoded from z ~ p(z)."""
        device = next(self.parameters()).device
        generator = generator if generator is not None else torch.Generator(device).manual_seed(torch.seed())
        return self.pixel_means(self.prior_draws(n, generator))

    def objective(self, x: Tensor, kl_weight: float = 1.0, posterior: Posterior | None = None) -> Terms:
        """The training objective's terms (recon, kl, loss) in nats per image; `posterior` saves an encoder pass
        when the caller has q(z|x) already."""
        return self._objective(self, x, kl_weight, self.settings.samples, posterior)

    def kl_per_dim(self, posterior: Posterior) -> Tensor:
        """KL(q(z_d|x) || p(z_d)) for each row and latent dimension (see the prior for how it is computed)."""
        return self.prior.kl_per_dim(posterior, self.encode)
