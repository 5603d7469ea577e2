"""`python -m benchmarks.busy`: training speed when another process holds one core, before and after vae_sweep's
thread defaults; writes benchmarks/results_busy.json and the "## Busy machine" section at the end of RESULTS.md.

Each setting trains the default model (latent 2) in a fresh process, since OpenMP reads its wait policy once, as
torch loads it. A setting's process times `--batches` training batches `--repeats` times after a warm-up. The
settings take turns, first with the machine as it is, then with one more core held by a busy loop (a second
Python process spinning), `--rounds` times, the order reversed every other round; figures are medians over all of a
setting's timings. The machine's matmul rate and load average are measured in the same run.

  before: torch's default thread count (the cores), OpenMP spinning while it waits (torch's default)
  1 thread: torch.set_num_threads(1)
  passive: the cores as threads, OMP_WAIT_POLICY=PASSIVE (idle OpenMP threads sleep instead of spinning)
  now: what `python -m vae_sweep` does for a lone job (training.threads=0, basic launcher): the cores that no other
       process keeps busy as it starts (vae_sweep.jobs.runtime.free_cores), OpenMP as torch sets it
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESULTS_JSON = REPO / "benchmarks" / "results_busy.json"
RESULTS_MD = REPO / "benchmarks" / "RESULTS.md"
HEADING = "## Busy machine"
BATCH = 128
EPOCH_BATCHES = 469  # 60,000 MNIST training images in batches of 128
WARMUP_BATCHES = 10
# (label, threads: "torch" = torch's default, "job" = vae_sweep's choice, or a number; OpenMP wait policy)
SETTINGS = (
    ("before", "torch", "torch's default"),
    ("1 thread", 1, "torch's default"),
    ("passive", "torch", "PASSIVE"),
    ("now", "job", "torch's default"),
)
STATES = ("as it was", "one more core held")
TARGET_BUSY = 1.3  # now, with one core held: at most this times a 1-thread job


# ---- one setting's process ----------------------------------------------------------------------------------------


def worker(threads: str, batches: int, repeats: int, data_root: str) -> dict:
    """Train the default model (latent 2) for `batches` batches, `repeats` times; returns the timings."""
    import torch

    from vae_sweep.config import OptimizerName
    from vae_sweep.core.data import SHAPES, Split, load
    from vae_sweep.core.models import build_model
    from vae_sweep.core.optim import build_optimizer
    from vae_sweep.core.train import EpochSettings, train_epoch
    from vae_sweep.jobs.runtime import TORCH_DEFAULT_THREADS, job_threads, set_cpu_threads

    if threads == "job":
        set_cpu_threads(job_threads(0, {}, None))  # a lone job's: training.threads=0 under the basic launcher
    else:
        set_cpu_threads(TORCH_DEFAULT_THREADS if threads == "torch" else int(threads))
    count = (batches * repeats + WARMUP_BATCHES) * BATCH
    try:
        train, _ = load("mnist", data_root, download=False)
        images, source = train.images[:count], "MNIST"
    except Exception:
        generator = torch.Generator().manual_seed(0)
        images, source = torch.randint(0, 256, (count, 784), dtype=torch.uint8, generator=generator), "random pixels"
    torch.manual_seed(0)
    model = build_model({"name": "mlp", "latent": 2}, SHAPES["mnist"])
    options = argparse.Namespace(name=OptimizerName.adam, lr=1e-3, weight_decay=0.0, fused=True)
    optimizer = build_optimizer(model, options)
    generator = torch.Generator().manual_seed(0)

    def run(rows: slice, epoch: int) -> dict[str, float]:
        split = Split(images[rows], torch.zeros(rows.stop - rows.start, dtype=torch.long))
        return train_epoch(model, optimizer, split, EpochSettings(BATCH), generator, 1.0, epoch)

    run(slice(0, WARMUP_BATCHES * BATCH), 0)
    times, losses = [], []
    for repeat in range(repeats):
        start = (WARMUP_BATCHES + repeat * batches) * BATCH
        began = time.perf_counter()
        losses.append(run(slice(start, start + batches * BATCH), repeat + 1)["loss"])
        times.append((time.perf_counter() - began) / batches)
    # The losses' exact bits: equal for two settings exactly when they trained bitwise alike.
    return {"threads": torch.get_num_threads(), "s_per_batch": times, "losses": [x.hex() for x in losses],
            "data": source, "wait_policy": os.environ.get("OMP_WAIT_POLICY", "(unset)")}  # fmt: skip


# ---- the run ------------------------------------------------------------------------------------------------------


def setting_env(wait: str) -> dict:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    for name in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "KMP_BLOCKTIME", "OMP_NUM_THREADS"):
        env.pop(name, None)
    if wait == "PASSIVE":
        env["OMP_WAIT_POLICY"] = "PASSIVE"
    return env


def measure(label: str, args: argparse.Namespace) -> dict:
    _, threads, wait = next(setting for setting in SETTINGS if setting[0] == label)
    command = [sys.executable, "-m", "benchmarks.busy", "--worker", str(threads), "--batches", str(args.batches),
               "--repeats", str(args.repeats), "--data-root", args.data_root]  # fmt: skip
    result = subprocess.run(command, cwd=REPO, env=setting_env(wait), capture_output=True, text=True, timeout=1800)
    if result.returncode != 0:
        raise SystemExit(f"{label}: the benchmark process failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def loadavg() -> float:
    return os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")


def matmul_gflops(n: int = 1024, repeats: int = 5) -> float:
    """Dense float32 matmul rate at torch's default thread count, median of `repeats`."""
    import torch

    a, b = torch.rand(n, n), torch.rand(n, n)
    torch.mm(a, b)
    rates = []
    for _ in range(repeats):
        began = time.perf_counter()
        torch.mm(a, b)
        rates.append(2 * n**3 / (time.perf_counter() - began) / 1e9)
    return statistics.median(rates)


