import shutil
import time

import pytest
import torch

from tests.conftest import SHARED_DATA
from vae_sweep import classifier
from vae_sweep.classifier import SmallCNN, features_and_probs, load_or_train, sample_quality, train_classifier
from vae_sweep.data import Split, load


@pytest.fixture(scope="module")
def tiny_splits(tiny_data):
    return load("mnist", tiny_data, download=False)


def refuse_to_train(*args, **kwargs):
    raise AssertionError("trained although a matching classifier was cached")


def test_learns_the_separable_prototypes(tiny_splits):
    train, test = tiny_splits
    model, accuracy = train_classifier(train, test, epochs=1, batch_size=32, threads=1)
    assert accuracy > 0.9
    features, probs = features_and_probs(model, test.images, batch_size=64)
    assert features.shape == (len(test), 128) and probs.shape == (len(test), 10)
    torch.testing.assert_close(probs.sum(-1), torch.ones(len(test)))


def test_cache_round_trip_loads_instead_of_training(tiny_splits, tmp_path, monkeypatch):
    train, test = tiny_splits
    trained, accuracy = load_or_train("mnist", train, test, tmp_path)
    assert (tmp_path / "mnist_cnn.pt").exists() and not list(tmp_path.glob("*.tmp"))
    monkeypatch.setattr(classifier, "train_classifier", refuse_to_train)
    loaded, cached_accuracy = load_or_train("mnist", train, test, tmp_path)
    assert cached_accuracy == accuracy
    for name, tensor in trained.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], tensor)


def test_other_data_retrains(tiny_splits, tmp_path, monkeypatch):
    train, test = tiny_splits
    calls = []

    def stand_in(train, test):
        calls.append(len(train))
        return SmallCNN(), 0.5

    monkeypatch.setattr(classifier, "train_classifier", stand_in)
    load_or_train("mnist", train, test, tmp_path)
    load_or_train("mnist", Split(1 - train.images, train.labels), test, tmp_path)
    assert calls == [len(train), len(train)]
    load_or_train("mnist", Split(1 - train.images, train.labels), test, tmp_path)
    assert len(calls) == 2


def test_a_set_scored_against_itself_has_zero_fid(tiny_splits):
    _, test = tiny_splits
    torch.manual_seed(0)
    quality = sample_quality(SmallCNN(), test.images, test.images)
    assert quality["fid"] == pytest.approx(0, abs=1e-6)
    assert 1 <= quality["inception_score"] <= 10


@pytest.mark.slow
@pytest.mark.skipif(not (SHARED_DATA / "MNIST" / "raw").is_dir(), reason=f"no MNIST files in {SHARED_DATA}")
def test_reaches_985_percent_on_real_mnist(tmp_path):
    # A private copy: torchvision unpacks next to the raw files, and ../shared stays read-only.
    shutil.copytree(SHARED_DATA / "MNIST" / "raw", tmp_path / "MNIST" / "raw")
    train, test = load("mnist", tmp_path)
    start = time.perf_counter()
    _, accuracy = train_classifier(train, test)
    print(f"classifier: test accuracy {accuracy:.4f} after {time.perf_counter() - start:.0f} s")
    assert accuracy >= 0.985
