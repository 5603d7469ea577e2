"""`python -m benchmarks [--quick] [--only epoch,...]`: measure vae_sweep and write RESULTS.md and results.json.

Sections (run in this order; `--only` picks some):
  epoch       one epoch of vae_sweep's fit() (train_epoch + full test-set evaluate on in-memory tensors, the
              optimizer vae_sweep.core.optim.build_optimizer makes), alternated epoch by epoch with the conventional
              torchvision/DataLoader loop of pytorch/examples
  efficiency  model FLOPs per second as a fraction of the dense float32 matmul rate (torch.mm), same threads
  tracking    fit() epochs with a NullTracker vs an MlflowTracker on a temporary SQLite store, alternated
  startup     a tiny job (1 epoch, 16 units, no evaluation, no tracking) and `--cfg job` from command to exit,
              alternated with `python -c "import torch"`
  memory      peak resident memory of one `python -m vae_sweep training.epochs=1` job (a subprocess)
  sweep       `python -m vae_sweep -m experiment=seed training.epochs=2` under several launcher/thread settings,
              and the full sweep extrapolated from the measured per-epoch times
  full_sweep  (not run by default, ~20 min) the real `python -m vae_sweep -m experiment=seed`, every epoch, figure
              and end-of-run metric: with an empty classifier cache, as a machine's first sweep runs it, then again
              with the classifier cached
  jobs        (not run by default) whole-job wall time with tracking.enabled=true vs false

`--only SECTIONS --merge` re-runs some sections and keeps the others from the results.json beside --out;
`--render` only rewrites the markdown from that results.json.

Every figure is the median over repetitions; the spread (max - min) / median says how noisy it was. Torch's
intra-op threads are set explicitly (`--threads`, default 1): on a small shared machine, more OpenMP threads than
free cores makes every parallel region wait for a descheduled thread, which can slow an epoch tens of times.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shutil
import sys
import time
import traceback
from pathlib import Path

import torch

from benchmarks.common import REPO, Context, git_state, loadavg, machine_facts, now_iso
from benchmarks.markdown import write_markdown
from benchmarks.sections import SECTIONS

ALL_SECTIONS = tuple(section.name for section in SECTIONS)
DEFAULT_SECTIONS = tuple(section.name for section in SECTIONS if section.default)


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.splitlines()[0])
    default_root = os.environ.get("VAE_SWEEP_DATA_DIR", "./data")
    parser.add_argument("--data-root", type=Path, default=Path(default_root), help=f"default: {default_root}")
    parser.add_argument("--repeats", type=int, default=None, help="repetitions per figure (default 5; quick: 2)")
    parser.add_argument("--quick", action="store_true", help="smoke run: subsets, fewer repetitions (~2 min)")
    parser.add_argument("--only", default=",".join(DEFAULT_SECTIONS), help=f"sections, of {','.join(ALL_SECTIONS)}")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "RESULTS.md")
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        # The flush-to-zero mode is per thread and fixed when a thread starts (vae_sweep.jobs.runtime.set_cpu_threads),
        # so the in-process alternation can only switch it on the main thread: above 1 thread, both loops' other
        # threads keep denormals, as a job of vae_sweep does not.
        help="torch intra-op threads in-process (default 1; above 1, only the main thread flushes denormals)",
    )
    parser.add_argument("--sweep-eval", action="store_true", help="keep the end-of-run evaluation in sweep jobs")
    parser.add_argument("--classifier-cache", type=Path, default=REPO / "benchmarks" / ".cache" / "classifiers")
    parser.add_argument("--extra-sweep", action="store_true", help="also time the basic launcher with threads 1")
    parser.add_argument("--sweep-timeout", type=float, default=180.0, help="seconds per sweep before it is killed")
    parser.add_argument("--job-timeout", type=float, default=480.0, help="seconds per single job")
    parser.add_argument(
        "--full-sweep-args", nargs="*", default=[], help="overrides for the full_sweep section (default: none)"
    )
    parser.add_argument("--full-sweep-timeout", type=float, default=1800.0, help="seconds before it is killed")
    parser.add_argument(
        "--startup-baseline", type=Path, default=None, help="a checkout whose tiny job the startup section also times"
    )
    parser.add_argument("--keep-tmp", action="store_true", help="keep the temporary working directories")
    parser.add_argument("--render", action="store_true", help="only rewrite --out from the results.json beside it")
    parser.add_argument(
        "--merge", action="store_true", help="keep the other sections of an existing results.json beside --out"
    )
    args = parser.parse_args(argv)
    args.sections = [name.strip() for name in args.only.split(",") if name.strip()]
    unknown = set(args.sections) - set(ALL_SECTIONS)
    if unknown:
        parser.error(f"unknown sections {sorted(unknown)}; choose from {','.join(ALL_SECTIONS)}")
    if args.repeats is None:
        args.repeats = 2 if args.quick else 5
    args.data_root = args.data_root.resolve()
    args.classifier_cache = args.classifier_cache.resolve()
    return args


def measured_by(date: str, argv: list[str], code: str) -> dict:
    return {"date": date, "argv": argv, "code": code}


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    results_path = args.out.parent / "results.json"
    if args.render:
        write_markdown(json.loads(results_path.read_text()), args.out)
        print(f"rewrote {args.out}")
        return
    torch.set_num_threads(args.threads)
    began, started, load_start = time.perf_counter(), now_iso(), loadavg()
    results: dict = {"sections": {}, "argv": argv, "quick": args.quick, "repeats": args.repeats}
    if args.merge and results_path.exists():
        old = json.loads(results_path.read_text())
        results["sections"] = {k: v for k, v in old["sections"].items() if k not in args.sections}
        for section in results["sections"].values():  # kept sections say when, by what and on which code
            section.setdefault("measured", measured_by(old["machine"]["date"], old["argv"], old["machine"]["git"]))
    ctx = Context(args, results["sections"])
    for section in SECTIONS:
        if section.name not in args.sections:
            continue
        print(f"[{datetime.datetime.now():%H:%M:%S}] {section.name} (load {loadavg():.2f})", flush=True)
        start = time.perf_counter()
        try:
            figures = section.measure(ctx)
        except Exception:
            traceback.print_exc()
            figures = {"error": traceback.format_exc()}
        figures["section_s"] = time.perf_counter() - start
        figures["measured"] = measured_by(started, argv, git_state())
        results["sections"][section.name] = figures
        assert torch.get_num_threads() == args.threads, "a section changed torch's thread count"
    results["machine"] = machine_facts(load_start, ctx.loads or [load_start], began)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_markdown(results, args.out)
    results_path.write_text(json.dumps(results, indent=1, default=str))
    if not args.keep_tmp:
        shutil.rmtree(ctx.tmp, ignore_errors=True)
    print(f"wrote {args.out} and {results_path} in {results['machine']['total_s'] / 60:.1f} min")


if __name__ == "__main__":
    main()
