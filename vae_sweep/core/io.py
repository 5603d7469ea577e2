"""Files written so that a reader never sees half of one: checkpoints, cached classifiers."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import torch


def save_atomically(payload: Any, path: Path) -> None:
    """torch.save to a temporary file beside `path`, then rename over it.

    A kill, a signal or an error mid-write leaves the previous file intact and no temporary file behind (a kill -9
    can leave one: its name starts with the target's and ends in .tmp); a parallel reader sees the old file or the
    new one, never a mix.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    os.close(handle)
    try:
        torch.save(payload, temporary)
        os.replace(temporary, path)
    except BaseException:
        os.unlink(temporary)
        raise
