"""Where a result came from: code version, library versions, machine. Recorded on runs, compared on reproduction."""

from __future__ import annotations

import platform
import subprocess
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from vae_sweep import names

LIBRARIES = ("torch", "torchvision", "mlflow", "hydra-core", "omegaconf")


def _git(root: Path, *args: str) -> str | None:
    try:
        result = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=10, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    return result.stdout.strip()


def git_state(root: Path) -> dict[str, str]:
    """The commit checked out at `root` and whether tracked files differ from it ('unknown' outside git)."""
    commit = _git(root, "rev-parse", "HEAD")
    if commit is None:
        return {"git.commit": "unknown", "git.dirty": "unknown"}
    changes = _git(root, "status", "--porcelain", "--untracked-files=no")
    return {"git.commit": commit, "git.dirty": str(bool(changes)).lower()}


def code_checkout() -> Path | None:
    """The git checkout this package's code runs from (an editable install), or None: a wheel, or untracked files."""
    package = Path(__file__).resolve().parents[1]
    return package if _git(package, "ls-files", "--", "__init__.py") else None


def library_versions() -> dict[str, str]:
    versions = {}
    for name in LIBRARIES:
        try:
            versions[f"version.{name}"] = version(name)
        except PackageNotFoundError:
            versions[f"version.{name}"] = "absent"
    return versions


def provenance(root: Path) -> dict[str, str]:
    """The code's commit is the package checkout's wherever the job is launched from; installed from a wheel, that
    of the launch folder `root` (a user's project of configs, if it is one)."""
    machine = {names.TAG_HOST: platform.node(), names.TAG_PYTHON: platform.python_version()}
    return {**git_state(code_checkout() or root), **library_versions(), **machine}
