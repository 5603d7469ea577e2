import json

import pytest
import torch

from tests.conftest import REPO, fit_plainly, small_model, training_settings
from vae_sweep import names
from vae_sweep.core.data import Split, load
from vae_sweep.core.metrics import active_units, kl_per_dimension, posterior_means
from vae_sweep.core.train import FitSettings, Hooks, evaluate, evaluate_with_posterior, fit, kl_weight
from vae_sweep.errors import NonFiniteLoss


class Recorder:
    def __init__(self):
        self.epochs = []

    def log_epoch(self, epoch, metrics):
        self.epochs.append((epoch, metrics))


def train_once(tiny_data, lr_at=None, on_usage=None, dynamic=False, **changes):
    torch.manual_seed(0)
    train, test = load("mnist", tiny_data, download=False)
    model = small_model()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    recorder = Recorder()
    settings = training_settings(**changes)
    history = fit_plainly(model, optimizer, train, test, settings, recorder, dynamic, lr_at=lr_at, on_usage=on_usage)
    return history, recorder, model


def strip_times(history):
    return [{k: v for k, v in row.items() if k != names.EPOCH_TIME} for row in history]


@pytest.fixture
def two_threads():
    previous = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(previous)


@pytest.mark.parametrize("dynamic", [False, True])
def test_the_default_mlp_elbo_trains_bit_for_bit_as_recorded(tiny_data, dynamic, two_threads):
    """At 2 threads (an in-process job earlier in the same worker may have left another count): bit for bit the
    histories recorded with the Bernoulli likelihood of core/models/likelihood.py, and within a few float32 roundings
    those torch's binary_cross_entropy_with_logits gave (recorded from main before core/models/), which it replaced."""
    recorded = json.loads((REPO / "tests" / "elbo_histories.json").read_text())
    history = strip_times(train_once(tiny_data, dynamic=dynamic, epochs=2, kl_warmup_epochs=1)[0])
    assert history == recorded[f"bernoulli_nll, dynamic={dynamic}"]
    assert history == [
        pytest.approx(row, rel=1e-6) for row in recorded[f"binary_cross_entropy_with_logits, dynamic={dynamic}"]
    ]


def test_kl_weight_ramps_linearly_then_holds():
    assert [kl_weight(epoch, 1.0, 4) for epoch in (1, 2, 4, 9)] == [0.25, 0.5, 1.0, 1.0]
    assert kl_weight(1, 0.5, 0) == 0.5


def test_fit_reports_every_epoch_and_learns(tiny_data):
    history, recorder, _ = train_once(tiny_data)
    assert [epoch for epoch, _ in recorder.epochs] == [1, 2, 3]
    keys = [
        "loss/recon/train",
        "loss/recon/test",
        "loss/kl/train",
        "loss/kl/test",
        "loss/train",
        "loss/test",
        "loss/elbo/test",
        "active_units",
        "kl_weight",
        "lr",
        "time/epoch_s",
    ]
    assert sorted(recorder.epochs[0][1]) == sorted(keys)
    assert history[-1]["loss/test"] < history[0]["loss/test"]
    for row in history:
        assert row["loss/train"] == pytest.approx(row["loss/recon/train"] + row["loss/kl/train"], rel=1e-5)


def test_same_seed_gives_bitwise_identical_losses(tiny_data):
    first, _, _ = train_once(tiny_data)
    second, _, _ = train_once(tiny_data)
    assert strip_times(first) == strip_times(second)
    other, _, _ = train_once(tiny_data, seed=1)
    assert strip_times(other) != strip_times(first)


def test_grey_levels_train_exactly_like_their_floats(tiny_data):
    """Splits hold uint8 grey levels and hand out floats a batch at a time: the history of float splits, bit for bit."""
    train, test = load("mnist", tiny_data, download=False)
    histories = []
    for split_train, split_test in (
        (train, test),
        (Split(train.floats(), train.labels), Split(test.floats(), test.labels)),
    ):
        torch.manual_seed(0)
        model = small_model()
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
        history = fit_plainly(model, optimizer, split_train, split_test, training_settings(epochs=2), Recorder())
        histories.append(strip_times(history))
    assert train.images.dtype == torch.uint8 and histories[0] == histories[1]


