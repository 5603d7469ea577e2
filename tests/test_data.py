import pytest
import torch

from tests.conftest import make_mnist_like
from vae_sweep.config import UserError
from vae_sweep.data import batch_indices, file_md5s, load, raw_folder


def test_splits_are_float_images_in_unit_range(tiny_data):
    train, test = load("mnist", tiny_data, download=False)
    assert train.images.shape == (600, 784) and test.images.shape == (200, 784)
    assert train.images.dtype == torch.float32
    assert 0.0 <= train.images.min() and train.images.max() <= 1.0 and train.images.max() > 0.5
    assert sorted(train.labels.unique().tolist()) == list(range(10))


def test_batches_cover_every_image_once_and_repeat_with_the_seed():
    first = batch_indices(10, 4, torch.Generator().manual_seed(3))
    again = batch_indices(10, 4, torch.Generator().manual_seed(3))
    assert [len(b) for b in first] == [4, 4, 2]
    assert sorted(torch.cat(first).tolist()) == list(range(10))
    assert all(torch.equal(a, b) for a, b in zip(first, again, strict=True))


def test_missing_data_offline_names_folder_and_files(tmp_path):
    with pytest.raises(UserError) as error:
        load("fashion_mnist", tmp_path, download=False)
    message = str(error.value)
    assert str(tmp_path / "FashionMNIST" / "raw") in message
    assert "t10k-labels-idx1-ubyte.gz" in message and "VAE_SWEEP_DATA_DIR" in message


def test_truncated_idx_file_is_named(tmp_path):
    make_mnist_like(tmp_path)
    images = raw_folder("mnist", tmp_path) / "t10k-images-idx3-ubyte"
    images.write_bytes(images.read_bytes()[:-100])
    with pytest.raises(UserError, match="t10k-images-idx3-ubyte is truncated or corrupted"):
        load("mnist", tmp_path, download=False)


def test_md5s_cover_the_four_files(tiny_data):
    sums = file_md5s("mnist", tiny_data)
    assert len(sums) == 4 and all(len(value) == 32 for value in sums.values())
