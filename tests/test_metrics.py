import pytest
import torch
import torch.nn.functional as F
from torch import nn

from tests.conftest import small_model
from vae_sweep.core.metrics import (
    active_units,
    frechet_distance,
    inception_score,
    inception_score_splits,
    iwae_bound,
    kl_per_dimension,
    posterior_means,
)
from vae_sweep.core.models import Posterior
from vae_sweep.core.models.priors import NormalPrior, standard_kl_per_dim


class PriorPosteriorFixedDecoder(nn.Module):
    """q(z|x) = p(z) and p(x|z) does not depend on z, so every importance weight equals p(x)."""

    latent = 3
    shape = (1, 28, 28)

    def __init__(self, logits: torch.Tensor):
        super().__init__()
        self.logits = logits
        self.prior = NormalPrior(self.latent, 784, 1)

    def encode(self, x):
        zeros = torch.zeros(len(x), self.latent)
        return Posterior(zeros, zeros)

    def decode(self, z):
        return self.logits.expand(*z.shape[:-1], -1)

    def log_prior(self, z):
        return self.prior.log_prob(z, self.encode)


class CopyEncoder(nn.Module):
    """Posterior means that copy the first `active` pixels (scaled up) and are constant elsewhere."""

    latent = 5

    def __init__(self, active: int):
        super().__init__()
        self.active = active

    def encode(self, x):
        mu = torch.zeros(len(x), self.latent)
        mu[:, : self.active] = 10 * x[:, : self.active]
        return Posterior(mu, torch.zeros_like(mu))


@pytest.fixture(scope="module")
def small_vae():
    torch.manual_seed(0)
    return small_model(latent=4, hidden=[32])


@pytest.fixture(scope="module")
def binary_images():
    return torch.bernoulli(torch.full((40, 784), 0.3), generator=torch.Generator().manual_seed(1))


def test_bound_is_log_px_for_every_k_when_weights_are_constant():
    images = torch.rand(6, 784, generator=torch.Generator().manual_seed(0))
    logits = torch.randn(784, generator=torch.Generator().manual_seed(1))
    log_px = (images * F.logsigmoid(logits) + (1 - images) * F.logsigmoid(-logits)).sum(-1).mean().item()
    model = PriorPosteriorFixedDecoder(logits)
    for k in (1, 7, 50):
        assert iwae_bound(model, images, k) == pytest.approx(log_px, rel=1e-6)


def test_bound_rises_with_k(small_vae, binary_images):
    bounds = [iwae_bound(small_vae, binary_images, k, seed=3) for k in (1, 10, 100)]
    assert bounds[0] <= bounds[1] + 1e-3
    assert bounds[1] <= bounds[2] + 1e-3


def test_single_sample_bound_is_the_elbo(small_vae, binary_images):
    torch.manual_seed(2)
    with torch.no_grad():
        elbo = -torch.stack([small_vae.objective(binary_images)["loss"] for _ in range(200)]).mean()
    l1 = sum(iwae_bound(small_vae, binary_images, 1, seed=seed) for seed in range(20)) / 20
    assert l1 == pytest.approx(elbo.item(), abs=0.5)


def test_chunking_does_not_change_the_bound(small_vae, binary_images):
    whole = iwae_bound(small_vae, binary_images, 30, batch_size=len(binary_images), max_elements=10**9)
    chunked = iwae_bound(small_vae, binary_images, 30, batch_size=7, max_elements=4 * 784)
    assert chunked == pytest.approx(whole, abs=1e-4)


def test_bound_is_repeatable_and_leaves_the_mode_alone(small_vae, binary_images):
    small_vae.train()
    assert iwae_bound(small_vae, binary_images, 5, seed=9) == iwae_bound(small_vae, binary_images, 5, seed=9)
    assert small_vae.training


def test_posterior_means_match_one_big_batch(small_vae, binary_images):
    posterior = posterior_means(small_vae, binary_images, batch_size=16)
    with torch.no_grad():
        expected = small_vae.encode(binary_images)
    torch.testing.assert_close(posterior.mean, expected.mean)
    torch.testing.assert_close(posterior.logvar, expected.logvar)


def test_kl_per_dimension_averages_over_images():
    model = small_model(latent=3)
    posterior = Posterior(torch.randn(10, 3), torch.randn(10, 3))
    kl = kl_per_dimension(model, posterior)
    assert kl.shape == (3,)
    torch.testing.assert_close(kl, standard_kl_per_dim(posterior).mean(0))
    assert kl_per_dimension(model, Posterior(torch.zeros(5, 3), torch.zeros(5, 3))).abs().max().item() == 0.0


def test_active_units_count_dimensions_that_vary():
    images = torch.rand(100, 784, generator=torch.Generator().manual_seed(0))
    collapsed = posterior_means(CopyEncoder(active=0), images).mean
    copying = posterior_means(CopyEncoder(active=3), images).mean
    assert active_units(collapsed) == 0
    assert active_units(copying) == 3


def test_frechet_distance_of_a_set_with_itself_is_zero():
    features = torch.randn(500, 16, generator=torch.Generator().manual_seed(0))
    assert frechet_distance(features, features) == pytest.approx(0, abs=1e-8)


def test_frechet_distance_of_shifted_unit_gaussians_is_the_squared_shift():
    generator = torch.Generator().manual_seed(0)
    shift = torch.tensor([1.0, -2.0, 0.5, 0.0])
    a = torch.randn(20000, 4, generator=generator)
    b = torch.randn(20000, 4, generator=generator) + shift
    assert frechet_distance(a, b) == pytest.approx(shift.pow(2).sum().item(), abs=0.05)


def test_inception_score_counts_evenly_used_confident_classes():
    one_hot = torch.eye(10).repeat(3, 1)
    assert inception_score(one_hot) == pytest.approx(10)
    identical = torch.softmax(torch.randn(1, 10), dim=-1).expand(30, -1)
    assert inception_score(identical) == pytest.approx(1)


def test_grey_levels_give_the_bound_and_means_of_their_floats(small_vae):
    grey = torch.randint(0, 256, (30, 784), generator=torch.Generator().manual_seed(2), dtype=torch.uint8)
    floats = grey.to(torch.float32).div_(255)
    assert iwae_bound(small_vae, grey, k=7, batch_size=8) == iwae_bound(small_vae, floats, k=7, batch_size=8)
    got, expected = posterior_means(small_vae, grey, 7), posterior_means(small_vae, floats, 7)
    assert torch.equal(got.mean, expected.mean) and torch.equal(got.logvar, expected.logvar)


def test_inception_score_splits_give_the_mean_and_deviation_of_each_parts_score():
    # Split j uses m_j classes evenly and confidently, so its score is m_j: means and deviation known in closed form.
    used = [1, 2, 5, 10, 10, 5, 2, 1, 10, 10]
    parts = [torch.eye(10)[torch.arange(10) % m] for m in used]
    mean, std = inception_score_splits(torch.cat(parts))
    expected = torch.tensor(used, dtype=torch.float64)
    assert mean == pytest.approx(expected.mean().item())
    assert std == pytest.approx(expected.std(correction=0).item())
    assert inception_score_splits(torch.eye(10)[torch.arange(100) % 10]) == pytest.approx((10.0, 0.0))
