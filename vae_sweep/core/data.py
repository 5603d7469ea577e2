"""MNIST-style datasets held in memory as one tensor of grey levels per split, batched by a seeded permutation."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import torch
from torch import Tensor
from torchvision import datasets

from vae_sweep.errors import UserError

DATASETS = {"mnist": datasets.MNIST, "fashion_mnist": datasets.FashionMNIST}
# (channels, height, width) of each dataset's images; a Split holds them flattened, a model is built for this shape.
SHAPES = {"mnist": (1, 28, 28), "fashion_mnist": (1, 28, 28)}

GREY_LEVELS = 255
# Rows converted to floats at a time where a whole split is converted, binarized, hashed or moved (3 MB of floats).
CHUNK_ROWS = 1024

# The four IDX files every MNIST-style dataset consists of, as torchvision names them once unpacked.
RAW_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


def to_float(pixels: Tensor) -> Tensor:
    """Pixels as float32 in [0, 1]: uint8 grey levels k become k / 255, the values torchvision's ToTensor gives;
    float pixels pass through as they are. Row by row this gives the same floats as converting a whole split."""
    if pixels.dtype == torch.uint8:
        return pixels.to(torch.float32).div_(GREY_LEVELS)
    return pixels


@dataclass
class Split:
    # (N, 784) uint8 grey levels k standing for k / 255 (a quarter of the memory of floats), or float32 in [0, 1].
    # Read the pixels as floats through rows(), chunks() or floats() (or to_float on a slice), whatever the storage.
    images: Tensor
    labels: Tensor  # (N,) int64
    _statistics: tuple[float, float] | None = field(default=None, init=False, repr=False, compare=False)

    def __len__(self) -> int:
        return self.images.shape[0]

    def rows(self, index: Tensor) -> Tensor:
        """The images at these row indices (on the images' device) as float32 in [0, 1].

        index_select copies whole rows; indexing with [] gathers element by element, ~13x slower for 128 uint8 rows,
        which made an epoch ~1% slower than gathering from floats did.
        """
        return to_float(torch.index_select(self.images, 0, index))

    def chunks(self, size: int) -> Iterator[Tensor]:
        """Consecutive runs of `size` images (the last one may be short), each as float32 in [0, 1]."""
        for chunk in self.images.split(size):
            yield to_float(chunk)

    def floats(self) -> Tensor:
        """All images as one float32 tensor in [0, 1]: a new tensor four times the size when stored as grey levels."""
        return to_float(self.images)

    def pixel_statistics(self) -> tuple[float, float]:
        """Mean and standard deviation over all pixels as floats, computed on the first call and kept.

        torch's reductions over the float pixels, as a classifier's standardization has always used them (the exact
        mean can differ from theirs in the last bit, and that changes the classifier): for grey levels this takes a
        float copy of the whole split for a moment, so a job asks early, while it holds little else.
        """
        if self._statistics is None:
            images = self.floats()
            self._statistics = (images.mean().item(), images.std().item())
        return self._statistics

    def to(self, device: torch.device) -> "Split":
        device = torch.device(device)
        if device.type == "cpu" or self.images.is_floating_point():
            return Split(self.images.to(device), self.labels.to(device))
        # An accelerator gets float pixels converted here on the CPU, as they always were: its own division by 255
        # may round differently. A chunk at a time keeps the CPU copy small.
        images = torch.empty(self.images.shape, dtype=torch.float32, device=device)
        for rows, chunk in zip(images.split(CHUNK_ROWS), self.chunks(CHUNK_ROWS), strict=True):
            rows.copy_(chunk)
        return Split(images, self.labels.to(device))


def raw_folder(name: str, root: str | os.PathLike) -> Path:
    return Path(root) / DATASETS[name].__name__ / "raw"


def _missing_message(name: str, root: str | os.PathLike, reason: str) -> str:
    folder = raw_folder(name, root)
    files = ", ".join(f + ".gz" for pair in RAW_FILES.values() for f in pair)
    return (
        f"{name} data not found in {folder} ({reason}). Expected the files {files} (or unpacked). "
        f"Copy them there, point data.root (or $VAE_SWEEP_DATA_DIR) at a folder holding "
        f"{DATASETS[name].__name__}/raw/, "
        "or run once with network access so torchvision downloads them."
    )


def check_idx(path: Path) -> None:
    """Fail with the file's name when an IDX file's header and length disagree (truncated or corrupted)."""
    with open(path, "rb") as handle:
        header = handle.read(4)
        if len(header) < 4 or header[0] != 0 or header[1] != 0 or header[2] != 8 or not 1 <= header[3] <= 3:
            raise UserError(f"{path} is not an IDX file of unsigned bytes (bad header); delete it and fetch it again.")
        dims = [int.from_bytes(handle.read(4), "big") for _ in range(header[3])]
    count = 1
    for dim in dims:
        count *= dim
    size = path.stat().st_size
    if size != 4 + 4 * len(dims) + count:
        raise UserError(
            f"{path} is truncated or corrupted: its header promises {count} values, "
            f"the file holds {size - 4 - 4 * len(dims)}; delete it and fetch it again."
        )


def load_split(name: str, root: str | os.PathLike, train: bool, download: bool = True) -> Split:
    """One split as (N, 784) uint8 grey levels; downloads through torchvision when files are missing."""
    if name not in DATASETS:
        raise UserError(f"Unknown dataset {name!r}; allowed: {', '.join(DATASETS)}.")
    image_file, label_file = RAW_FILES["train" if train else "test"]
    for filename in (image_file, label_file):
        path = raw_folder(name, root) / filename
        if path.exists():
            check_idx(path)
    try:
        dataset = DATASETS[name](root=str(root), train=train, download=download)
    except RuntimeError as error:
        reason = "download=false" if not download else "download failed: " + str(error).splitlines()[0]
        raise UserError(_missing_message(name, root, reason)) from None
    if len(dataset.data) != len(dataset.targets):
        raise UserError(
            f"{raw_folder(name, root)}: {image_file} holds {len(dataset.data)} images and {label_file} "
            f"{len(dataset.targets)} labels; delete them and fetch them again."
        )
    # Kept as torchvision's uint8 grey levels: a quarter of the memory of floats.
    return Split(dataset.data.reshape(len(dataset.data), -1), dataset.targets.long())


def load(name: str, root: str | os.PathLike, download: bool = True) -> tuple[Split, Split]:
    return load_split(name, root, True, download), load_split(name, root, False, download)


def binarize(images: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """Bernoulli draws with the grey levels as probabilities (the binarized-MNIST protocol)."""
    return torch.bernoulli(to_float(images), generator=generator)


def binarize_split(split: Split, generator: torch.Generator | None = None) -> Split:
    """binarize() of a whole split, a chunk at a time, kept as grey levels 0 and 255 (the floats 0.0 and 1.0).

    The draws come out of the generator in the same order as from one call on the whole split, so the pixels are
    the same.
    """
    images = torch.empty(split.images.shape, dtype=torch.uint8, device=split.images.device)
    for rows, chunk in zip(images.split(CHUNK_ROWS), split.chunks(CHUNK_ROWS), strict=True):
        rows.copy_(torch.bernoulli(chunk, generator=generator).mul_(GREY_LEVELS))
    return Split(images, split.labels)


def batch_indices(n: int, batch_size: int, generator: torch.Generator) -> tuple[Tensor, ...]:
    """A fresh seeded permutation of 0..n-1, cut into batches (the last one may be short)."""
    return torch.randperm(n, generator=generator).split(batch_size)


def file_md5s(name: str, root: str | os.PathLike) -> dict[str, str]:
    """MD5 of each raw file the dataset was read from, to tell later whether the data changed."""
    folder = raw_folder(name, root)
    sums = {}
    for pair in RAW_FILES.values():
        for filename in pair:
            path = folder / filename
            if path.exists():
                with open(path, "rb") as handle:  # in pieces: the training images alone are 47 MB
                    sums[filename] = hashlib.file_digest(handle, "md5").hexdigest()
    return sums


# Seeds of the binarized copies every job evaluates on, whatever training.seed and data.binarize are: the test set,
# and the copy of the training set that train-side numbers and the FID/IS classifier use in binarized modes.
EVAL_BINARIZE_SEEDS = {"test": 20151, "train": 20152}


@dataclass
class Data:
    """The splits of one job, on its device, binarized as its `data` node asks."""

    train: Split  # what batches are drawn from: grey levels in dynamic mode, where each batch is binarized afresh
    test: Split  # every test number's images: binarized once from EVAL_BINARIZE_SEEDS in both binarized modes
    train_eval: Split  # the training set as train-side evaluation sees it: the same kind of pixels as test
    classifier_train: Split  # the FID/IS classifier's training images: the same for every training.seed
    shape: tuple[int, int, int]  # (channels, height, width) of an image; splits hold rows of C * H * W pixels


def prepare_data(data_cfg, device: torch.device, seed: int) -> Data:
    """A `data` config node's splits on the device; fixed binarization draws the training set from `seed`."""
    train, test = load(data_cfg.name.value, data_cfg.root, data_cfg.download)
    shape = SHAPES[data_cfg.name.value]
    mode = data_cfg.binarize.value
    if mode == "none":
        train, test = train.to(device), test.to(device)
        return Data(train, test, train, train, shape)
    test = binarize_split(test, torch.Generator().manual_seed(EVAL_BINARIZE_SEEDS["test"])).to(device)
    fixed_copy = binarize_split(train, torch.Generator().manual_seed(EVAL_BINARIZE_SEEDS["train"])).to(device)
    if mode == "fixed":
        trained_on = binarize_split(train, torch.Generator().manual_seed(seed)).to(device)
        return Data(trained_on, test, trained_on, fixed_copy, shape)
    return Data(train.to(device), test, fixed_copy, fixed_copy, shape)