def test_warmup_weights_the_train_kl_but_not_the_test_loss(tiny_data):
    history, _, _ = train_once(tiny_data, kl_warmup_epochs=2, epochs=2)
    assert [row["kl_weight"] for row in history] == [0.5, 1.0]
    first = history[0]
    assert first["loss/train"] == pytest.approx(first["loss/recon/train"] + 0.5 * first["loss/kl/train"], rel=1e-5)
    assert first["loss/test"] == pytest.approx(first["loss/recon/test"] + first["loss/kl/test"], rel=1e-5)


def test_evaluation_is_repeatable_and_leaves_the_training_rng_alone(tiny_data):
    _, test = load("mnist", tiny_data, download=False)
    model = small_model()
    state = torch.get_rng_state()
    assert evaluate(model, test, 64, seed=5) == evaluate(model, test, 64, seed=5)
    assert torch.equal(torch.get_rng_state(), state)


def test_non_finite_loss_stops_with_epoch_and_batch(tiny_data):
    train, test = load("mnist", tiny_data, download=False)
    model = small_model()
    with torch.no_grad():
        model.posterior.bias.fill_(float("nan"))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    with pytest.raises(NonFiniteLoss, match=r"epoch 1, batch 1 of 10"):
        fit_plainly(model, optimizer, train, test, training_settings(), Recorder())


def test_with_beta_the_test_elbo_weighs_the_kl_by_one(tiny_data):
    history, _, _ = train_once(tiny_data, beta=4.0, epochs=1)
    row = history[0]
    assert row["loss/test"] == pytest.approx(row["loss/recon/test"] + 4.0 * row["loss/kl/test"], rel=1e-5)
    assert row[names.TEST_ELBO] == pytest.approx(row["loss/recon/test"] + row["loss/kl/test"], rel=1e-6)


def test_each_epoch_sets_and_records_the_scheduled_learning_rate(tiny_data):
    rates = {1: 1e-2, 2: 1e-3, 3: 1e-4}
    history, _, _ = train_once(tiny_data, lr_at=rates.__getitem__)
    assert [row[names.LR] for row in history] == [1e-2, 1e-3, 1e-4]
    unscheduled, _, _ = train_once(tiny_data, epochs=1)
    assert unscheduled[0][names.LR] == 1e-3


def test_latent_usage_per_epoch_is_what_a_separate_encoder_pass_gives(tiny_data):
    seen = []
    history, _, model = train_once(tiny_data, on_usage=lambda epoch, usage: seen.append((epoch, usage)))
    assert [epoch for epoch, _ in seen] == [1, 2, 3]
    _, test = load("mnist", tiny_data, download=False)
    posterior = posterior_means(model, test.images)
    final = seen[-1][1]
    torch.testing.assert_close(final.means, posterior.mean)
    torch.testing.assert_close(final.kl_per_dim, kl_per_dimension(model, posterior))
    assert history[-1][names.ACTIVE_UNITS] == active_units(posterior.mean)
    assert final.kl_per_dim.sum().item() == pytest.approx(history[-1]["loss/kl/test"], rel=1e-5)


def test_evaluate_is_evaluate_with_posterior_without_it(tiny_data):
    _, test = load("mnist", tiny_data, download=False)
    model = small_model()
    terms, posterior = evaluate_with_posterior(model, test, 64, seed=5)
    assert terms == evaluate(model, test, 64, seed=5)
    assert posterior.means.shape == (len(test), 3) and posterior.kl_per_dim.shape == (3,)


def test_a_validation_split_is_evaluated_every_epoch_beside_the_test_set(tiny_data, caplog):
    torch.manual_seed(0)
    train, test = load("mnist", tiny_data, download=False)
    val = Split(train.images[:100], train.labels[:100])
    model, recorder = small_model(hidden=(16,)), Recorder()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    settings = FitSettings.of(training_settings(epochs=1))
    with caplog.at_level("INFO", logger="vae_sweep.core.train"):
        history = fit(model, optimizer, train, {"test": test, "val": val}, settings, Hooks(recorder))
    row = history[-1]
    val_keys = {names.epoch_key("val", term) for term in ("loss", "recon", "kl", "elbo")}
    assert val_keys <= set(recorder.epochs[0][1]) and val_keys <= set(names.EPOCH_METRICS)
    assert row[names.VAL_LOSS] == evaluate(model, val, 100, 7)["loss"]
    assert row[names.VAL_LOSS] != row[names.TEST_LOSS]
    assert "| val loss " in caplog.text
