"""Peak memory: the peak resident memory of one `python -m vae_sweep training.epochs=1` job, run as a subprocess,
with and without the end-of-run evaluation, and what the imports alone hold."""

from __future__ import annotations

import sys

from benchmarks.common import Context, Section, fmt_s, run_process, store_runs, subprocess_env, vae_sweep_command

TARGET = "peak resident memory of one training job <= 1.2 GB"
EVAL_ON = "default job (eval on)"
EVAL_OFF = "eval.enabled=false"


def measure(ctx: Context) -> dict:
    env = subprocess_env(ctx.args.data_root)
    cache = ctx.args.classifier_cache
    cache.mkdir(parents=True, exist_ok=True)
    threads = f"training.threads={ctx.args.threads}"
    variants = [(EVAL_ON, ("eval.enabled=true",)), (EVAL_OFF, ("eval.enabled=false",))]
    if ctx.args.quick:
        variants = variants[1:]  # the end-of-run evaluation alone takes over a minute
    jobs = {}
    for label, extra in variants:
        folder = ctx.tmp / f"memory-{len(jobs)}"
        folder.mkdir()
        cold = not (cache / "mnist_cnn.pt").exists() and "eval.enabled=true" in extra
        args = vae_sweep_command("training.epochs=1", threads, f"eval.classifier_dir={cache}", *extra)
        result = run_process(args, folder, env, ctx.args.job_timeout, folder / "job.log")
        runs = store_runs(folder / "mlflow.db")
        result["run"] = runs[0] if runs else None
        result["classifier_trained_in_job"] = cold
        jobs[label] = result
        ctx.note_load()
        peak = result["maxrss_bytes"]
        print(f"  {label}: {result['wall_s']:.1f} s, peak RSS {(peak or 0) / 1e9:.2f} GB", flush=True)
    # What the imports alone hold: the floor under any job's peak.
    imports = {}
    for code in ("import torch", "import vae_sweep.jobs.task"):
        folder = ctx.tmp / f"imports-{len(imports)}"
        folder.mkdir()
        done = run_process([sys.executable, "-c", code], folder, env, 120, folder / "import.log")
        imports[code] = done["maxrss_bytes"]
    result = {"jobs": jobs, "imports_maxrss_bytes": imports}
    on, off = jobs.get(EVAL_ON), jobs.get(EVAL_OFF)
    if on and off and on["run"] and off["run"] and on["run"]["after_training_s"] and off["run"]["after_training_s"]:
        result["eval_cost_s"] = on["run"]["after_training_s"] - off["run"]["after_training_s"]
    if off and off["run"] and off["run"]["epoch_times_s"]:
        result["lone_job_epoch_s"] = off["run"]["epoch_times_s"][0]
    return result


def targets(memory: dict) -> list[tuple[str, bool | None]]:
    jobs = memory["jobs"]
    label = EVAL_ON if EVAL_ON in jobs else next(iter(jobs))
    peak = jobs[label]["maxrss_bytes"] or 0
    return [(f"{peak / 1e9:.2f} GB ({label})", peak <= 1.2e9)]


def render(memory: dict, results: dict) -> list[str]:
    out = [
        "## 6. Peak memory of one training job",
        "",
        "`python -m vae_sweep training.epochs=1` (default model, latent 2; tracking on a SQLite store in a "
        "temporary working directory) as a subprocess of a small Python parent, which reports "
        "`getrusage(RUSAGE_CHILDREN).ru_maxrss` (the job's peak RSS, its own children included).",
        "",
        "| job | peak RSS | wall | after the last epoch (figures, checkpoint, quality metrics) |",
        "|---|---|---|---|",
    ]
    for label, job in memory["jobs"].items():
        after = job["run"]["after_training_s"] if job.get("run") else None
        cold = " (trained the FID classifier: cold cache)" if job["classifier_trained_in_job"] else ""
        peak = job["maxrss_bytes"] or 0
        out.append(
            f"| {label}{cold} | {peak / 1e9:.2f} GB ({peak / 2**20:.0f} MiB) "
            f"| {fmt_s(job['wall_s'])} (exit {job['returncode']}) | {fmt_s(after)} |"
        )
    imports = memory.get("imports_maxrss_bytes", {})
    if imports:
        out.append("")
        out.append(
            "For scale, a bare `python -c` with only the imports peaks at: "
            + ", ".join(f"`{label}` {(value or 0) / 1e9:.2f} GB" for label, value in imports.items())
            + f" (torch {results['machine']['torch']}; a CUDA build loads its CUDA libraries even on a CPU-only "
            "machine)."
        )
    if memory.get("eval_cost_s") is not None:
        out.append("")
        out.append(f"The end-of-run evaluation (`eval.enabled=true`) costs {memory['eval_cost_s']:.1f} s per job.")
    out.append("")
    return out


SECTION = Section("memory", measure, render, target=TARGET, targets=targets)
