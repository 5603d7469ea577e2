import copy

import pytest
import torch
from omegaconf import OmegaConf

from tests.conftest import small_model
from vae_sweep.config import OptimizerConfig, OptimizerName, Schedule
from vae_sweep.core.optim import build_optimizer, lr_schedule, stepper
from vae_sweep.schedule import burda_lr, burda_stage_passes


def twin_models(**adam_options):
    """Two identical VAEs, each with its own Adam."""
    pair = []
    for _ in range(2):
        torch.manual_seed(0)
        model = small_model(latent=3, hidden=[16])
        pair.append((model, torch.optim.Adam(model.parameters(), **adam_options)))
    return pair


def train_steps(model, step, steps=5, frozen=None, optimizer=None, lr_after=None):
    generator = torch.Generator().manual_seed(1)
    torch.manual_seed(2)  # the posterior noise
    for number in range(steps):
        if lr_after is not None and number == lr_after:
            optimizer.param_groups[0]["lr"] = 3e-4
        x = torch.rand(8, 784, generator=generator)
        posterior = model.encode(x)
        logits = model.decode(posterior.sample())
        loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, x) + posterior.mean.pow(2).mean()
        loss = loss + posterior.logvar.exp().mean()
        model.zero_grad(set_to_none=True)
        loss.backward()
        if frozen is not None:
            frozen.grad = None
        step()


def assert_bitwise_equal(first, second):
    (model_a, optimizer_a), (model_b, optimizer_b) = first, second
    for a, b in zip(model_a.parameters(), model_b.parameters(), strict=True):
        assert torch.equal(a, b)
    state_a, state_b = optimizer_a.state_dict()["state"], optimizer_b.state_dict()["state"]
    assert state_a.keys() == state_b.keys()
    for key in state_a:
        for name in ("step", "exp_avg", "exp_avg_sq"):
            assert torch.equal(state_a[key][name], state_b[key][name]), (key, name)
            assert state_a[key][name].dtype == state_b[key][name].dtype, (key, name)


@pytest.mark.parametrize("options", [{}, {"weight_decay": 0.01, "eps": 1e-6, "betas": (0.8, 0.99)}, {"maximize": True}])
def test_fused_adam_stepper_is_bitwise_optimizer_step(options):
    reference, fast = twin_models(lr=1e-3, fused=True, **options)
    step = stepper(fast[1])
    assert step != fast[1].step
    train_steps(reference[0], reference[1].step, optimizer=reference[1], lr_after=3)
    train_steps(fast[0], step, optimizer=fast[1], lr_after=3)
    assert_bitwise_equal(reference, fast)
    assert int(fast[1].state_dict()["state"][0]["step"]) == 5


def test_fused_adam_stepper_continues_a_restored_optimizer_bitwise():
    reference, fast = twin_models(lr=1e-3, fused=True)
    train_steps(reference[0], reference[1].step, steps=3)
    fast[0].load_state_dict(reference[0].state_dict())
    fast[1].load_state_dict(copy.deepcopy(reference[1].state_dict()))  # loading keeps the very tensors
    train_steps(reference[0], reference[1].step, steps=2)
    train_steps(fast[0], stepper(fast[1]), steps=2)
    assert_bitwise_equal(reference, fast)
    assert int(fast[1].state_dict()["state"][0]["step"]) == 5


def test_stepper_falls_back_for_a_parameter_without_gradient():
    reference, fast = twin_models(lr=1e-3, fused=True)
    train_steps(reference[0], reference[1].step, frozen=reference[0].decoder[-1].bias)
    train_steps(fast[0], stepper(fast[1]), frozen=fast[0].decoder[-1].bias)
    assert_bitwise_equal(reference, fast)


@pytest.mark.parametrize("options", [{"fused": False}, {"fused": True, "amsgrad": True}])
def test_other_optimizers_step_as_usual(options):
    model = small_model(latent=3, hidden=[16])
    adam = torch.optim.Adam(model.parameters(), lr=1e-3, **options)
    assert stepper(adam) == adam.step
    sgd = torch.optim.SGD(model.parameters(), lr=0.1)
    assert stepper(sgd) == sgd.step


def test_build_optimizer_follows_the_config():
    model = small_model(latent=3, hidden=[16])
    node = OmegaConf.structured(OptimizerConfig(name=OptimizerName.sgd, lr=0.01, momentum=0.9))
    sgd = build_optimizer(model, node)
    assert isinstance(sgd, torch.optim.SGD)
    assert sgd.param_groups[0]["momentum"] == 0.9 and sgd.param_groups[0]["lr"] == 0.01
    assert build_optimizer(model, OmegaConf.structured(OptimizerConfig())).param_groups[0]["eps"] == 1e-8
    burda = build_optimizer(model, OmegaConf.structured(OptimizerConfig(eps=1e-4)))
    assert burda.param_groups[0]["eps"] == 1e-4  # Burda et al.'s Adam


def test_burda_schedule_runs_3_to_the_i_passes_at_a_seventh_of_a_decade_less_each():
    lr = 1e-3
    stage = lambda i: lr * 10 ** (-i / 7)  # noqa: E731
    # Stages end after 1, 4, 13, 40, 121, 364, 1093 and 3280 passes.
    expected = {1: 0, 2: 1, 4: 1, 5: 2, 13: 2, 14: 3, 1093: 6, 1094: 7, 3280: 7}
    for epoch, i in expected.items():
        assert burda_lr(epoch, lr) == pytest.approx(stage(i), rel=1e-12), epoch
    assert burda_lr(3280, lr) == pytest.approx(1e-4)
    with pytest.raises(ValueError, match="past the schedule's 3280 passes"):
        burda_lr(3281, lr)


def test_a_shortened_burda_schedule_keeps_every_rate_with_fewer_passes():
    assert burda_stage_passes(1.0) == [1, 3, 9, 27, 81, 243, 729, 2187]
    assert burda_stage_passes(0.1) == [1, 1, 1, 3, 8, 24, 73, 219]
    decades = [round(burda_lr(epoch, 1.0, 0.1) ** -7) for epoch in (1, 2, 3, 4, 6, 7, 330)]
    assert decades == [1, 10, 100, 1000, 1000, 10**4, 10**7]


def test_lr_schedule_follows_the_config():
    assert lr_schedule(OmegaConf.structured(OptimizerConfig())) is None
    burda = OmegaConf.structured(OptimizerConfig(lr=2e-3, schedule=Schedule.burda, schedule_pass_scale=0.1))
    assert lr_schedule(burda)(330) == pytest.approx(2e-4)
