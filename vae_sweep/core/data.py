"""Datasets held in memory as one tensor of pixels per split, batched by a seeded permutation: MNIST-style IDX files
here, a user's own folders and arrays through core.sources."""

from __future__ import annotations

import gzip
import hashlib
import math
import os
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import torch
from torch import Tensor

from vae_sweep.core.sources import Loaded, Pixels, load_source
from vae_sweep.errors import UserError

# Dataset -> its folder under data.root, as torchvision names it (and its dataset class, which downloads it).
DATASETS = {"mnist": "MNIST", "fashion_mnist": "FashionMNIST"}
# (channels, height, width) of each dataset's images; a Split holds them flattened, a model is built for this shape.
SHAPES = {"mnist": (1, 28, 28), "fashion_mnist": (1, 28, 28)}

MNIST_SHAPE = SHAPES["mnist"]  # a source of a user's own images gives its own shape

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
    # (N, C*H*W) uint8 grey levels k standing for k / 255 (a quarter of the memory of floats), or float32 in [0, 1].
    # Read the pixels as floats through rows(), chunks() or floats() (or to_float on a slice), whatever the storage.
    images: Tensor
    labels: Tensor | None  # (N,) int64; None for a user's images without classes
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
        labels = None if self.labels is None else self.labels.to(device)
        if device.type == "cpu" or self.images.is_floating_point():
            return Split(self.images.to(device), labels)
        # An accelerator gets float pixels converted here on the CPU, as they always were: its own division by 255
        # may round differently. A chunk at a time keeps the CPU copy small.
        images = torch.empty(self.images.shape, dtype=torch.float32, device=device)
        for rows, chunk in zip(images.split(CHUNK_ROWS), self.chunks(CHUNK_ROWS), strict=True):
            rows.copy_(chunk)
        return Split(images, labels)


def raw_folder(name: str, root: str | os.PathLike) -> Path:
    return Path(root) / DATASETS[name] / "raw"


def _missing_message(name: str, root: str | os.PathLike, reason: str) -> str:
    folder = raw_folder(name, root)
    files = ", ".join(f + ".gz" for pair in RAW_FILES.values() for f in pair)
    return (
        f"{name} data not found in {folder} ({reason}). Expected the files {files} (or unpacked). "
        f"Copy them there, point data.root (or $VAE_SWEEP_DATA_DIR) at a folder holding "
        f"{DATASETS[name]}/raw/, "
        "or run once with network access so torchvision downloads them."
    )


def read_idx(path: Path) -> Tensor:
    """An IDX file of unsigned bytes as a uint8 tensor of the shape its header gives; a file whose header and length
    disagree (truncated or corrupted) fails with its name."""
    raw = bytearray(path.read_bytes())
    if len(raw) < 4 or raw[:3] != b"\x00\x00\x08" or not 1 <= raw[3] <= 3:
        raise UserError(f"{path} is not an IDX file of unsigned bytes (bad header); delete it and fetch it again.")
    start = 4 + 4 * raw[3]
    dims = [int.from_bytes(raw[4 + 4 * axis : 8 + 4 * axis], "big") for axis in range(raw[3])]
    count = math.prod(dims)
    if len(raw) != start + count:
        raise UserError(
            f"{path} is truncated or corrupted: its header promises {count} values, "
            f"the file holds {len(raw) - start}; delete it and fetch it again."
        )
    if count == 0:
        return torch.empty(dims, dtype=torch.uint8)
    return torch.frombuffer(raw, dtype=torch.uint8, offset=start).reshape(dims)


def _unpacked(folder: Path, filename: str) -> bool:
    """Whether the IDX file is there, unpacking it from its .gz beside it (as torchvision does) if only that is."""
    path, packed = folder / filename, folder / f"{filename}.gz"
    if path.exists():
        return True
    if not packed.exists():
        return False
    try:
        with gzip.open(packed) as source:
            content = source.read()
    except (OSError, EOFError, zlib.error) as error:
        raise UserError(f"{packed} cannot be unpacked ({error}); delete it and fetch it again.") from None
    temporary = path.with_name(f"{filename}.{os.getpid()}.tmp")  # parallel jobs may unpack it at the same moment
    temporary.write_bytes(content)
    os.replace(temporary, path)
    return True


def _download(name: str, root: str | os.PathLike) -> None:
    """All four files of the dataset, through torchvision (imported here only: with its models, it takes seconds)."""
    from torchvision import datasets

    try:
        getattr(datasets, DATASETS[name])(root=str(root), train=False, download=True)
    except RuntimeError as error:
        raise UserError(_missing_message(name, root, "download failed: " + str(error).splitlines()[0])) from None


