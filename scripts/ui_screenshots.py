"""Headless-Chromium screenshots of the MLflow UI over a store of vae_sweep runs: what a researcher sees first.

python scripts/ui_screenshots.py STORE_DIR --out /work/screens --prefix ui-after [--make]

STORE_DIR holds mlflow.db and mlruns/ (the folder a sweep was launched from). With --make, a two-job sweep
(latent 2 and 3, 3 epochs) is first trained there on small generated data, so the pictures need no download.
Saves PREFIX-runs.png (what clicking the experiment in the UI shows), PREFIX-runs-link.png (the page the link that
jobs print opens), PREFIX-charts.png (the same as charts), PREFIX-run.png (a run's overview), PREFIX-run-metrics.png
(its Model metrics tab) and PREFIX-compare.png (compare-runs).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SWEEP = ("-m", "model.latent=2,3", "training.epochs=3", "model.hidden=[64]", "eval.samples=500", "eval.iwae_k=10")


def make_store(folder: Path) -> None:
    sys.path.insert(0, str(REPO))
    from tests.conftest import make_mnist_like

    data = make_mnist_like(folder / "data", train=2000, test=500)
    env = dict(os.environ, VAE_SWEEP_DATA_DIR=str(data), PYTHONPATH=str(REPO))
    env.pop("MLFLOW_TRACKING_URI", None)
    subprocess.run([sys.executable, "-m", "vae_sweep", *SWEEP], cwd=folder, env=env, check=True)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_ui(folder: Path, log: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    command = [
        sys.executable, "-m", "mlflow", "ui", "--host", "127.0.0.1", "--port", str(port),
        "--backend-store-uri", f"sqlite:///{folder / 'mlflow.db'}", "--workers", "1",
    ]  # fmt: skip
    with open(log, "w") as output:
        server = subprocess.Popen(command, cwd=folder, stdout=output, stderr=subprocess.STDOUT)
    uri = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while True:
        try:
            urllib.request.urlopen(f"{uri}/health", timeout=2).close()
            return server, uri
        except OSError:
            if server.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"mlflow ui did not start:\n{log.read_text()[-3000:]}") from None
            time.sleep(0.5)


def chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if shutil.which(name):
            return shutil.which(name)
    raise SystemExit("No Chromium on PATH: apt-get install -y chromium")


def screenshot(url: str, path: Path, wait_ms: int) -> None:
    # The UI is a JS app that keeps fetching; a virtual-time budget lets it settle before the picture is taken.
    command = [
        chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", f"--screenshot={path}",
        "--window-size=1440,1800", f"--virtual-time-budget={wait_ms}", url,
    ]  # fmt: skip
    subprocess.run(command, check=True, capture_output=True, timeout=180)
    print(f"{path}  <- {url}")


def pages(uri: str, experiment_id: str, run_ids: list[str]) -> dict[str, str]:
    from vae_sweep.tracking.store import runs_route

    first = run_ids[0]
    compare = urllib.parse.urlencode({"runs": json.dumps(run_ids), "experiments": json.dumps([experiment_id])})
    return {
        "runs": f"{uri}/#/experiments/{experiment_id}",
        "runs-link": f"{uri}/{runs_route(experiment_id)}",
        "charts": f"{uri}/{runs_route(experiment_id)}&compareRunsMode=CHART",
        "run": f"{uri}/#/experiments/{experiment_id}/runs/{first}",
        "run-metrics": f"{uri}/#/experiments/{experiment_id}/runs/{first}/model-metrics",
        "compare": f"{uri}/#/compare-runs?{compare}",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("store", type=Path, help="folder holding mlflow.db (created with --make)")
    parser.add_argument("--out", type=Path, default=Path("screens"))
    parser.add_argument("--prefix", default="ui")
    parser.add_argument("--experiment", default="vae_sweep")
    parser.add_argument("--make", action="store_true", help="first train a two-job sweep into STORE")
    parser.add_argument("--wait-ms", type=int, default=20000, help="virtual time the page gets before the picture")
    args = parser.parse_args()
    folder = args.store.resolve()
    folder.mkdir(parents=True, exist_ok=True)
    if args.make:
        make_store(folder)
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{folder / 'mlflow.db'}")
    experiment = client.get_experiment_by_name(args.experiment)
    runs = client.search_runs([experiment.experiment_id], order_by=["attributes.start_time ASC"])
    args.out.mkdir(parents=True, exist_ok=True)
    server, uri = start_ui(folder, folder / "mlflow-ui.log")
    try:
        for page, url in pages(uri, experiment.experiment_id, [run.info.run_id for run in runs]).items():
            screenshot(url, args.out / f"{args.prefix}-{page}.png", args.wait_ms)
    finally:
        server.terminate()
        server.wait(timeout=30)


if __name__ == "__main__":
    main()
