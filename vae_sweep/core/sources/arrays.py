"""`data=arrays`: an .npz holding x_train and x_test (and y_train, y_test for labels), as numpy.savez writes it.

Images are N x H x W (grey) or N x H x W x C (C = 1 or 3), uint8 grey levels 0..255 or floats in [0, 1]. uint8 stays
uint8 and floats become float32, never rounded to grey levels.
"""

from __future__ import annotations

import hashlib
import zipfile
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from vae_sweep.core.sources import COLOUR, GREY, Loaded, Pixels
from vae_sweep.errors import UserError

IMAGES = ("x_train", "x_test")
LABELS = ("y_train", "y_test")
# ITU-R 601-2 luma, the weights Pillow's convert("L") uses: grey from RGB the same way for files and arrays.
LUMA = (0.299, 0.587, 0.114)
# Images converted at a time where data.size or data.channels converts (floats of a few MB).
CHUNK = 1024


def _images(array: np.ndarray, key: str, path: Path) -> torch.Tensor:
    """An array of images as (N, C, H, W) uint8 or float32, after checking its shape, dtype and range."""
    where = f"{path}: {key}"
    if array.ndim == 3:
        array = array[..., None]
    if array.ndim != 4 or array.shape[-1] not in (GREY, COLOUR) or 0 in array.shape:
        raise UserError(f"{where} has shape {array.shape}; allowed: N x H x W, or N x H x W x C with C = 1 or 3.")
    if array.dtype == np.uint8:
        images = torch.from_numpy(array)
    elif np.issubdtype(array.dtype, np.floating):
        if not (np.isfinite(array).all() and array.min() >= 0 and array.max() <= 1):
            raise UserError(f"{where} holds floats outside [0, 1] (or not finite); allowed: pixels in [0, 1].")
        images = torch.from_numpy(array.astype(np.float32, copy=False))
    else:
        raise UserError(f"{where} has dtype {array.dtype}; allowed: uint8 (0..255) or float in [0, 1].")
    return images.permute(0, 3, 1, 2)


def _labels(array: np.ndarray, key: str, count: int, path: Path) -> torch.Tensor:
    if array.shape != (count,) or not np.issubdtype(array.dtype, np.integer) or (count and array.min() < 0):
        raise UserError(
            f"{path}: {key} has shape {array.shape} and dtype {array.dtype}; allowed: {count} integer labels >= 0, "
            "one per image."
        )
    return torch.from_numpy(array.astype(np.int64))


def _convert(images: torch.Tensor, pixels: Pixels) -> tuple[torch.Tensor, tuple[int, int, int]]:
    """(N, C, H, W) images with the channels and side `pixels` asks for, in their own dtype, as flat rows; and
    their (C, H, W)."""
    channels = pixels.channels or images.shape[1]
    side = (pixels.size, pixels.size) if pixels.size else tuple(images.shape[2:])
    if channels == images.shape[1] and side == tuple(images.shape[2:]):
        return images.reshape(len(images), -1).contiguous(), (channels, *side)
    out = torch.empty((len(images), channels * side[0] * side[1]), dtype=images.dtype)
    for rows, chunk in zip(out.split(CHUNK), images.split(CHUNK), strict=True):
        chunk = chunk.float()
        if chunk.shape[1] != channels:
            weights = torch.tensor(LUMA).view(1, COLOUR, 1, 1)
            chunk = (chunk * weights).sum(1, keepdim=True) if channels == GREY else chunk.expand(-1, COLOUR, -1, -1)
        if side != tuple(chunk.shape[2:]):
            chunk = F.interpolate(chunk, size=side, mode="bilinear", antialias=True, align_corners=False)
        if images.dtype == torch.uint8:
            chunk = chunk.round().clamp(0, 255)
        rows.copy_(chunk.reshape(len(chunk), -1))
    return out, (channels, *side)


def _read(path: Path) -> dict[str, np.ndarray]:
    if not path.exists():
        raise UserError(f"data.path={path} does not exist; allowed: an .npz file with {' and '.join(IMAGES)}.")
    try:
        with np.load(path, allow_pickle=False) as archive:
            if not hasattr(archive, "files"):
                raise ValueError("a single array, not an .npz archive")
            present = set(archive.files)
            missing = [key for key in IMAGES if key not in present]
            if missing:
                raise UserError(
                    f"{path} lacks {', '.join(missing)} (it holds {', '.join(sorted(present)) or 'nothing'}); "
                    f"allowed: {', '.join(IMAGES)} and optionally {', '.join(LABELS)}."
                )
            return {key: archive[key] for key in (*IMAGES, *LABELS) if key in present}
    except (ValueError, OSError, zipfile.BadZipFile) as error:
        raise UserError(f"data.path={path} is not a readable .npz file ({error}).") from None


def load(path: Path, pixels: Pixels, test_fraction: float | None = None) -> Loaded:
    """Both splits of the .npz at `path`; `test_fraction` is for folders (an .npz names its test images)."""
    arrays = _read(path)
    if (LABELS[0] in arrays) != (LABELS[1] in arrays):
        raise UserError(f"{path} holds only one of {' and '.join(LABELS)}; allowed: both, or neither.")
    train, test = (_images(arrays[key], key, path) for key in IMAGES)
    if train.shape[1:] != test.shape[1:]:
        raise UserError(
            f"{path}: x_train's images are {tuple(train.shape[1:])} but x_test's {tuple(test.shape[1:])} "
            "(channels, height, width); allowed: the same in both."
        )
    labels = [
        _labels(arrays[key], key, len(x), path) if key in arrays else None
        for key, x in zip(LABELS, (train, test), strict=True)
    ]
    (train, shape), (test, _) = _convert(train, pixels), _convert(test, pixels)
    with open(path, "rb") as handle:
        md5 = hashlib.file_digest(handle, "md5").hexdigest()
    return Loaded(
        name=path.resolve().stem,
        train=(train, labels[0]),
        test=(test, labels[1]),
        shape=shape,
        split_md5s={split: {path.name: md5} for split in ("train", "test")},
        location=path.resolve().parent,
    )
