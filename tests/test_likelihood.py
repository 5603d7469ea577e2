import pytest
import torch
import torch.nn.functional as F

from vae_sweep.core.models.likelihood import bernoulli_nll


def torch_bce(logits, x):
    return F.binary_cross_entropy_with_logits(logits.double(), x.double().expand_as(logits), reduction="none").sum(-1)


def test_it_is_torchs_binary_cross_entropy_summed_over_each_image():
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 64, 784, generator=generator) * 8
    logits[0, 0, :6] = torch.tensor([-100.0, -40.0, -1e-3, 0.0, 40.0, 100.0])
    grey = torch.rand(64, 784, generator=generator)
    binary = torch.bernoulli(grey, generator=generator)
    for x in (grey, binary):
        reference = torch_bce(logits, x)
        ours = bernoulli_nll(logits, x)
        assert ours.shape == (3, 64) and ours.dtype == torch.float32
        assert ours.double() == pytest.approx(reference, rel=1e-6, abs=1e-4)


def test_a_confident_right_pixel_costs_nothing_and_a_wrong_one_its_logit():
    logits = torch.tensor([[50.0, -50.0, 50.0, -50.0]])
    x = torch.tensor([[1.0, 0.0, 0.0, 1.0]])
    assert bernoulli_nll(logits, x).item() == pytest.approx(100.0, rel=1e-6)
    assert bernoulli_nll(logits[:, :2], x[:, :2]).item() == pytest.approx(0.0, abs=1e-6)


def test_the_gradients_are_those_of_the_sum_for_both_arguments_and_a_broadcast_x():
    generator = torch.Generator().manual_seed(1)
    logits = (torch.randn(2, 3, 5, generator=generator, dtype=torch.float64) * 3).requires_grad_()
    x = torch.rand(3, 5, generator=generator, dtype=torch.float64).requires_grad_()
    assert torch.autograd.gradcheck(bernoulli_nll, (logits, x))


def test_the_backward_matches_autograd_through_torchs_loss():
    generator = torch.Generator().manual_seed(2)
    logits = (torch.randn(4, 784, generator=generator) * 5).requires_grad_()
    x = torch.bernoulli(torch.rand(4, 784, generator=generator), generator=generator)
    weights = torch.arange(1.0, 5.0)
    (bernoulli_nll(logits, x) * weights).sum().backward()
    ours, logits.grad = logits.grad, None
    (F.binary_cross_entropy_with_logits(logits, x, reduction="none").sum(-1) * weights).sum().backward()
    assert torch.allclose(ours, logits.grad, atol=1e-6)
