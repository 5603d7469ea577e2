"""What a command loads before it needs it: MLflow, matplotlib, torchvision and torch._dynamo (which torch's optimizers
import on their first call) take seconds to import each."""

import subprocess
import sys

import pytest

HEAVY = ("mlflow", "matplotlib", "torchvision", "torch._dynamo")

# Runs the entry point as `python -m vae_sweep ARGS` does, then prints which heavy modules it loaded.
PROBE = """
import atexit, runpy, sys
atexit.register(lambda: print("LOADED", [m for m in {heavy!r} if m in sys.modules]))
sys.argv = ["vae_sweep", *{args!r}]
runpy.run_module("vae_sweep", run_name="__main__", alter_sys=True)
"""


def loaded(args: list[str], cwd) -> tuple[list[str], subprocess.CompletedProcess]:
    code = PROBE.format(heavy=HEAVY, args=args)
    done = subprocess.run([sys.executable, "-c", code], cwd=cwd, capture_output=True, text=True, timeout=120)
    line = next(line for line in done.stdout.splitlines() if line.startswith("LOADED"))
    return eval(line.removeprefix("LOADED")), done


@pytest.mark.parametrize(
    "args, exit_code",
    [(["--cfg", "job"], 0), (["model.latent=0"], 1)],
    ids=["print the config", "a bad value"],
)
def test_printing_the_config_and_a_config_error_load_none_of_them(workdir, args, exit_code):
    modules, done = loaded(args, workdir)
    assert done.returncode == exit_code, done.stderr
    assert modules == []


def test_a_job_without_tracking_loads_neither_mlflow_nor_torchvision_nor_dynamo(workdir):
    args = ["training.epochs=1", "model.hidden=[8]", "eval.enabled=false", "tracking.enabled=false"]
    modules, done = loaded(args, workdir)
    assert done.returncode == 0, done.stderr
    assert modules == ["matplotlib"]  # its figures are drawn: only the plotting library is needed
