"""Load time of a folder of PNGs (data=images), generated from real MNIST: cold (decoded with Pillow) and from the
decoded copy in the user cache; and whether decoding in two processes pays.

    python -m benchmarks.own_data --data-root data [--out /tmp/mnist_png] [--repeats 3]

Writes benchmarks/results_own_data.json; the table in RESULTS.md ("Your own data: loading a folder") is from it.
The folder is written once (train/ and test/, one subfolder per digit: 70,000 files); the OS page cache holds it
afterwards, so "cold" means not decoded before, not read from a cold disk.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.common import loadavg, matmul_operands, matmul_sample, summary

RESULTS = Path(__file__).with_name("results_own_data.json")
SUBSET = 10_000  # files for the sequential-against-two-processes comparison


def write_folder(root: Path, out: Path) -> Path:
    """MNIST's 70,000 images as PNG files in out/train/<digit>/ and out/test/<digit>/ (skipped if there)."""
    from PIL import Image

    from vae_sweep.core.data import load

    if (out / "done").exists():
        return out
    for split_name, split in zip(("train", "test"), load("mnist", root, download=True), strict=True):
        for row, (pixels, label) in enumerate(zip(split.images, split.labels.tolist(), strict=True)):
            folder = out / split_name / str(label)
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(pixels.reshape(28, 28).numpy()).save(folder / f"{row:05}.png")
    (out / "done").write_text("")
    return out


def child_load(path: str) -> dict:
    """One load in this fresh process: seconds and the peak resident memory it added (VmHWM minus the imports')."""
    import torch

    from vae_sweep.core.sources import Pixels, folder, load_source  # noqa: F401 (imported before the baseline)

    int(torch.zeros(8, dtype=torch.uint8).sum())  # torch's first operation maps its CPU kernels: not the data's
    before = _peak_kib()
    started = time.perf_counter()
    loaded = load_source("images", path, Pixels(), None)
    # One pass over every pixel: a cached copy is memory-mapped, and its pages are only read when touched.
    int(loaded.train[0].max()) + int(loaded.test[0].max())  # max stays uint8; sum would take an int64 copy
    seconds = time.perf_counter() - started
    rows = len(loaded.train[0]) + len(loaded.test[0])
    return {"seconds": seconds, "peak_added_mib": (_peak_kib() - before) / 1024, "images": rows}


def _peak_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return 0


def load_in_child(path: Path, cache: Path) -> dict:
    env = dict(os.environ, XDG_CACHE_HOME=str(cache))
    command = [sys.executable, "-m", "benchmarks.own_data", "--child", str(path)]
    return json.loads(subprocess.run(command, env=env, capture_output=True, text=True, check=True).stdout)


def _decode_files(files: list[Path]) -> int:
    from vae_sweep.core.sources import Pixels, folder

    return len(folder.decode_all(files, Pixels(), "decoding")[0])


def decode_rates(path: Path, repeats: int) -> dict:
    """Seconds to decode SUBSET files in this process and split between two, alternated (ABAB, flipped)."""
    files = sorted((path / "train").rglob("*.png"))[:SUBSET]
    halves = [files[: SUBSET // 2], files[SUBSET // 2 :]]
    times: dict[str, list[float]] = {"one process": [], "two processes": []}
    with multiprocessing.get_context("fork").Pool(2) as pool:
        for repeat in range(repeats):
            order = list(times) if repeat % 2 == 0 else list(times)[::-1]
            for variant in order:
                started = time.perf_counter()
                _decode_files(files) if variant == "one process" else sum(pool.map(_decode_files, halves))
                times[variant].append(time.perf_counter() - started)
    return {variant: summary(samples) for variant, samples in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data-root", default="data")
    parser.add_argument("--out", default=str(Path(tempfile.gettempdir()) / "vae_sweep_mnist_png"))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--child")
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child_load(args.child)))
        return
    loads = [loadavg()]
    a, b, out = matmul_operands()
    rate = summary([matmul_sample(a, b, out) for _ in range(5)])["median"]
    started = time.perf_counter()
    path = write_folder(Path(args.data_root), Path(args.out))
    generation = time.perf_counter() - started
    with tempfile.TemporaryDirectory() as cache:
        cold = [load_in_child(path, Path(cache))]  # the first load decodes and writes the cache
        cached = [load_in_child(path, Path(cache)) for _ in range(args.repeats)]
        loads.append(loadavg())
        cold += [load_in_child(path, Path(tempfile.mkdtemp(dir=cache))) for _ in range(args.repeats - 1)]
    loads.append(loadavg())
    decode = decode_rates(path, args.repeats)
    loads.append(loadavg())
    results = {
        "images": cold[0]["images"],
        "uint8_mib": cold[0]["images"] * 784 / 2**20,
        "generation_s": generation,
        "cold_s": summary([run["seconds"] for run in cold]),
        "cached_s": summary([run["seconds"] for run in cached]),
        "cold_peak_added_mib": max(run["peak_added_mib"] for run in cold),
        "cached_peak_added_mib": max(run["peak_added_mib"] for run in cached),
        "decode_subset": SUBSET,
        "decode_s": decode,
        "loadavg": loads,
        "matmul_gflops": rate / 1e9,
        "cpus": os.cpu_count(),
    }
    RESULTS.write_text(json.dumps(results, indent=1))
    print(json.dumps({k: v for k, v in results.items()}, indent=1, default=str))


if __name__ == "__main__":
    main()