def busy_loop() -> subprocess.Popen:
    spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    time.sleep(0.5)
    return spinner


def run_all(args: argparse.Namespace) -> dict:
    began, loads = time.monotonic(), [loadavg()]
    from vae_sweep.jobs.runtime import busy_cores

    samples = {state: {label: [] for label, *_ in SETTINGS} for state in STATES}
    held = {state: [] for state in STATES}  # cores other processes kept busy, sampled before each state's settings
    details = {state: {label: [] for label, *_ in SETTINGS} for state in STATES}
    rate = matmul_gflops()
    for round_ in range(args.rounds):
        order = [label for label, *_ in SETTINGS][:: 1 if round_ % 2 == 0 else -1]
        for state in STATES:
            spinner = busy_loop() if state == STATES[1] else None
            held[state].append(busy_cores(1.0))
            try:
                for label in order:
                    result = measure(label, args)
                    samples[state][label] += result["s_per_batch"]
                    details[state][label].append({k: v for k, v in result.items() if k != "s_per_batch"})
                    print(f"round {round_ + 1} {state:>13} {label:>8}: {result['threads']} thread(s), "
                          f"{statistics.median(result['s_per_batch']) * 1000:.1f} ms/batch", flush=True)  # fmt: skip
            finally:
                if spinner is not None:
                    spinner.kill()
                    spinner.wait()
            loads.append(loadavg())
    return {
        "when": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": "python -m benchmarks.busy " + " ".join(sys.argv[1:]),
        "machine": {"cores": os.cpu_count(), "usable cores": len(os.sched_getaffinity(0)), "python":
                    platform.python_version(), "matmul_gflops": rate},  # fmt: skip
        "load_average": {"start": loads[0], "during": loads[1:-1], "end": loads[-1]},
        "batches": args.batches, "repeats": args.repeats, "rounds": args.rounds,
        "minutes": (time.monotonic() - began) / 60,
        "busy_cores": held, "s_per_batch": samples, "runs": details,
    }  # fmt: skip


# ---- figures ------------------------------------------------------------------------------------------------------


def median(results: dict, state: str, label: str) -> float:
    return statistics.median(results["s_per_batch"][state][label])


def spread(results: dict, state: str, label: str) -> float:
    values = results["s_per_batch"][state][label]
    return (max(values) - min(values)) / 2 / statistics.median(values)


def threads_used(results: dict, state: str, label: str) -> str:
    return "/".join(sorted({str(run["threads"]) for run in results["runs"][state][label]}))


def bitwise_alike(results: dict) -> list[str]:
    """For each thread count, whether every setting that trained with it produced the same losses, bit for bit."""
    by_threads: dict[int, set] = {}
    for state in STATES:
        for label, *_ in SETTINGS:
            for run in results["runs"][state][label]:
                by_threads.setdefault(run["threads"], set()).add(tuple(run["losses"]))
    return [f"{threads} thread(s): {'yes' if len(seen) == 1 else 'NO'}" for threads, seen in sorted(by_threads.items())]


def held_cores(results: dict, state: str) -> float | None:
    """The median number of cores other processes kept busy in a state (the busy loop included); None if unknown."""
    known = [value for value in results["busy_cores"][state] if value is not None]
    return statistics.median(known) if known else None


def ratio(results: dict, state: str, label: str, reference: str) -> float:
    return median(results, state, label) / median(results, state, reference)


