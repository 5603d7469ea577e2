"""core/models: the posterior, priors, objectives and families, each against what it must compute."""

import math

import pytest
import torch
import torch.nn.functional as F

from tests.conftest import MNIST_SHAPE, small_model
from vae_sweep.core.metrics import iwae_bound
from vae_sweep.core.models import FAMILIES, OBJECTIVES, PRIORS, Posterior, build_model, check_model
from vae_sweep.core.models.priors import component_log_probs, standard_kl_per_dim
from vae_sweep.errors import UserError


def test_kl_is_zero_when_posterior_is_the_prior():
    assert standard_kl_per_dim(Posterior(torch.zeros(4, 3), torch.zeros(4, 3))).abs().max().item() == 0.0


def test_kl_matches_closed_form_for_one_dimension():
    posterior = Posterior(torch.tensor([[1.5]]), torch.tensor([[math.log(0.25)]]))
    # KL(N(m, s^2) || N(0, 1)) = (s^2 + m^2 - 1) / 2 - log s
    expected = (0.25 + 2.25 - 1) / 2 - math.log(0.5)
    assert standard_kl_per_dim(posterior).item() == pytest.approx(expected, rel=1e-6)


class FixedDecoder(torch.nn.Module):
    def __init__(self, logits):
        super().__init__()
        self.logits = logits

    def forward(self, z):
        return self.logits.expand(*z.shape[:-1], -1)


def test_recon_is_bce_summed_over_pixels_and_averaged_over_images_and_loss_weighs_the_kl():
    model = small_model(latent=1, shape=(1, 1, 2))
    probs = torch.tensor([[0.9, 0.2], [0.5, 0.7]])
    model.decoder = FixedDecoder(torch.logit(probs))
    x = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    posterior = Posterior(torch.tensor([[1.0], [0.0]]), torch.zeros(2, 1))
    terms = model.objective(x, 0.3, posterior)
    by_hand = -(math.log(0.9) + math.log(0.8) + math.log(0.5) + math.log(0.7)) / 2
    assert terms["recon"].item() == pytest.approx(by_hand, rel=1e-6)
    assert terms["kl"].item() == pytest.approx(0.5 / 2, rel=1e-6)  # KL of N(1, 1) is 1/2, of N(0, 1) zero
    assert terms["loss"].item() == pytest.approx(by_hand + 0.3 * 0.25, rel=1e-6)


def test_interface_shapes_and_mirrored_decoder():
    model = small_model(latent=7, hidden=[64, 32])
    x = torch.rand(3, 784)
    posterior = model.encode(x)
    assert posterior.mean.shape == posterior.logvar.shape == (3, 7)
    probs = model.pixel_means(posterior.mean)
    assert probs.shape == (3, 784) and probs.min() >= 0 and probs.max() <= 1
    assert model.sample(5).shape == (5, 784)
    linear_shapes = [tuple(m.weight.shape) for m in model.decoder.modules() if isinstance(m, torch.nn.Linear)]
    assert linear_shapes == [(32, 7), (64, 32), (784, 64)]


def test_an_old_mlp_config_dict_builds_the_model_it_always_did():
    """A checkpoint's config from before families: no name, objective or prior keys."""
    model = build_model({"latent": 20, "hidden": [400], "activation": "tanh"}, MNIST_SHAPE)
    assert (model.latent, model.settings.objective.value, model.settings.prior.value) == (20, "elbo", "normal")
    assert any(isinstance(m, torch.nn.Tanh) for m in model.modules())
    assert sum(p.numel() for p in model.parameters()) == (784 * 400 + 400) + (400 * 40 + 40) + (20 * 400 + 400) + (
        400 * 784 + 784
    )
    assert [key.split(".")[0] for key in model.state_dict()][:1] == ["encoder"]


def test_an_unknown_key_of_a_config_dict_is_named():
    with pytest.raises(ValueError, match="no key.*hidden"):
        build_model({"name": "conv", "latent": 2, "hidden": [3]}, MNIST_SHAPE)


