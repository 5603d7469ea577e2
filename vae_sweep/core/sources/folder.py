"""`data=images`: a folder of image files, in torchvision's ImageFolder layout, decoded once with Pillow.

Either `train/` and `test/` side by side, or one folder from which a fixed-seed test split is drawn; inside each, one
subfolder per class (labels) or the images directly (no labels). Files whose suffix is not an image's (a README, a
.DS_Store) are skipped and counted: image folders often carry them. A file with an image's suffix that Pillow cannot
read is an error naming it: dropping it silently would change the data.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from tqdm import tqdm

from vae_sweep.core.sources import COLOUR, GREY, Loaded, Pixels, cache
from vae_sweep.errors import UserError

log = logging.getLogger(__name__)

# torchvision's ImageFolder reads these; Pillow opens each of them.
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
# The draw of the test split from a single folder: fixed, so that it never depends on training.seed.
TEST_SPLIT_SEED = 25
GREY_BANDS = {("1",), ("L",), ("L", "A"), ("La",), ("I",), ("F",)}


@dataclass
class Listing:
    """The image files of one split, each one's class index (None without class subfolders), what was skipped."""

    files: list[Path]
    labels: list[int] | None
    skipped: int
    classes: list[str] | None = None  # the class subfolders' names, in label order


def _is_image(name: str) -> bool:
    return os.path.splitext(name)[1].lower() in IMAGE_SUFFIXES


def _entries(folder: Path) -> tuple[list[Path], list[Path], int]:
    """Image files and subfolders directly in `folder`, and how many other files it holds.

    Names are sorted as strings and told apart by scandir's entry types: sorting Paths and asking each one is_file()
    took seconds for 70,000 files.
    """
    with os.scandir(folder) as scan:
        entries = sorted((entry.name, entry.is_dir()) for entry in scan if not entry.name.startswith("."))
    images = [folder / name for name, is_dir in entries if not is_dir and _is_image(name)]
    folders = [folder / name for name, is_dir in entries if is_dir]
    return images, folders, len(entries) - len(images) - len(folders)


def _walk(folder: Path) -> list[str]:
    """Every file under `folder` but hidden ones, as sorted strings."""
    found = []
    for parent, folders, files in os.walk(folder):
        folders[:] = [name for name in folders if not name.startswith(".")]
        found += [os.path.join(parent, name) for name in files if not name.startswith(".")]
    return sorted(found)


def list_images(folder: Path, classes: list[str] | None = None) -> Listing:
    """The images of `folder`: in class subfolders (labelled, in the order of `classes` if given) or directly."""
    images, folders, skipped = _entries(folder)
    if images and folders:
        raise UserError(
            f"{folder} holds both image files ({images[0].name}, ...) and subfolders ({folders[0].name}, ...); "
            "allowed: one subfolder per class, or the images directly."
        )
    if not folders:
        if not images:
            raise UserError(f"{folder} holds no image files; allowed: {', '.join(IMAGE_SUFFIXES)} files.")
        return Listing(images, None, skipped)
    names = [path.name for path in folders]
    index = {name: i for i, name in enumerate(classes or names)}
    unknown = [name for name in names if name not in index]
    if unknown:
        raise UserError(f"{folder / unknown[0]} is a class the training images lack; allowed: {', '.join(index)}.")
    files, labels = [], []
    for class_folder in folders:
        found = _walk(class_folder)
        kept = [Path(path) for path in found if _is_image(path)]
        files += kept
        labels += [index[class_folder.name]] * len(kept)
        skipped += len(found) - len(kept)
    if not files:
        raise UserError(f"{folder}'s class subfolders hold no image files; allowed: {', '.join(IMAGE_SUFFIXES)} files.")
    return Listing(files, labels, skipped, list(index))


def _drawn_split(listing: Listing, test_fraction: float) -> tuple[Listing, Listing]:
    """A fixed-seed share `test_fraction` of one folder's images as the test split, the rest for training."""
    n = len(listing.files)
    test_count = round(n * test_fraction)
    if not 1 <= test_count < n:
        raise UserError(
            f"data.test_fraction={test_fraction:g} of the {n} images in {listing.files[0].parent} leaves "
            f"{test_count} for testing and {n - test_count} for training; allowed: at least one image in each."
        )
    chosen = torch.zeros(n, dtype=torch.bool)
    chosen[torch.randperm(n, generator=torch.Generator().manual_seed(TEST_SPLIT_SEED))[:test_count]] = True
    parts = []
    for in_test in (False, True):
        kept = [i for i in range(n) if bool(chosen[i]) == in_test]
        labels = None if listing.labels is None else [listing.labels[i] for i in kept]
        parts.append(Listing([listing.files[i] for i in kept], labels, 0, listing.classes))
    parts[0].skipped = listing.skipped
    return parts[0], parts[1]


