"""Quality metrics of a trained VAE: the IWAE bound on log p(x), latent usage, and sample-quality statistics."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vae_sweep.core.data import to_float
from vae_sweep.core.model import kl_per_dim

# Largest tensor (in elements) one step of the IWAE bound builds: 2**22 float32 values are 16 MiB.
MAX_ELEMENTS = 2**22


def _chunk_sizes(k: int, latent: int, batch_size: int, max_elements: int, pixels: int) -> tuple[int, int]:
    """Images per chunk and samples per decoder pass, so that noise and logits stay under max_elements."""
    images = max(1, min(batch_size, max_elements // (k * latent)))
    samples = max(1, min(k, max_elements // (images * pixels)))
    return images, samples


def _log_weights(model: nn.Module, x: Tensor, mu: Tensor, logvar: Tensor, eps: Tensor) -> Tensor:
    """log p(x|z) + log p(z) - log q(z|x) for z = mu + sigma * eps; eps is (samples, images, latent)."""
    z = mu + eps * torch.exp(0.5 * logvar)
    logits = model.decode_logits(z)
    log_px_z = -F.binary_cross_entropy_with_logits(logits, x.expand_as(logits), reduction="none").sum(-1)
    # The -log(2 pi) / 2 per dimension of p(z) and q(z|x) cancel, so neither carries it.
    log_pz = -0.5 * z.pow(2).sum(-1)
    log_qz_x = -0.5 * (eps.pow(2) + logvar).sum(-1)
    return log_px_z + log_pz - log_qz_x


def _chunk_bound(model: nn.Module, x: Tensor, k: int, samples: int, generator: torch.Generator) -> Tensor:
    """L_k of each image in x, accumulating logsumexp over sample chunks in log space."""
    mu, logvar = model.encode(x)
    # One draw of all k samples per image keeps the noise independent of how images and samples are chunked.
    eps = torch.stack([torch.randn(k, mu.shape[-1], generator=generator, device=x.device) for _ in range(len(x))], 1)
    log_sum = torch.full((len(x),), -math.inf, device=x.device)
    for eps_chunk in eps.split(samples):
        log_sum = torch.logaddexp(log_sum, _log_weights(model, x, mu, logvar, eps_chunk).logsumexp(0))
    return log_sum - math.log(k)


def iwae_bound(
    model: nn.Module, images: Tensor, k: int, batch_size: int = 100, seed: int = 0, max_elements: int = MAX_ELEMENTS
) -> float:
    """The importance-weighted bound L_k on log p(x) of Burda et al. (2015), averaged over images, in nats.

    L_1 is the ELBO and L_k rises towards log p(x) as k grows, so -L_5000 is the usual test NLL estimate.
    The likelihood is the Bernoulli one of the training loss, which also accepts grey levels.
    The noise comes from `seed`, so the same model, images and k always give the same number.
    """
    was_training = model.training
    model.eval()
    generator = torch.Generator(device=images.device).manual_seed(seed)
    chunk, samples = _chunk_sizes(k, model.latent, batch_size, max_elements, images.shape[1])
    total = 0.0
    try:
        with torch.no_grad():
            for x in images.split(chunk):
                total += _chunk_bound(model, to_float(x), k, samples, generator).double().sum().item()
    finally:
        model.train(was_training)
    return total / len(images)


@torch.no_grad()
def posterior_means(model: nn.Module, images: Tensor, batch_size: int = 1000) -> tuple[Tensor, Tensor]:
    """mu and logvar of q(z|x) for every image (float, or uint8 grey levels), each (N, latent)."""
    pairs = [model.encode(to_float(x)) for x in images.split(batch_size)]
    return torch.cat([mu for mu, _ in pairs]), torch.cat([logvar for _, logvar in pairs])


def kl_per_dimension(mu: Tensor, logvar: Tensor) -> Tensor:
    """KL(q(z|x) || p(z)) of each latent dimension averaged over images, in nats, shape (latent,)."""
    return kl_per_dim(mu, logvar).mean(0)


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