@pytest.mark.parametrize("shape", [(1, 28, 28), (3, 32, 32), (1, 7, 9)])
def test_the_conv_family_takes_any_image_shape(shape):
    model = build_model({"name": "conv", "latent": 3, "channels": [4, 8]}, shape)
    x = torch.rand(2, math.prod(shape)).bernoulli()
    assert model.decode(model.encode(x).mean).shape == x.shape
    assert model.decode(torch.zeros(5, 2, 3)).shape == (5, 2, math.prod(shape))  # leading sample dimensions


@pytest.mark.parametrize(("channels", "kernel", "smallest"), [([4, 8], 4, 4), ([4], 4, 2), ([4, 8, 8], 3, 1)])
def test_the_conv_family_refuses_images_too_small_for_its_layers(channels, kernel, smallest):
    cfg = {"name": "conv", "latent": 2, "channels": channels, "kernel": kernel}
    model = build_model(cfg, (1, smallest, smallest + 1))
    assert model.decode(torch.zeros(1, 2)).shape == (1, smallest * (smallest + 1))
    if smallest > 1:
        with pytest.raises(UserError, match=f"data.size: {smallest - 1}x{smallest + 1} .* at least {smallest}"):
            check_model(cfg, (1, smallest - 1, smallest + 1))


def test_images_of_another_shape_than_the_model_s_are_one_user_error():
    model = build_model({"name": "conv", "latent": 2, "channels": [4]}, (1, 8, 8))
    with pytest.raises(UserError, match="images of 192 values each given to a model built for 1x8x8 images"):
        model.encode(torch.rand(2, 3 * 8 * 8))


def test_iwae_with_one_sample_is_the_elbo_bit_for_bit():
    elbo, iwae = small_model(), small_model(objective="iwae", samples=1)
    iwae.load_state_dict(elbo.state_dict())
    x = torch.rand(8, 784).bernoulli()
    torch.manual_seed(3)
    first = elbo.objective(x, 0.7)
    torch.manual_seed(3)
    second = iwae.objective(x, 0.7)
    assert all(torch.equal(first[name], second[name]) for name in ("recon", "kl", "loss"))


def quadrature_model(prior: str, pixels: int = 3):
    """A latent-1 model over 3 binary pixels: small enough to integrate log p(x) on a grid."""
    torch.manual_seed(0)
    model = small_model(latent=1, hidden=[8], shape=(1, 1, pixels), prior=prior, prior_components=3)
    with torch.no_grad():
        for layer in model.decoder.modules():
            if isinstance(layer, torch.nn.Linear):
                layer.weight.mul_(4)  # p(x|z) that depends on z, so that the posterior is not the prior
        model.posterior.bias.add_(torch.tensor([0.5, -1.0]))  # q(z|x) off the posterior, so that L_k climbs
        if prior == "vamp":
            model.prior.pseudo_logits.mul_(300)  # components apart, so the mixture is not one Gaussian
    return model.eval()


GRID = torch.linspace(-12, 12, 24001)[:, None]


@pytest.mark.parametrize("prior", list(PRIORS))
def test_the_prior_is_a_normalized_density(prior):
    model = quadrature_model(prior)
    with torch.no_grad():
        density = model.log_prior(GRID).double().exp()
    assert torch.trapezoid(density, GRID[:, 0].double()).item() == pytest.approx(1.0, abs=1e-4)


@pytest.mark.parametrize("prior", list(PRIORS))
def test_iwae_bounds_rise_with_k_towards_log_px_by_quadrature(prior):
    model = quadrature_model(prior)
    x = torch.tensor([[1.0, 0.0, 1.0], [0.0, 0.0, 1.0]])
    with torch.no_grad():
        log_joint = model.log_prior(GRID)[:, None] - F.binary_cross_entropy_with_logits(
            model.decode(GRID)[:, None, :].expand(-1, 2, -1), x.expand(len(GRID), -1, -1), reduction="none"
        ).sum(-1)
        step = (GRID[1] - GRID[0]).item()
        log_px = (log_joint.double().logsumexp(0) + math.log(step)).mean().item()
    # Averaged over 200 copies of each image, the bounds' noise is far below their gaps.
    bounds = {k: iwae_bound(model, x.repeat(200, 1), k, seed=1) for k in (1, 10, 1000)}
    assert bounds[1] < bounds[10] < bounds[1000]
    assert bounds[1000] == pytest.approx(log_px, abs=0.01)


