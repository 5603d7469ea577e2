"""Images a user brings: a folder of image files (`data=images`) or an .npz of arrays (`data=arrays`), loaded into
the same in-memory splits as MNIST's IDX files: (N, C*H*W) uint8 grey levels, or float32 in [0, 1]."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from torch import Tensor

GREY, COLOUR = 1, 3  # the channel counts a source gives: data.channels converts between them


@dataclass(frozen=True)
class Pixels:
    """What the `data` node asks of every image: a side to resize to and a channel count; None keeps them."""

    size: int | None = None
    channels: int | None = None


@dataclass
class Loaded:
    """One source read into memory: both splits' pixels and labels, their geometry, and what they came from."""

    name: str  # lineage's dataset name: the folder's or the file's name
    train: tuple[Tensor, Tensor | None]  # (N, C*H*W) pixels, (N,) int64 labels or None
    test: tuple[Tensor, Tensor | None]
    shape: tuple[int, int, int]  # channels, height, width
    split_md5s: dict[str, dict[str, str]]  # split -> {what it was read from: md5}, as tags and lineage record them
    location: Path
    skipped: int = 0  # files that are not images (folders only)

    @property
    def digest(self) -> str:
        """One MD5 over every file the pixels and labels came from: part of a run's fingerprint."""
        parts = [
            f"{split}:{name}:{md5}" for split, sums in sorted(self.split_md5s.items()) for name, md5 in sums.items()
        ]
        return hashlib.md5("\n".join(sorted(parts)).encode()).hexdigest()


def load_source(kind: str, path: str, pixels: Pixels, test_fraction: float | None) -> Loaded:
    """The data of `data=images` or `data=arrays` at `path`."""
    from vae_sweep.core.sources import arrays, folder

    loaders: dict[str, Callable[[Path, Pixels, float | None], Loaded]] = {"images": folder.load, "arrays": arrays.load}
    return loaders[kind](Path(path).expanduser(), pixels, test_fraction)
