"""The training objectives, each returning named terms in nats per image (sums over pixels / latent dimensions,
averaged over images): recon, kl, and loss, the number that is minimised."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Callable

from torch import Tensor

from vae_sweep.core.models.base import Posterior
from vae_sweep.core.models.likelihood import bernoulli_nll

if TYPE_CHECKING:
    from vae_sweep.core.models.model import VAEModel

Terms = dict[str, Tensor]


def _repeated(posterior: Posterior, samples: int) -> Posterior:
    """The posterior along a leading sample axis: (samples, images, latent), without copying."""
    return Posterior(posterior.mean.expand(samples, -1, -1), posterior.logvar.expand(samples, -1, -1))


def elbo(model: "VAEModel", x: Tensor, kl_weight: float, samples: int, posterior: Posterior | None = None) -> Terms:
    """loss = recon + kl_weight * kl, the negative ELBO at kl_weight 1, averaged over `samples` posterior samples per
    image (Burda et al.'s "VAE, k samples"; one is the usual estimate).

    The KL is the prior's: analytic for N(0, I), a one-sample estimate at each z for a mixture.
    """
    images = x.shape[0]
    posterior = posterior if posterior is not None else model.encode(x)
    if samples > 1:
        posterior, x = _repeated(posterior, samples), x.expand(samples, -1, -1)
        images *= samples
    z = posterior.sample()
    recon = bernoulli_nll(model.decode(z), x).sum() / images
    kl = model.prior.kl(posterior, z, model.encode).sum() / images
    return {"recon": recon, "kl": kl, "loss": recon + kl_weight * kl}


def iwae(model: "VAEModel", x: Tensor, kl_weight: float, samples: int, posterior: Posterior | None = None) -> Terms:
    """loss = -L_k (Burda et al., 2015): -mean over images of logsumexp_k log w_k - log k, with
    log w = log p(x|z) + kl_weight * (log p(z) - log q(z|x)), the k samples in one batched pass.

    recon and kl are the k-sample averages of -log p(x|z) and log q(z|x) - log p(z): their sum is the ELBO estimate
    that L_k bounds from above. k = 1 is the ELBO itself (the same computation, bit for bit).
    """
    if samples == 1:
        return elbo(model, x, kl_weight, samples, posterior)
    images = x.shape[0]
    posterior = posterior if posterior is not None else model.encode(x)
    z = _repeated(posterior, samples).sample()
    logits = model.decode(z)
    log_px_z = -bernoulli_nll(logits, x)
    kl = posterior.log_prob(z) - model.log_prior(z)  # (samples, images)
    bound = (log_px_z - kl_weight * kl).logsumexp(0) - math.log(samples)
    return {"recon": -log_px_z.mean(0).sum() / images, "kl": kl.mean(0).sum() / images, "loss": -bound.sum() / images}


Objective = Callable[..., Terms]
OBJECTIVES: dict[str, Objective] = {"elbo": elbo, "iwae": iwae}