def load_split(name: str, root: str | os.PathLike, train: bool, download: bool = True) -> Split:
    """One split as (N, C*H*W) uint8 grey levels, read from its IDX files (or their .gz); downloads them through
    torchvision when they are missing."""
    if name not in DATASETS:
        raise UserError(f"Unknown dataset {name!r}; allowed: {', '.join(DATASETS)}.")
    folder = raw_folder(name, root)
    image_file, label_file = RAW_FILES["train" if train else "test"]
    if not all(_unpacked(folder, filename) for filename in (image_file, label_file)):
        if not download:
            raise UserError(_missing_message(name, root, "download=false"))
        _download(name, root)
    images, labels = read_idx(folder / image_file), read_idx(folder / label_file)
    if len(images) != len(labels):
        raise UserError(
            f"{folder}: {image_file} holds {len(images)} images and {label_file} {len(labels)} labels; "
            "delete them and fetch them again."
        )
    # Kept as grey levels: a quarter of the memory of floats.
    return Split(images.reshape(len(images), -1), labels.long())


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


def load_own(data_cfg) -> Loaded | None:
    """A user's own images (data=images, data=arrays) in memory, or None for the MNIST datasets: prepare_data reads
    those itself."""
    if data_cfg.name.value in DATASETS:
        return None
    pixels = Pixels(data_cfg.size, data_cfg.channels)
    return load_source(data_cfg.name.value, data_cfg.path, pixels, data_cfg.get("test_fraction"))


def data_md5s(data_cfg, own: Loaded | None) -> dict[str, str]:
    """MD5s of what the job's data was read from, as its tags record them: per raw file, or per split of a folder."""
    if own is None:
        return file_md5s(data_cfg.name.value, data_cfg.root)
    return {name: md5 for sums in own.split_md5s.values() for name, md5 in sums.items()}


# Seeds of the binarized copies every job evaluates on, whatever training.seed and data.binarize are: the test set,
# the validation split, and the copy of the training set that train-side numbers and the FID/IS classifier use in
# binarized modes.
EVAL_BINARIZE_SEEDS = {"test": 20151, "train": 20152, "val": 20153}
# The draw of the images data.validation holds out of the training set: one constant, so that every training.seed
# (and every trial of a search) trains on the same images and is judged on the same held-out ones.
VALIDATION_SEED = 20150


@dataclass
class Data:
    """The splits of one job, on its device, binarized as its `data` node asks."""

    train: Split  # what batches are drawn from: grey levels in dynamic mode, where each batch is binarized afresh
    test: Split  # every test number's images: binarized once from EVAL_BINARIZE_SEEDS in both binarized modes
    train_eval: Split  # the training set as train-side evaluation sees it: the same kind of pixels as test
    classifier_train: Split  # the FID/IS classifier's training images: the same for every training.seed
    shape: tuple[int, int, int] = MNIST_SHAPE  # channels, height, width of every image (rows are flattened)
    val: Split | None = None  # data.validation images held out of train, the same kind of pixels as test

    def evaluated(self) -> dict[str, Split]:
        """The splits evaluated after every epoch, by split name: test, and val where one is held out."""
        return {"test": self.test} | ({} if self.val is None else {"val": self.val})


def hold_out(train: Split, count: int | None) -> tuple[Split, Split | None]:
    """`count` images of the training set drawn from VALIDATION_SEED, and the rest (each in the files' order)."""
    if not count:
        return train, None
    if count >= len(train):
        raise UserError(
            f"Invalid value for data.validation: {count}; allowed: 0 (none) up to {len(train) - 1}, fewer than the "
            f"{len(train)} training images."
        )
    held = torch.zeros(len(train), dtype=torch.bool)
    held[torch.randperm(len(train), generator=torch.Generator().manual_seed(VALIDATION_SEED))[:count]] = True
    labels = (None, None) if train.labels is None else (train.labels[~held], train.labels[held])
    return Split(train.images[~held], labels[0]), Split(train.images[held], labels[1])


def _fixed_binarized(split: Split | None, seed: int, device: torch.device) -> Split | None:
    return None if split is None else binarize_split(split, torch.Generator().manual_seed(seed)).to(device)


def prepare_data(data_cfg, device: torch.device, seed: int, own: Loaded | None = None) -> Data:
    """A `data` config node's splits on the device, from `own` (a user's images, loaded already) or the IDX files;
    fixed binarization draws the training set from `seed`."""
    if own is None:
        (train, test), shape = load(data_cfg.name.value, data_cfg.root, data_cfg.download), SHAPES[data_cfg.name.value]
    else:
        (train, test), shape = (Split(*own.train), Split(*own.test)), own.shape
    train, val = hold_out(train, data_cfg.get("validation"))
    mode = data_cfg.binarize.value
    if mode == "none":
        train, test = train.to(device), test.to(device)
        return Data(train, test, train, train, shape=shape, val=None if val is None else val.to(device))
    test = _fixed_binarized(test, EVAL_BINARIZE_SEEDS["test"], device)
    val = _fixed_binarized(val, EVAL_BINARIZE_SEEDS["val"], device)
    fixed_copy = _fixed_binarized(train, EVAL_BINARIZE_SEEDS["train"], device)
    if mode == "fixed":
        trained_on = _fixed_binarized(train, seed, device)
        return Data(trained_on, test, trained_on, fixed_copy, shape=shape, val=val)
    return Data(train.to(device), test, fixed_copy, fixed_copy, shape=shape, val=val)
