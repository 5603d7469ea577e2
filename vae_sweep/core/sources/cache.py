"""Decoded image folders kept in the user cache ($XDG_CACHE_HOME/vae_sweep/decoded/), so that a folder is decoded
once: a later job stats its files and reads one file of uint8 tensors instead.

An entry is keyed by the folder, each file's path, size and modification time, and the settings that change the
pixels; a file that changed, came or went makes a new key. The digests of the contents are stored with the pixels.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path

import torch

from vae_sweep.core.io import save_atomically

log = logging.getLogger(__name__)

# Raised when what an entry holds changes, so that entries of older code are not read.
FORMAT = 1


def folder() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "vae_sweep" / "decoded"


def key(root: Path, files: list[Path], settings: list) -> str:
    """The entry of these files as they are now (paths, sizes, modification times), decoded with `settings`."""
    digest = hashlib.sha256(json.dumps([FORMAT, str(root.resolve()), settings]).encode())
    for file in files:
        status = os.stat(file)
        digest.update(f"{relative(root, file)}\0{status.st_size}\0{status.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:32]


def relative(root: Path, file: Path) -> str:
    """`file`'s path under `root`, which it was listed from (a prefix cut: Path.relative_to costs ~10 us a file)."""
    return str(file)[len(str(root)) :].lstrip(os.sep).replace(os.sep, "/")


def read(entry: str) -> dict | None:
    """The payload cached under `entry`, memory-mapped (pages are read as they are used), or None."""
    path = folder() / f"{entry}.pt"
    if not path.exists():
        return None
    try:
        return torch.load(path, weights_only=True, mmap=True)
    except (RuntimeError, EOFError, OSError) as error:  # a damaged entry is decoded again, not an error
        log.warning(f"Ignoring the unreadable cached copy {path} ({error}).")
        return None


def write(entry: str, payload: dict) -> None:
    """Keep `payload` under `entry`; a cache that cannot be written costs the next job a decode, not this one."""
    path = folder() / f"{entry}.pt"
    try:
        save_atomically(payload, path)
    except OSError as error:
        log.warning(f"Could not cache the decoded images in {path} ({error}); the next job decodes them again.")
