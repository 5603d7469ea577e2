import hashlib

import pytest
import torch
from omegaconf import OmegaConf
from torchvision import datasets

from tests.conftest import make_mnist_like
from vae_sweep.config import Binarize, DataConfig
from vae_sweep.core.data import (
    Split,
    batch_indices,
    binarize_split,
    file_md5s,
    load,
    prepare_data,
    raw_folder,
    to_float,
)
from vae_sweep.errors import UserError


def test_splits_are_grey_levels_read_as_floats_in_unit_range(tiny_data):
    train, test = load("mnist", tiny_data, download=False)
    assert train.images.shape == (600, 784) and test.images.shape == (200, 784)
    assert train.images.dtype == torch.uint8
    floats = train.floats()
    assert floats.dtype == torch.float32
    assert 0.0 <= floats.min() and floats.max() <= 1.0 and floats.max() > 0.5
    assert sorted(train.labels.unique().tolist()) == list(range(10))
    assert train.labels.dtype == torch.int64


def test_pixels_are_the_floats_torchvision_loads(tiny_data):
    """Grey levels read as floats are what converting torchvision's whole split gives, bit for bit."""
    for name, cls in (("mnist", datasets.MNIST), ("fashion_mnist", datasets.FashionMNIST)):
        for train, split in zip((True, False), load(name, tiny_data, download=False), strict=True):
            reference = cls(root=str(tiny_data), train=train, download=False)
            expected = reference.data.reshape(len(reference.data), -1).to(torch.float32).div_(255)
            assert torch.equal(split.floats(), expected)
            assert torch.equal(split.labels, reference.targets)


def test_rows_and_chunks_convert_exactly_like_the_whole_split():
    # Every grey level, in every position of a row.
    images = (torch.arange(300 * 784) % 256).to(torch.uint8).reshape(300, 784)
    split = Split(images, torch.zeros(300, dtype=torch.int64))
    whole = images.to(torch.float32).div_(255)
    assert torch.equal(split.floats(), whole)
    index = torch.randperm(300, generator=torch.Generator().manual_seed(0))[:77]
    assert torch.equal(split.rows(index), whole[index])
    assert torch.equal(torch.cat(list(split.chunks(64))), whole)
    assert torch.equal(to_float(images[5:9]), whole[5:9])
    assert torch.equal(Split(whole, split.labels).rows(index), whole[index])
    assert to_float(whole) is whole


def test_binarized_split_draws_what_one_call_on_the_whole_split_draws(tiny_data):
    train, _ = load("mnist", tiny_data, download=False)
    expected = torch.bernoulli(train.floats(), generator=torch.Generator().manual_seed(3))
    binarized = binarize_split(train, torch.Generator().manual_seed(3))
    assert binarized.images.dtype == torch.uint8 and set(binarized.images.unique().tolist()) <= {0, 255}
    assert torch.equal(binarized.floats(), expected)
    assert binarized.labels is train.labels


def test_pixel_statistics_are_torchs_float_reductions_computed_once(tiny_data):
    train, _ = load("mnist", tiny_data, download=False)
    floats = train.floats()
    assert train.pixel_statistics() == (floats.mean().item(), floats.std().item())
    train.floats = lambda: pytest.fail("statistics computed twice")
    train.pixel_statistics()


def test_moving_to_the_cpu_keeps_grey_levels(tiny_data):
    train, _ = load("mnist", tiny_data, download=False)
    assert train.to(torch.device("cpu")).images.dtype == torch.uint8


def test_images_and_labels_that_disagree_are_named(tmp_path):
    make_mnist_like(tmp_path)
    labels = raw_folder("mnist", tmp_path) / "t10k-labels-idx1-ubyte"
    make_mnist_like(tmp_path / "other", test=150)
    labels.write_bytes((raw_folder("mnist", tmp_path / "other") / "t10k-labels-idx1-ubyte").read_bytes())
    with pytest.raises(UserError, match="t10k-images-idx3-ubyte holds"):
        load("mnist", tmp_path, download=False)


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
    assert len(sums) == 4
    for filename, digest in sums.items():
        assert digest == hashlib.md5((raw_folder("mnist", tiny_data) / filename).read_bytes()).hexdigest()


