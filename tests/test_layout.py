"""The architecture as the folder tree shows it: imports point one way, core needs neither Hydra nor MLflow,
and every package ships."""

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import tomllib

from tests.conftest import REPO

PACKAGE = REPO / "vae_sweep"

# Layer of each part of vae_sweep; a module may import its own layer and the layers listed for it.
# The foundations (config, names, errors) are importable from everywhere and import nothing above them.
ENTRY = {"__init__", "__main__", "cli", "registry", "report", "reproduce"}
ALLOWED = {
    "foundation": {"foundation"},
    "core": {"foundation", "core"},
    "evaluation": {"foundation", "core", "evaluation"},
    "tracking": {"foundation", "core", "tracking"},
    "jobs": {"foundation", "core", "evaluation", "tracking", "jobs"},
    "search": {"foundation", "core", "evaluation", "tracking", "jobs", "search"},
    "analysis": {"foundation", "core", "evaluation", "tracking", "analysis"},
    "entry": {"foundation", "core", "evaluation", "tracking", "jobs", "search", "analysis", "entry"},
}


def layer(module: str) -> str:
    """'vae_sweep.jobs.task' -> 'jobs'; 'vae_sweep.names' -> 'foundation'; 'vae_sweep.cli' -> 'entry'."""
    parts = module.split(".")
    if len(parts) == 1:
        return "entry"  # the package itself: its __init__
    if parts[1] in ALLOWED:
        return parts[1]
    return "entry" if parts[1] in ENTRY else "foundation"


def module_name(path: Path) -> str:
    relative = path.relative_to(REPO).with_suffix("")
    parts = relative.parts[:-1] if relative.name == "__init__" else relative.parts
    return ".".join(parts)


def is_module(name: str) -> bool:
    path = REPO / name.replace(".", "/")
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def imported_modules(path: Path) -> set[str]:
    """Every vae_sweep module a file imports, at the top or inside a function.

    `from vae_sweep import names` imports the module vae_sweep.names; `from vae_sweep import load_model` a name
    from the package's own __init__.
    """
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                submodule = f"{node.module}.{alias.name}"
                found.add(submodule if is_module(submodule) else node.module)
    return {name for name in found if name.split(".")[0] == "vae_sweep"}


def test_the_layers_are_what_the_tree_says():
    assert layer("vae_sweep.core.train") == "core"
    assert layer("vae_sweep.names") == "foundation"
    assert layer("vae_sweep.reproduce") == "entry"
    assert layer("vae_sweep.analysis.report.cli") == "analysis"


def test_imports_point_one_way():
    violations = []
    for path in sorted(PACKAGE.rglob("*.py")):
        importer = module_name(path)
        for imported in imported_modules(path):
            if layer(imported) not in ALLOWED[layer(importer)]:
                violations.append(f"{importer} ({layer(importer)}) imports {imported} ({layer(imported)})")
    assert not violations, "\n".join(violations)


def test_the_check_sees_an_upward_import(tmp_path):
    """The walk above finds imports inside functions too, so a late import cannot slip past it."""
    module = tmp_path / "late.py"
    module.write_text("def f():\n    from vae_sweep.jobs.task import run\n")
    assert "vae_sweep.jobs.task" in imported_modules(module)
    assert layer("vae_sweep.jobs.task") not in ALLOWED["core"]


def test_core_imports_without_hydra_or_mlflow():
    modules = sorted(module_name(path) for path in (PACKAGE / "core").glob("*.py"))
    code = (
        "import sys\n"
        + "".join(f"import {module}\n" for module in modules)
        + "print(sorted({m.split('.')[0] for m in sys.modules} & {'hydra', 'mlflow', 'omegaconf'}))"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


def test_every_package_ships():
    """pyproject.toml lists the packages (conf/ is mapped in as vae_sweep.conf): a new folder must be listed."""
    listed = set(tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {module_name(init) for init in PACKAGE.rglob("__init__.py")} | {"vae_sweep.conf"}
    found |= {module_name(init) for init in (REPO / "hydra_plugins").rglob("__init__.py")} | {"hydra_plugins"}
    assert found == listed


@pytest.mark.slow
def test_a_wheel_runs_from_any_directory(tmp_path):
    """A non-editable install composes its config from the packaged conf/, not from a checkout."""
    wheels, site, source = tmp_path / "wheels", tmp_path / "site", tmp_path / "source"
    # A copy of the sources: setuptools builds in the source tree's build/ folder.
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, source / name)
    for name in ("vae_sweep", "conf", "hydra_plugins"):
        shutil.copytree(REPO / name, source / name, ignore=shutil.ignore_patterns("__pycache__"))
    build = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", wheels, source]
    subprocess.run(build, check=True, capture_output=True)
    (wheel,) = wheels.glob("vae_sweep-*.whl")
    install = [sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", site, wheel]
    subprocess.run(install, check=True, capture_output=True)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    # -I: no current directory, user site or PYTHONPATH on sys.path; the target folder comes in by its own .pth-less
    # path, so vae_sweep and its conf can only come from the wheel.
    code = f"import sys; sys.path.insert(0, {str(site)!r}); from vae_sweep.__main__ import main; main()"
    result = subprocess.run(
        [sys.executable, "-I", "-c", code, "--cfg", "job", "model.latent=7"],
        cwd=elsewhere, capture_output=True, text=True,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "latent: 7" in result.stdout and "hidden:" in result.stdout
    assert (site / "vae_sweep" / "conf" / "experiment" / "seed.yaml").is_file()