def split_listings(path: Path, test_fraction: float | None) -> tuple[Listing, Listing]:
    """Train and test files of the folder at `path`: its train/ and test/, or a share of it drawn once."""
    if not path.exists():
        raise UserError(f"data.path={path} does not exist; allowed: a folder of images.")
    if not path.is_dir():
        raise UserError(f"data.path={path} is not a folder; allowed: a folder of images (data=arrays takes an .npz).")
    train_dir, test_dir = path / "train", path / "test"
    if train_dir.is_dir() != test_dir.is_dir():
        there, missing = (train_dir, test_dir) if train_dir.is_dir() else (test_dir, train_dir)
        raise UserError(f"{path} has {there.name}/ but no {missing.name}/; allowed: both, or neither.")
    if not train_dir.is_dir():
        return _drawn_split(list_images(path), test_fraction or 0.0)
    train = list_images(train_dir)
    test = list_images(test_dir, train.classes)
    if (train.labels is None) != (test.labels is None):
        raise UserError(
            f"{path}: one of train/ and test/ has class subfolders and the other not; allowed: both or neither."
        )
    return train, test


def _channels(image: Image.Image) -> int:
    return GREY if image.getbands() in GREY_BANDS else COLOUR


def _describe(shape: tuple[int, int, int]) -> str:
    return f"{shape[2]}x{shape[1]} {'grey' if shape[0] == GREY else 'RGB'}"


def decode(path: Path, pixels: Pixels) -> tuple[np.ndarray, str]:
    """One file's pixels as (C, H, W) uint8, converted and resized as `pixels` asks, and the file's MD5."""
    content = path.read_bytes()
    try:
        with Image.open(io.BytesIO(content)) as image:
            image.load()
            channels = pixels.channels or _channels(image)
            image = image.convert("L" if channels == GREY else "RGB")
            if pixels.size is not None:
                image = image.resize((pixels.size, pixels.size), Image.Resampling.BILINEAR)
            array = np.array(image)  # a copy torch may write to: asarray's view of the image is read-only
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as error:
        raise UserError(f"{path} is not a readable image ({error}); remove or replace it.") from None
    return (array[None] if array.ndim == 2 else array.transpose(2, 0, 1)), hashlib.md5(content).hexdigest()


def decode_all(files: list[Path], pixels: Pixels, desc: str) -> tuple[torch.Tensor, tuple[int, int, int], list[str]]:
    """All files' pixels as one (N, C*H*W) uint8 tensor (filled in place: no second copy), their shape and MD5s.

    Every image must come out with the first one's shape: sizes or channel counts that differ need data.size or
    data.channels, rather than a guess.
    """
    first, first_md5 = decode(files[0], pixels)
    shape = tuple(first.shape)
    images = torch.empty((len(files), first.size), dtype=torch.uint8)
    images[0] = torch.from_numpy(first.reshape(-1))
    md5s = [first_md5]
    for row, path in enumerate(tqdm(files[1:], desc=desc, unit="image", disable=None, mininterval=1), 1):
        array, md5 = decode(path, pixels)
        if array.shape != shape:
            fix = "data.size=N" if array.shape[1:] != shape[1:] else "data.channels=1 or 3"
            raise UserError(
                f"{path} is {_describe(array.shape)} but {files[0]} is {_describe(shape)}; "
                f"images must agree: set {fix} to convert them all."
            )
        images[row] = torch.from_numpy(array.reshape(-1))
        md5s.append(md5)
    return images, shape, md5s


def _split_md5(root: Path, files: list[Path], md5s: list[str]) -> str:
    """One MD5 over a split's files: their paths (which carry the class) and contents."""
    lines = sorted(f"{cache.relative(root, file)} {md5}" for file, md5 in zip(files, md5s, strict=True))
    return hashlib.md5("\n".join(lines).encode()).hexdigest()


def _decoded(path: Path, train: Listing, test: Listing, pixels: Pixels) -> dict:
    """Both splits decoded into one tensor, train rows first, as the cache keeps them."""
    files = train.files + test.files
    images, shape, md5s = decode_all(files, pixels, f"decoding {path}")
    labels = None if train.labels is None else torch.tensor(train.labels + test.labels, dtype=torch.int64)
    return {
        "images": images,
        "labels": labels,
        "train": len(train.files),
        "shape": list(shape),
        "md5s": {
            "train": _split_md5(path, train.files, md5s[: len(train.files)]),
            "test": _split_md5(path, test.files, md5s[len(train.files) :]),
        },
    }


def load(path: Path, pixels: Pixels, test_fraction: float | None) -> Loaded:
    """The folder's splits, from the decoded copy in the user cache when the files have not changed since."""
    train, test = split_listings(path, test_fraction)
    skipped = train.skipped + test.skipped
    if skipped:
        log.warning(f"{path}: skipped {skipped} files that are not images ({', '.join(IMAGE_SUFFIXES)}).")
    files = train.files + test.files
    key = cache.key(path, files, [pixels.size, pixels.channels, test_fraction, len(train.files)])
    payload = cache.read(key)
    if payload is None:
        payload = _decoded(path, train, test, pixels)
        cache.write(key, payload)
    images, labels, n = payload["images"], payload["labels"], payload["train"]
    return Loaded(
        name=path.resolve().name,
        train=(images[:n], None if labels is None else labels[:n]),
        test=(images[n:], None if labels is None else labels[n:]),
        shape=tuple(payload["shape"]),
        split_md5s={split: {split: md5} for split, md5 in payload["md5s"].items()},
        location=path,
        skipped=skipped,
    )