def markdown(results: dict) -> str:
    load, cores = results["load_average"], results["machine"]["usable cores"]
    held = {state: held_cores(results, state) for state in STATES}
    shown = {state: "unknown" if held[state] is None else f"{held[state]:.1f}" for state in STATES}
    lines = [
        HEADING,
        "",
        f"Written by `{results['command']}` on {results['when']} ({results['minutes']:.1f} min). The default model "
        f"(latent 2) trains {results['batches']} batches of {BATCH} images {results['repeats']} times per process, "
        f"{results['rounds']} rounds of every setting, first on the machine as it was, then with one more core held "
        f"by a busy loop; s/epoch is the training part of an epoch ({EPOCH_BATCHES} batches), ± half the range of "
        "the timings relative to the median.",
        "",
        f"Machine: {cores} usable cores, dense float32 matmul {results['machine']['matmul_gflops']:.0f} GFLOP/s "
        f"(1024², torch's default threads, measured in this run); load average (1 min) {load['start']:.2f} at the "
        f"start, {min(load['during'] or [load['end']]):.2f}–{max(load['during'] or [load['end']]):.2f} during, "
        f"{load['end']:.2f} at the end. Cores that other processes kept busy, sampled for 1 s before each state "
        f"(median): {shown[STATES[0]]} as it was, {shown[STATES[1]]} with the busy loop.",
        "",
        f"| setting | wait policy | {STATES[0]} ({shown[STATES[0]]} cores busy) | "
        f"{STATES[1]} ({shown[STATES[1]]} cores busy) |",
        "|---|---|---|---|",
    ]
    for label, _, wait in SETTINGS:
        cells = [
            f"{median(results, state, label) * 1000:.1f} ms/batch = {median(results, state, label) * EPOCH_BATCHES:.1f}"
            f" s/epoch ±{spread(results, state, label):.0%}, {threads_used(results, state, label)} thread(s)"
            for state in STATES
        ]
        lines.append(f"| {label} | {wait} | {cells[0]} | {cells[1]} |")
    lines += ["", f"| ratio of medians | {STATES[0]} | {STATES[1]} |", "|---|---|---|"]
    for label, reference in (("before", "1 thread"), ("passive", "1 thread"), ("now", "1 thread"),
                             ("now", "before"), ("passive", "before")):  # fmt: skip
        cells = " | ".join(f"{ratio(results, state, label, reference):.2f}" for state in STATES)
        lines.append(f"| {label} / {reference} | {cells} |")
    lines += ["", "Targets, in the states where they apply:", ""]
    for state in STATES:
        if held[state] is not None and held[state] >= 0.5:
            value = ratio(results, state, "now", "1 thread")
            verdict = "met" if value <= TARGET_BUSY else "not met"
            lines.append(f"- {state}, {shown[state]} cores busy: now / 1 thread = {value:.2f} (target <= "
                         f"{TARGET_BUSY}): **{verdict}**")  # fmt: skip
    if held[STATES[0]] is not None and held[STATES[0]] < 0.5:
        value = ratio(results, STATES[0], "now", "before")
        lines.append(f"- idle: now / before = {value:.2f}, target: no slower (within the spread above)")
    else:
        lines.append(
            "- idle, now no slower than before: not measurable in this run, since other processes kept cores busy "
            "the whole time. On an idle machine the new default gives a job torch's default thread count and wait "
            "policy, the same settings as before, after a 0.2 s sample of the CPU counters."
        )
    lines += [
        "",
        "Same losses, bit for bit, for every setting at the same thread count (the wait policy does not change the "
        f"arithmetic): {'; '.join(bitwise_alike(results))}.",
        "",
        "Why: a parallel region ends when its slowest thread does. With a core held, one of two threads shares its "
        "core with another process, and OpenMP's waiting threads spin, taking CPU time from the very thread the next "
        "region waits for (before / 1 thread). Letting them sleep (OMP_WAIT_POLICY=PASSIVE) removes the spinning "
        "(passive / 1 thread) but not the thread that runs at half speed, and every region then pays a wake-up, "
        "which costs most where the cores are free (passive / before on an idle machine: see the targets for "
        "whether this run had one). So vae_sweep keeps torch's "
        "wait policy and gives a lone job the cores that are free as it starts (`vae_sweep.jobs.runtime.free_cores`): "
        "on an idle machine as many as before, with a core held one fewer. The count is fixed for the run (it "
        "changes float rounding, so it is recorded and restored): a core taken after a job has started still slows "
        'it as in "before".',
    ]
    return "\n".join(lines) + "\n"


def write(results: dict) -> None:
    from benchmarks.markdown import replace_section

    RESULTS_JSON.write_text(json.dumps(results, indent=1) + "\n")
    replace_section(RESULTS_MD, HEADING, markdown(results))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.busy", description=__doc__.split("\n")[0])
    parser.add_argument("--batches", type=int, default=40, help="training batches per timing")
    parser.add_argument("--repeats", type=int, default=3, help="timings per process")
    parser.add_argument("--rounds", type=int, default=2, help="times every setting runs in each state")
    parser.add_argument("--data-root", default=os.environ.get("VAE_SWEEP_DATA_DIR", str(REPO / "data")))
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(args.worker, args.batches, args.repeats, args.data_root)))
        return 0
    results = run_all(args)
    write(results)
    print(markdown(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
