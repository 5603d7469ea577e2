"""The priors p(z) a model can take: N(0, I), and the VampPrior's mixture of the posteriors of K learned pseudo-inputs
(Tomczak & Welling, 2018). Each is a module of the model (the VampPrior's pseudo-inputs are its parameters) and gets
the model's encoder at every call, since a VampPrior's components are the encoder's own posteriors."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from vae_sweep.core.models.base import LOG_2PI, Encode, Posterior

# Largest (rows, components, latent) tensor a VampPrior builds at once: 2**22 float32 values are 16 MiB.
MAX_ELEMENTS = 2**22


def standard_kl_per_dim(posterior: Posterior) -> Tensor:
    """Analytic KL(N(mu, exp(logvar)) || N(0, 1)) for each row and latent dimension."""
    mu, logvar = posterior.mean, posterior.logvar
    return -0.5 * (1 + logvar - mu.pow(2) - logvar.exp())


class NormalPrior(nn.Module):
    """p(z) = N(0, I): its KL from a Gaussian posterior is analytic, per dimension."""

    components = 1
    words = "N(0, I)"  # how figures name it
    # The manifold figure decodes [-3, 3]^2, the central mass of N(0, I): for this prior, nothing to add.
    manifold_note = ""

    def __init__(self, latent: int, pixels: int, components: int):
        super().__init__()
        self.latent = latent

    def log_prob(self, z: Tensor, encode: Encode) -> Tensor:
        return -0.5 * (LOG_2PI + z.pow(2)).sum(-1)

    def sample(self, n: int, generator: torch.Generator, encode: Encode, device: torch.device) -> Tensor:
        return torch.randn(n, self.latent, generator=generator, device=device)

    def kl(self, posterior: Posterior, z: Tensor, encode: Encode) -> Tensor:
        """The ELBO's KL term: analytic, per image and dimension (the caller sums)."""
        return standard_kl_per_dim(posterior)

    def kl_per_dim(self, posterior: Posterior, encode: Encode) -> Tensor:
        """KL(q(z_d|x) || p(z_d)) per image and dimension: analytic."""
        return standard_kl_per_dim(posterior)


def component_log_probs(z: Tensor, components: Posterior) -> Tensor:
    """log q(z_n|u_k) for rows z (N, latent) and K diagonal Gaussians: (N, K).

    The square (z - m)^2 / v expands into two matmuls, z^2 @ (1/v) and z @ (m/v), instead of an (N, K, latent)
    tensor: an L_1000 bound of 100 test images took 45 s that way, most of it elementwise work on 2 cores.
    """
    precision = torch.exp(-components.logvar)  # (K, latent)
    constant = (LOG_2PI + components.logvar + components.mean.pow(2) * precision).sum(-1)  # (K,)
    quadratic = z.pow(2) @ precision.T - 2 * (z @ (components.mean * precision).T)
    return -0.5 * (constant + quadratic)


class VampPrior(nn.Module):
    """p(z) = 1/K sum_k q(z|u_k) over K learned pseudo-inputs u_k (pixels in (0, 1) as the sigmoid of a parameter).

    The official code keeps u = hardtanh(W), initialised N(-0.05, 0.01), clamped at 0 and without a gradient there;
    the sigmoid keeps every pseudo-input in the pixel range with a gradient, starting from grey (0.5 + noise).
    """

    words = "the VampPrior (a mixture of the pseudo-inputs' posteriors)"
    manifold_note = "The prior is a VampPrior, not N(0, I): the square is where N(0, I) has its mass, not the prior's."

    def __init__(self, latent: int, pixels: int, components: int):
        super().__init__()
        self.latent, self.components = latent, components
        self.pseudo_logits = nn.Parameter(torch.randn(components, pixels) * 0.01)

    def pseudo_posteriors(self, encode: Encode) -> Posterior:
        return encode(torch.sigmoid(self.pseudo_logits))

    def _rows_at_once(self) -> int:
        return max(1, MAX_ELEMENTS // (self.components * self.latent))

    def log_prob(self, z: Tensor, encode: Encode) -> Tensor:
        """log p(z) = logsumexp_k log q(z|u_k) - log K, for z of any leading shape (..., latent)."""
        flat = z.reshape(-1, self.latent)
        each = component_log_probs(flat, self.pseudo_posteriors(encode))
        return (each.logsumexp(-1) - math.log(self.components)).reshape(z.shape[:-1])

    def sample(self, n: int, generator: torch.Generator, encode: Encode, device: torch.device) -> Tensor:
        """A component drawn uniformly for each of n draws, then z from that pseudo-input's posterior."""
        chosen = torch.randint(self.components, (n,), generator=generator, device=device)
        return self.pseudo_posteriors(encode).rows(chosen).sample(generator)

    def kl(self, posterior: Posterior, z: Tensor, encode: Encode) -> Tensor:
        """The ELBO's KL term: no closed form for a mixture, so log q(z|x) - log p(z) at the posterior sample z,
        per image (a one-sample Monte Carlo estimate, as in the paper's code)."""
        return posterior.log_prob(z) - self.log_prob(z, encode)

    def kl_per_dim(self, posterior: Posterior, encode: Encode) -> Tensor:
        """KL(q(z_d|x) || p(z_d)) against the mixture's exact 1-D marginal p(z_d) = 1/K sum_k q(z_d|u_k), estimated
        with one posterior draw per image (global RNG). Dimensions of a mixture are dependent, so these do not sum
        to the total KL; they say which dimensions carry information, as the analytic ones do for N(0, I)."""
        components = self.pseudo_posteriors(encode)
        z = posterior.sample()
        chunks = z.split(self._rows_at_once())
        marginals = [components.log_prob_per_dim(rows[:, None, :]).logsumexp(1) for rows in chunks]
        return posterior.log_prob_per_dim(z) - (torch.cat(marginals) - math.log(self.components))


PRIORS = {"normal": NormalPrior, "vamp": VampPrior}
