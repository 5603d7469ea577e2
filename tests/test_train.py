import pytest
import torch

from tests.conftest import training_settings
from vae_sweep.core.data import Split, load
from vae_sweep.core.model import VAE
from vae_sweep.core.train import evaluate, fit, kl_weight
from vae_sweep.errors import NonFiniteLoss


class Recorder:
    def __init__(self):
        self.epochs = []

    def log_epoch(self, epoch, metrics):
        self.epochs.append((epoch, metrics))


def train_once(tiny_data, **changes):
    torch.manual_seed(0)
    train, test = load("mnist", tiny_data, download=False)
    model = VAE(latent=3, hidden=[64])
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    recorder = Recorder()
    history = fit(model, optimizer, train, test, training_settings(**changes), recorder)
    return history, recorder, model


def test_kl_weight_ramps_linearly_then_holds():
    assert [kl_weight(epoch, 1.0, 4) for epoch in (1, 2, 4, 9)] == [0.25, 0.5, 1.0, 1.0]
    assert kl_weight(1, 0.5, 0) == 0.5


def test_fit_reports_every_epoch_and_learns(tiny_data):
    history, recorder, _ = train_once(tiny_data)
    assert [epoch for epoch, _ in recorder.epochs] == [1, 2, 3]
    keys = {
        "loss/recon/train",
        "loss/kl/train",
        "loss/train",
        "loss/recon/test",
        "loss/kl/test",
        "loss/test",
        "kl_weight",
        "time/epoch_s",
    }
    assert set(recorder.epochs[0][1]) == keys
    assert history[-1]["loss/test"] < history[0]["loss/test"]
    for row in history:
        assert row["loss/train"] == pytest.approx(row["loss/recon/train"] + row["loss/kl/train"], rel=1e-5)


def test_same_seed_gives_bitwise_identical_losses(tiny_data):
    first, _, _ = train_once(tiny_data)
    second, _, _ = train_once(tiny_data)
    strip = lambda rows: [{k: v for k, v in row.items() if k != "time/epoch_s"} for row in rows]  # noqa: E731
    assert strip(first) == strip(second)
    other, _, _ = train_once(tiny_data, seed=1)
    assert strip(other) != strip(first)


def test_grey_levels_train_exactly_like_their_floats(tiny_data):
    """Splits hold uint8 grey levels and hand out floats a batch at a time: the history of float splits, bit for bit."""
    train, test = load("mnist", tiny_data, download=False)
    histories = []
    for split_train, split_test in (
        (train, test),
        (Split(train.floats(), train.labels), Split(test.floats(), test.labels)),
    ):
        torch.manual_seed(0)
        model = VAE(latent=3, hidden=[64])
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
        history = fit(model, optimizer, split_train, split_test, training_settings(epochs=2), Recorder())
        histories.append([{k: v for k, v in row.items() if k != "time/epoch_s"} for row in history])
    assert train.images.dtype == torch.uint8 and histories[0] == histories[1]


def test_warmup_weights_the_train_kl_but_not_the_test_loss(tiny_data):
    history, _, _ = train_once(tiny_data, kl_warmup_epochs=2, epochs=2)
    assert [row["kl_weight"] for row in history] == [0.5, 1.0]
    first = history[0]
    assert first["loss/train"] == pytest.approx(first["loss/recon/train"] + 0.5 * first["loss/kl/train"], rel=1e-5)
    assert first["loss/test"] == pytest.approx(first["loss/recon/test"] + first["loss/kl/test"], rel=1e-5)


def test_evaluation_is_repeatable_and_leaves_the_training_rng_alone(tiny_data):
    _, test = load("mnist", tiny_data, download=False)
    model = VAE(latent=3, hidden=[64])
    state = torch.get_rng_state()
    assert evaluate(model, test, 64, seed=5) == evaluate(model, test, 64, seed=5)
    assert torch.equal(torch.get_rng_state(), state)


def test_non_finite_loss_stops_with_epoch_and_batch(tiny_data):
    train, test = load("mnist", tiny_data, download=False)
    model = VAE(latent=3, hidden=[64])
    with torch.no_grad():
        model.posterior.bias.fill_(float("nan"))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    with pytest.raises(NonFiniteLoss, match=r"epoch 1, batch 1 of 10"):
        fit(model, optimizer, train, test, training_settings(), Recorder())