@pytest.mark.parametrize("prior", list(PRIORS))
def test_the_iwae_objective_is_a_tighter_bound_than_the_elbo_in_expectation(prior):
    model = quadrature_model(prior)
    iwae = quadrature_model(prior)
    iwae.settings.samples, iwae._objective = 20, OBJECTIVES["iwae"]
    x = torch.tensor([[1.0, 0.0, 1.0]]).expand(400, -1)
    with torch.no_grad():
        assert iwae.objective(x)["loss"] < model.objective(x)["loss"]


def test_samples_come_from_the_models_prior():
    """A VampPrior's draws cluster at its components' means; N(0, I)'s spread as N(0, 1)."""
    normal, vamp = quadrature_model("normal"), quadrature_model("vamp")
    generator = torch.Generator().manual_seed(0)
    draws = normal.prior_draws(20000, generator)
    assert draws.mean().abs() < 0.03 and draws.std().sub(1).abs() < 0.03
    components = vamp.prior.pseudo_posteriors(vamp.encode)
    with torch.no_grad():
        draws = vamp.prior_draws(20000, generator)
    mixture_mean = components.mean.mean(0)
    mixture_var = (components.logvar.exp() + components.mean.pow(2)).mean(0) - mixture_mean.pow(2)
    assert draws.mean(0).sub(mixture_mean).abs().max() < 0.05 * mixture_var.sqrt().max()
    assert draws.var(0).div(mixture_var).sub(1).abs().max() < 0.05


def test_every_family_is_a_config_group_option():
    from tests.conftest import REPO

    assert {path.stem for path in (REPO / "conf" / "model").glob("*.yaml")} == set(FAMILIES)


TINY = {"mlp": ["model.hidden=[16]"], "conv": ["model.channels=[4,8]"]}


@pytest.mark.parametrize("prior", list(PRIORS))
@pytest.mark.parametrize("objective", list(OBJECTIVES))
@pytest.mark.parametrize("family", list(FAMILIES))
def test_every_family_objective_and_prior_trains_a_job_and_loads_back(tmp_path, tiny_data, family, objective, prior):
    from tests.conftest import train_in_process
    from vae_sweep import load_model, names

    final = train_in_process(
        tmp_path, f"model={family}", *TINY[family], f"model.objective={objective}", "model.samples=2",
        f"model.prior={prior}", "model.prior_components=4", "model.latent=2", "training.epochs=1",
        "tracking.enabled=false", "eval.sample_quality=false", "eval.iwae_k=4", "training.threads=1",
        f"data.root={tiny_data}", "data.binarize=dynamic", "tracking.image_every=0",
    )  # fmt: skip
    assert math.isfinite(final[names.TEST_LOSS]) and math.isfinite(final[names.Q_IWAE_NLL])
    model, config = load_model(tmp_path / "outputs" / "in-process" / names.CHECKPOINT)
    assert (config["model"]["name"], model.settings.objective.value, model.settings.prior.value) == (
        family, objective, prior,
    )  # fmt: skip
    assert model.sample(3, torch.Generator().manual_seed(0)).shape == (3, 784)


def test_component_log_probs_equal_each_gaussians_density():
    """The two-matmul form of log q(z|u_k) is each component's diagonal Gaussian log-density, for every row and
    component, including narrow components (precisions of e^6) far from z."""
    generator = torch.Generator().manual_seed(3)
    components = Posterior(torch.randn(7, 5, generator=generator) * 2, torch.rand(7, 5, generator=generator) * 8 - 6)
    z = torch.randn(11, 5, generator=generator) * 3
    expected = components.log_prob(z.double()[:, None, :]).double()
    double = Posterior(components.mean.double(), components.logvar.double())
    assert torch.allclose(component_log_probs(z.double(), double), double.log_prob(z.double()[:, None, :]))
    assert torch.allclose(component_log_probs(z, components).double(), expected, rtol=1e-5, atol=1e-2)
