"""MNIST-style datasets held in memory as one float tensor per split, batched by a seeded permutation."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor
from torchvision import datasets

from vae_sweep.config import UserError

DATASETS = {"mnist": datasets.MNIST, "fashion_mnist": datasets.FashionMNIST}

# The four IDX files every MNIST-style dataset consists of, as torchvision names them once unpacked.
RAW_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


@dataclass
class Split:
    images: Tensor  # (N, 784) float32 in [0, 1]
    labels: Tensor  # (N,) int64

    def __len__(self) -> int:
        return self.images.shape[0]

    def to(self, device: torch.device) -> "Split":
        return Split(self.images.to(device), self.labels.to(device))


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
    """One split as (N, 784) floats in [0, 1]; downloads through torchvision when files are missing."""
    if name not in DATASETS:
        raise UserError(f"Unknown dataset {name!r}; allowed: {', '.join(DATASETS)}.")
    for filename in RAW_FILES["train" if train else "test"]:
        path = raw_folder(name, root) / filename
        if path.exists():
            check_idx(path)
    try:
        dataset = DATASETS[name](root=str(root), train=train, download=download)
    except RuntimeError as error:
        reason = "download=false" if not download else "download failed: " + str(error).splitlines()[0]
        raise UserError(_missing_message(name, root, reason)) from None
    images = dataset.data.reshape(len(dataset.data), -1).to(torch.float32).div_(255)
    return Split(images, dataset.targets.long())


def load(name: str, root: str | os.PathLike, download: bool = True) -> tuple[Split, Split]:
    return load_split(name, root, True, download), load_split(name, root, False, download)


def binarize(images: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """Bernoulli draws with the grey levels as probabilities (the binarized-MNIST protocol)."""
    return torch.bernoulli(images, generator=generator)


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
                sums[filename] = hashlib.md5(path.read_bytes()).hexdigest()
    return sums
