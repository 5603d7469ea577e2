"""Quality metrics of a trained VAE: the IWAE bound on log p(x), latent usage, and sample-quality statistics."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from vae_sweep.core.data import to_float
from vae_sweep.core.models import Posterior, VAEModel
from vae_sweep.core.models.likelihood import bernoulli_nll

# Largest tensor (in elements) one step of the IWAE bound builds: 2**22 float32 values are 16 MiB.
MAX_ELEMENTS = 2**22


def _chunk_sizes(model: VAEModel, k: int, batch_size: int, max_elements: int) -> tuple[int, int]:
    """Images per chunk and samples per decoder pass, so that noise, logits and the prior's (samples, images,
    components) densities stay under max_elements."""
    pixels = model.shape[0] * model.shape[1] * model.shape[2]
    images = max(1, min(batch_size, max_elements // (k * model.latent)))
    samples = max(1, min(k, max_elements // (images * max(pixels, model.prior.components))))
    return images, samples


def _log_weights(model: VAEModel, x: Tensor, posterior: Posterior, eps: Tensor) -> Tensor:
    """log p(x|z) + log p(z) - log q(z|x) for z = mu + sigma * eps, with the model's own prior; eps is
    (samples, images, latent)."""
    z = posterior.mean + eps * torch.exp(0.5 * posterior.logvar)
    logits = model.decode(z)
    log_px_z = -bernoulli_nll(logits, x)
    return log_px_z + model.log_prior(z) - posterior.log_prob(z)


def _chunk_bound(model: VAEModel, x: Tensor, k: int, samples: int, generator: torch.Generator) -> Tensor:
    """L_k of each image in x, accumulating logsumexp over sample chunks in log space."""
    posterior = model.encode(x)
    # One draw of all k samples per image keeps the noise independent of how images and samples are chunked.
    eps = torch.stack([torch.randn(k, model.latent, generator=generator, device=x.device) for _ in range(len(x))], 1)
    log_sum = torch.full((len(x),), -math.inf, device=x.device)
    for eps_chunk in eps.split(samples):
        log_sum = torch.logaddexp(log_sum, _log_weights(model, x, posterior, eps_chunk).logsumexp(0))
    return log_sum - math.log(k)


def iwae_bound(
    model: VAEModel, images: Tensor, k: int, batch_size: int = 100, seed: int = 0, max_elements: int = MAX_ELEMENTS
) -> float:
    """The importance-weighted bound L_k on log p(x) of Burda et al. (2015), averaged over images, in nats.

    L_1 is the ELBO and L_k rises towards log p(x) as k grows, so -L_5000 is the usual test NLL estimate. p(z) is the
    model's prior (for a VampPrior, its mixture density). The likelihood is the Bernoulli one of the training loss,
    which also accepts grey levels. The noise comes from `seed`, so the same model, images and k always give the
    same number.
    """
    was_training = model.training
    model.eval()
    generator = torch.Generator(device=images.device).manual_seed(seed)
    chunk, samples = _chunk_sizes(model, k, batch_size, max_elements)
    total = 0.0
    try:
        with torch.no_grad():
            for x in images.split(chunk):
                total += _chunk_bound(model, to_float(x), k, samples, generator).double().sum().item()
    finally:
        model.train(was_training)
    return total / len(images)


@torch.no_grad()
def posterior_means(model: VAEModel, images: Tensor, batch_size: int = 1000) -> Posterior:
    """q(z|x) of every image (float, or uint8 grey levels): mean and logvar, each (N, latent)."""
    return Posterior.cat([model.encode(to_float(x)) for x in images.split(batch_size)])


@torch.no_grad()
def kl_per_dimension(model: VAEModel, posterior: Posterior, seed: int = 0) -> Tensor:
    """KL(q(z_d|x) || p(z_d)) of each latent dimension averaged over images, in nats, shape (latent,): analytic for
    N(0, I); for a mixture prior an estimate from one draw per image, taken from `seed`."""
    with torch.random.fork_rng(devices=[posterior.mean.device] if posterior.mean.is_cuda else []):
        torch.manual_seed(seed)
        return model.kl_per_dim(posterior).mean(0)


def active_units(mu: Tensor, threshold: float = 0.01) -> int:
    """Latent dimensions whose posterior mean varies over images by more than `threshold` (Burda et al., 2015).

    An inactive dimension's mean is the same for every image, so it carries no information about x.
    """
    return int((mu.var(0, correction=0) > threshold).sum())


def _trace_sqrt_product(cov_a: Tensor, cov_b: Tensor) -> Tensor:
    """Tr((C_a C_b)^{1/2}) as Tr((C_a^{1/2} C_b C_a^{1/2})^{1/2}): the latter is symmetric PSD, so eigh applies."""
    values, vectors = torch.linalg.eigh(cov_a)
    root_a = vectors @ torch.diag(values.clamp(min=0).sqrt()) @ vectors.T
    middle = root_a @ cov_b @ root_a
    return torch.linalg.eigvalsh((middle + middle.T) / 2).clamp(min=0).sqrt().sum()


def gaussian_statistics(features: Tensor) -> tuple[Tensor, Tensor]:
    """Mean (d,) and covariance (d, d), in float64, of the Gaussian fitted to an (N, d) feature set."""
    features = features.double()
    return features.mean(0), torch.cov(features.T)


def frechet_distance_of_statistics(statistics_a: tuple[Tensor, Tensor], statistics_b: tuple[Tensor, Tensor]) -> float:
    """||m_a - m_b||^2 + Tr(C_a + C_b - 2 (C_a C_b)^{1/2}) of two gaussian_statistics."""
    (mean_a, cov_a), (mean_b, cov_b) = statistics_a, statistics_b
    mean_term = (mean_a - mean_b).pow(2).sum()
    return (mean_term + torch.trace(cov_a) + torch.trace(cov_b) - 2 * _trace_sqrt_product(cov_a, cov_b)).item()


def frechet_distance(features_a: Tensor, features_b: Tensor) -> float:
    """Fréchet distance between Gaussians fitted to two (N, d) feature sets, in squared feature units; the FID when
    the features are a classifier's."""
    return frechet_distance_of_statistics(gaussian_statistics(features_a), gaussian_statistics(features_b))


def inception_score(class_probs: Tensor) -> float:
    """exp(E_x KL(p(y|x) || p(y))) of an (N, classes) probability matrix: from 1 up to the number of classes.

    The KL is in nats; the score is its exponential, an effective number of well-separated classes.
    """
    probs = class_probs.double()
    marginal = probs.mean(0, keepdim=True)
    kl = (torch.xlogy(probs, probs) - torch.xlogy(probs, marginal)).sum(-1)
    return kl.mean().exp().item()


# Salimans et al. (2016) score 50,000 samples in 10 splits and report the mean and standard deviation of the scores.
INCEPTION_SPLITS = 10


def inception_score_splits(class_probs: Tensor, splits: int = INCEPTION_SPLITS) -> tuple[float, float]:
    """Mean and standard deviation (population, as numpy's np.std in their code) of the inception score of each of
    `splits` consecutive, near-equal parts of the rows."""
    scores = torch.tensor([inception_score(part) for part in class_probs.tensor_split(splits)], dtype=torch.float64)
    return scores.mean().item(), scores.std(correction=0).item()