def prepared(tiny_data, binarize: str, seed: int, validation: int = 0):
    data_cfg = OmegaConf.structured(
        DataConfig(root=str(tiny_data), binarize=Binarize(binarize), download=False, validation=validation)
    )
    return prepare_data(data_cfg, torch.device("cpu"), seed)


def test_the_binarized_test_set_depends_on_neither_the_seed_nor_the_mode(tiny_data):
    fixed0, fixed1, dynamic1 = (
        prepared(tiny_data, mode, seed) for mode, seed in (("fixed", 0), ("fixed", 1), ("dynamic", 1))
    )
    assert torch.equal(fixed0.test.images, fixed1.test.images) and torch.equal(fixed0.test.images, dynamic1.test.images)
    assert set(fixed0.test.images.unique().tolist()) == {0, 255}
    assert not torch.equal(fixed0.train.images, fixed1.train.images)  # the training draw is the seed's


def test_binarized_modes_evaluate_train_and_train_the_classifier_on_seed_free_copies(tiny_data):
    fixed0, fixed1, dynamic0, dynamic1 = (
        prepared(tiny_data, mode, seed) for mode in ("fixed", "dynamic") for seed in (0, 1)
    )
    # Dynamic training draws each batch afresh from grey levels; its train-side numbers use one fixed draw.
    assert not torch.equal(dynamic0.train.images, dynamic0.train_eval.images)
    assert set(dynamic0.train_eval.images.unique().tolist()) == {0, 255}
    assert torch.equal(dynamic0.train_eval.images, dynamic1.train_eval.images)
    # Fixed mode evaluates train on what it trained on.
    assert fixed0.train_eval is fixed0.train
    for data in (fixed1, dynamic0, dynamic1):
        assert torch.equal(data.classifier_train.images, fixed0.classifier_train.images)


def test_grey_levels_use_the_same_split_everywhere(tiny_data):
    data = prepared(tiny_data, "none", 0)
    assert data.train is data.train_eval is data.classifier_train
    assert data.test.images.dtype == torch.uint8 and len(set(data.test.images.unique().tolist())) > 2


def test_a_validation_split_is_held_out_of_training_the_same_for_every_seed(tiny_data):
    whole = prepared(tiny_data, "none", 0)
    assert whole.val is None and list(whole.evaluated()) == ["test"]
    seed0, seed1 = prepared(tiny_data, "none", 0, validation=100), prepared(tiny_data, "none", 1, validation=100)
    assert list(seed0.evaluated()) == ["test", "val"]
    assert len(seed0.val) == 100 and len(seed0.train) == len(whole.train) - 100
    assert torch.equal(seed0.val.images, seed1.val.images) and torch.equal(seed0.train.images, seed1.train.images)
    # Held out, not copied: no validation image is among the training images.
    rows = {bytes(row.tolist()) for row in seed0.train.images}
    assert not any(bytes(row.tolist()) in rows for row in seed0.val.images)
    assert seed0.train_eval is seed0.train and seed0.classifier_train is seed0.train


def test_a_binarized_validation_split_is_drawn_once_from_a_constant_seed(tiny_data):
    fixed0, fixed1, dynamic1 = (
        prepared(tiny_data, mode, seed, validation=50) for mode, seed in (("fixed", 0), ("fixed", 1), ("dynamic", 1))
    )
    assert set(fixed0.val.images.unique().tolist()) == {0, 255}
    assert torch.equal(fixed0.val.images, fixed1.val.images) and torch.equal(fixed0.val.images, dynamic1.val.images)
    assert len(fixed0.train) == len(fixed0.classifier_train) == len(dynamic1.train_eval) == 550


def test_a_validation_split_as_large_as_the_training_set_is_refused(tiny_data):
    with pytest.raises(UserError, match="data.validation: 600; allowed: 0 .none. up to 599"):
        prepared(tiny_data, "none", 0, validation=600)
