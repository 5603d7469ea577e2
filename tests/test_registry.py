"""`python -m vae_sweep.registry register`: the best run's checkpoint as a model version aliased `best`."""

import shutil

import pytest

from tests.conftest import experiment_runs, train_in_process
from vae_sweep import load_model
from vae_sweep.errors import UserError
from vae_sweep.registry import main

SMALL_JOB = ("training.epochs=1", "model.hidden=[16]", "eval.enabled=false")


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_data):
    """A store holding two finished runs of different latent sizes, trained once for the module."""
    root = tmp_path_factory.mktemp("trained")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("VAE_SWEEP_DATA_DIR", str(tiny_data))
        patch.delenv("MLFLOW_TRACKING_URI", raising=False)
        for latent in (2, 5):
            train_in_process(root, *SMALL_JOB, f"model.latent={latent}")
    return root / "mlflow.db"


@pytest.fixture
def two_runs(trained, tmp_path):
    """A copy of the trained store (its artifacts stay shared); a client, its URI, and its runs, best first."""
    shutil.copy(trained, tmp_path / "mlflow.db")
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    client, runs = experiment_runs(uri)
    ranked = sorted(runs, key=lambda run: run.data.metrics["loss/test"])
    assert ranked[0].data.metrics["loss/test"] < ranked[1].data.metrics["loss/test"]
    return client, uri, ranked


def test_the_best_run_is_registered_and_loads_by_its_alias(two_runs, capsys):
    client, uri, (best, worse) = two_runs
    assert main(["register", "mnist-vae", "--all", "--tracking-uri", uri]) == 0
    output = capsys.readouterr().out
    assert f"from run {best.info.run_id}" in output and "the lowest loss/test" in output
    assert "of the 2 finished runs of all runs; selected on the test set (no validation split" in output
    assert client.get_model_version_by_alias("mnist-vae", "best").run_id == best.info.run_id
    model, config = load_model("models:/mnist-vae@best", tracking_uri=uri)
    assert model.latent == config["model"]["latent"] == int(best.data.params["model.latent"])


def test_best_is_the_lowest_validation_loss_where_every_run_has_one(two_runs, capsys):
    client, uri, (best, worse) = two_runs
    client.log_metric(best.info.run_id, "loss/val", 120.0)
    client.log_metric(worse.info.run_id, "loss/val", 110.0)  # the test set's loser wins on validation data
    assert main(["register", "vae", "--all", "--tracking-uri", uri]) == 0
    output = capsys.readouterr().out
    assert "the lowest loss/val (110;" in output and "selected on the validation split" in output
    assert client.get_model_version_by_alias("vae", "best").run_id == worse.info.run_id


def test_registering_a_chosen_run_moves_the_alias_to_a_new_version(two_runs):
    client, uri, (best, worse) = two_runs
    assert main(["register", "mnist-vae", "--all", "--tracking-uri", uri]) == 0
    assert main(["register", "mnist-vae", "--run", worse.info.run_id, "--tracking-uri", uri]) == 0
    assert client.get_model_version_by_alias("mnist-vae", "best").version == 2
    assert load_model("models:/mnist-vae@best", tracking_uri=uri)[0].latent == int(worse.data.params["model.latent"])
    assert load_model("models:/mnist-vae/1", tracking_uri=uri)[0].latent == int(best.data.params["model.latent"])


def test_a_higher_is_better_metric_picks_the_highest(two_runs, capsys):
    client, uri, (best, worse) = two_runs
    # The inception score is higher-is-better; give the worse-loss run the higher score.
    client.log_metric(best.info.run_id, "quality/inception_score", 2.0)
    client.log_metric(worse.info.run_id, "quality/inception_score", 3.0)
    assert main(["register", "vae", "--all", "--metric", "quality/inception_score", "--tracking-uri", uri]) == 0
    assert "the highest quality/inception_score (3;" in capsys.readouterr().out
    assert client.get_model_version_by_alias("vae", "best").run_id == worse.info.run_id


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--sweep", "multirun/none"], "error: No runs match sweep "),
        (["--all", "--metric", "loss/kl/test"], "error: --metric loss/kl/test has no better direction; choose one"),
        (["--all", "--metric", "quality/fid"], "error: None of the 2 runs of all runs FINISHED with the metric"),
        (["--all", "--experiment", "nope"], "error: No experiment 'nope'"),
    ],
)
def test_a_selection_with_nothing_to_register_is_one_error(two_runs, capsys, arguments, message):
    client, uri, _ = two_runs
    assert main(["register", "mnist-vae", *arguments, "--tracking-uri", uri]) == 1
    error = capsys.readouterr().err
    assert error.startswith(message) and error.count("\n") == 1, error
    assert client.search_registered_models() == []


def test_an_unknown_model_is_one_error_naming_it(two_runs):
    _, uri, _ = two_runs
    with pytest.raises(UserError, match="No model version models:/nobody@best in the registry"):
        load_model("models:/nobody@best", tracking_uri=uri)
    with pytest.raises(UserError, match="names no version: write models:/nobody@best"):
        load_model("models:/nobody", tracking_uri=uri)
