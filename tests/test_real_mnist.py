"""On the real MNIST files (skipped where ../shared/data is absent)."""

import shutil

import pytest
import torch

from tests.conftest import SHARED_DATA, fit_plainly, small_model, training_settings
from vae_sweep.core.data import load

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not (SHARED_DATA / "MNIST" / "raw").is_dir(), reason=f"no MNIST files in {SHARED_DATA}"),
]


@pytest.fixture(scope="module")
def mnist_root(tmp_path_factory):
    """A private copy of the raw files: torchvision unpacks next to them, and ../shared stays read-only."""
    root = tmp_path_factory.mktemp("mnist")
    shutil.copytree(SHARED_DATA / "MNIST" / "raw", root / "MNIST" / "raw")
    return root


def test_label_counts_match_the_published_ones(mnist_root):
    train, test = load("mnist", mnist_root)
    assert torch.bincount(train.labels).tolist() == [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
    assert torch.bincount(test.labels).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


class Discard:
    def log_epoch(self, epoch, metrics):
        pass


def test_one_epoch_of_the_pytorch_examples_shape_beats_130_nats(mnist_root):
    torch.manual_seed(0)
    train, test = load("mnist", mnist_root)
    model = small_model(latent=20, hidden=[400])
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    training = training_settings(epochs=1, batch_size=128, eval_batch_size=2000, eval_seed=1234)
    history = fit_plainly(model, optimizer, train, test, training, Discard())
    assert history[0]["loss/test"] < 130
