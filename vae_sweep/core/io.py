"""Files written so that a reader never sees half of one: checkpoints, cached classifiers."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import torch

from vae_sweep.core.signals import held


def save_atomically(payload: Any, path: Path) -> None:
    """torch.save to a temporary file beside `path`, then rename over it.

    An error mid-write leaves the previous file intact and no temporary file behind; a stop signal waits until the
    new file is in place (a kill -9 can leave a temporary file: its name starts with the target's and ends in .tmp).
    A parallel reader sees the old file or the new one, never a mix.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with held():
        handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
        os.close(handle)
        try:
            torch.save(payload, temporary)
            os.replace(temporary, path)
        except BaseException:
            os.unlink(temporary)
            raise
