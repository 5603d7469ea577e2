import hashlib
import shutil
import time

import pytest
import torch

from tests.conftest import SHARED_DATA, train_in_process
from vae_sweep.core.data import Split, load, to_float
from vae_sweep.core.metrics import frechet_distance, gaussian_statistics, inception_score
from vae_sweep.evaluation import classifier, quality
from vae_sweep.evaluation.classifier import (
    SCORING_PASS_CPU,
    SmallCNN,
    accuracy,
    features_and_probs,
    fingerprint,
    load_or_train,
    sample_quality,
    scoring_passes,
    train_classifier,
)


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
    trained = load_or_train("mnist", train, test, tmp_path)
    assert (tmp_path / "mnist_cnn.pt").exists() and not list(tmp_path.glob("*.tmp"))
    monkeypatch.setattr(classifier, "train_classifier", refuse_to_train)
    monkeypatch.setattr(classifier, "reference", refuse_to_train)
    loaded = load_or_train("mnist", train, test, tmp_path)
    assert loaded.accuracy == trained.accuracy
    assert trained.newly_trained and not loaded.newly_trained
    assert (loaded.real_fid, loaded.real_inception_score) == (trained.real_fid, trained.real_inception_score)
    for name, tensor in trained.model.state_dict().items():
        assert torch.equal(loaded.model.state_dict()[name], tensor)


def test_the_cached_reference_is_what_scoring_real_images_gives(tiny_splits, tmp_path):
    train, test = tiny_splits
    scorer = load_or_train("mnist", train, test, tmp_path)
    test_features, test_probs = features_and_probs(scorer.model, test.images)
    train_features, _ = features_and_probs(scorer.model, train.images[: len(test)])
    assert scorer.real_fid == frechet_distance(test_features, train_features)
    assert scorer.real_inception_score == inception_score(test_probs)
    assert sample_quality(scorer, test.floats())["fid"] == pytest.approx(0, abs=1e-6)
    # FID(a, b) and FID(b, a) differ only by rounding in the matrix square root.
    assert sample_quality(scorer, train.floats()[: len(test)])["fid"] == pytest.approx(scorer.real_fid, rel=1e-4)


def test_a_cache_without_the_reference_gets_it_added(tiny_splits, tmp_path, monkeypatch):
    train, test = tiny_splits
    scorer = load_or_train("mnist", train, test, tmp_path)
    path = tmp_path / "mnist_cnn.pt"
    payload = torch.load(path, weights_only=True)
    del payload["reference"]
    torch.save(payload, path)
    monkeypatch.setattr(classifier, "train_classifier", refuse_to_train)
    again = load_or_train("mnist", train, test, tmp_path)
    assert again.real_fid == scorer.real_fid and "reference" in torch.load(path, weights_only=True)
    assert not again.newly_trained  # only the reference was added: nothing new to log with the run


def test_other_data_retrains(tiny_splits, tmp_path, monkeypatch):
    train, test = tiny_splits
    calls = []

    def stand_in(train, test, **settings):
        calls.append(len(train))
        return SmallCNN(), 0.5

    monkeypatch.setattr(classifier, "train_classifier", stand_in)
    load_or_train("mnist", train, test, tmp_path)
    load_or_train("mnist", Split(255 - train.images, train.labels), test, tmp_path)
    assert calls == [len(train), len(train)]
    load_or_train("mnist", Split(255 - train.images, train.labels), test, tmp_path)
    assert len(calls) == 2


def test_fingerprint_is_the_digest_of_the_float_pixels(tiny_splits):
    """Classifiers cached before the splits held grey levels were keyed by the float tensors: they stay valid."""
    train, test = tiny_splits
    digest = hashlib.md5()
    for tensor in (train.floats(), train.labels, test.floats(), test.labels):
        digest.update(tensor.numpy())
    assert fingerprint(train, test) == digest.hexdigest()
    assert fingerprint(Split(train.floats(), train.labels), Split(test.floats(), test.labels)) == digest.hexdigest()


def test_scores_are_those_of_passes_of_1000_whatever_the_pixel_storage(tiny_splits):
    """The CPU's smaller passes give each image the outputs that one pass per 1000 images gave (the old batching):
    1013 and 1077 images end in runs of 13 and 77, which stay whole and are taken whole."""
    train, test = tiny_splits
    torch.manual_seed(0)
    model = SmallCNN(*train.pixel_statistics())
    for n in (len(test), 1013, 1077):
        images = test.images.repeat(6, 1)[:n]
        features, probs = features_and_probs(model, to_float(images), batch_size=1000)
        for stored in (images, to_float(images)):
            other_features, other_probs = features_and_probs(model, stored)
            assert torch.equal(other_features, features) and torch.equal(other_probs, probs)
    assert accuracy(model, test) == accuracy(model, Split(test.floats(), test.labels), batch_size=1000)


def test_cpu_passes_stay_within_runs_of_1000_and_are_never_smaller_than_their_run():
    cpu = torch.device("cpu")
    assert scoring_passes(0, cpu) == []
    for n in (7, 49, 50, 99, 1000, 1013, 1077, 10_000):
        passes = scoring_passes(n, cpu)
        assert [start for start, _ in passes] == [0, *[stop for _, stop in passes[:-1]]] and passes[-1][1] == n
        for start, stop in passes:
            run_start = start // 1000 * 1000
            assert stop <= run_start + 1000
            assert stop - start >= min(SCORING_PASS_CPU, min(n, run_start + 1000) - run_start)
            assert stop - start < 2 * SCORING_PASS_CPU
    assert scoring_passes(2500, torch.device("cuda")) == [(0, 1000), (1000, 2000), (2000, 2500)]


def test_standardizes_with_the_float_pixel_statistics(tiny_splits):
    train, test = tiny_splits
    model, _ = train_classifier(train, test, epochs=1, batch_size=64, threads=1)
    floats = train.floats()
    assert model.pixel_mean.item() == torch.tensor(floats.mean().item()).item()
    assert model.pixel_std.item() == torch.tensor(floats.std().item()).item()


def test_samples_are_scored_against_the_test_set(tiny_splits):
    train, test = tiny_splits
    torch.manual_seed(0)
    model = SmallCNN().eval()
    scorer = classifier.Scorer(
        model, 0.0, gaussian_statistics(features_and_probs(model, test.images)[0]), 0.0, 1.0, False
    )
    assert sample_quality(scorer, test.floats())["fid"] == pytest.approx(0, abs=1e-6)
    quality = sample_quality(scorer, train.floats()[:100])
    assert quality["fid"] > 1e-3
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


@pytest.mark.fresh_workdir
def test_the_cache_is_per_user_and_found_from_another_working_directory(workdir, tmp_path_factory, monkeypatch):
    scorers = []
    load_classifier = quality.load_classifier
    monkeypatch.setattr(quality, "load_classifier", lambda *args: scorers.append(load_classifier(*args)) or scorers[-1])
    overrides = (
        "training.epochs=1",
        "model.hidden=[32]",
        "eval.samples=200",
        "eval.iwae_k=2",
        "tracking.enabled=false",
    )
    train_in_process(workdir, *overrides)
    train_in_process(tmp_path_factory.mktemp("another_project"), *overrides)
    assert [scorer.newly_trained for scorer in scorers] == [True, False]
    assert (workdir / "cache" / "vae_sweep" / "classifiers" / "mnist_cnn.pt").exists()  # $XDG_CACHE_HOME
    assert not (workdir / "classifiers").exists()
