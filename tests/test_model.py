import math

import pytest
import torch
import torch.nn.functional as F

from vae_sweep.core.model import VAE, build_model, kl_per_dim, loss_terms


def test_kl_is_zero_when_posterior_is_the_prior():
    mu, logvar = torch.zeros(4, 3), torch.zeros(4, 3)
    assert kl_per_dim(mu, logvar).abs().max().item() == 0.0


def test_kl_matches_closed_form_for_one_dimension():
    mu, logvar = torch.tensor([[1.5]]), torch.tensor([[math.log(0.25)]])
    # KL(N(m, s^2) || N(0, 1)) = (s^2 + m^2 - 1) / 2 - log s
    expected = (0.25 + 2.25 - 1) / 2 - math.log(0.5)
    assert kl_per_dim(mu, logvar).item() == pytest.approx(expected, rel=1e-6)


def test_recon_is_bce_summed_over_pixels_and_averaged_over_images():
    x = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    probs = torch.tensor([[0.9, 0.2], [0.5, 0.7]])
    by_hand = -(math.log(0.9) + math.log(0.8) + math.log(0.5) + math.log(0.7)) / 2
    terms = loss_terms(x, torch.logit(probs), torch.zeros(2, 1), torch.zeros(2, 1))
    assert terms["recon"].item() == pytest.approx(by_hand, rel=1e-6)
    assert terms["kl"].item() == 0.0


def test_loss_is_recon_plus_beta_times_kl():
    x = torch.rand(5, 784)
    logits, mu, logvar = torch.randn(5, 784), torch.randn(5, 4), torch.randn(5, 4)
    plain = loss_terms(x, logits, mu, logvar)
    assert plain["loss"].item() == pytest.approx((plain["recon"] + plain["kl"]).item(), rel=1e-6)
    weighted = loss_terms(x, logits, mu, logvar, beta=0.3)
    assert weighted["loss"].item() == pytest.approx((plain["recon"] + 0.3 * plain["kl"]).item(), rel=1e-6)
    assert plain["recon"].item() == pytest.approx(
        F.binary_cross_entropy(torch.sigmoid(logits), x, reduction="sum").item() / 5, rel=1e-4
    )


def test_interface_shapes_and_mirrored_decoder():
    model = VAE(latent=7, hidden=[64, 32])
    x = torch.rand(3, 784)
    mu, logvar = model.encode(x)
    assert mu.shape == logvar.shape == (3, 7)
    probs = model.decode(mu)
    assert probs.shape == (3, 784) and probs.min() >= 0 and probs.max() <= 1
    assert model.sample(5).shape == (5, 784)
    linear_shapes = [tuple(m.weight.shape) for m in model.decoder.modules() if isinstance(m, torch.nn.Linear)]
    assert linear_shapes == [(32, 7), (64, 32), (784, 64)]


def test_build_model_from_config_dict():
    model = build_model({"latent": 20, "hidden": [400], "activation": "tanh"})
    assert model.latent == 20
    assert any(isinstance(m, torch.nn.Tanh) for m in model.modules())
    assert sum(p.numel() for p in model.parameters()) == (784 * 400 + 400) + (400 * 40 + 40) + (20 * 400 + 400) + (
        400 * 784 + 784
    )
