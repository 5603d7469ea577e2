"""`python -m benchmarks.search`: what pruning and parallel workers buy a search on real MNIST; writes
benchmarks/results_search.json and the "## Search" section at the end of RESULTS.md.

Pruning: the same search of latent size x learning rate (seed 0, `--trials` trials of `--epochs` epochs, one worker
with the cores free as it starts) with search.pruner=none, =successive_halving and =hyperband, once with TPE and once
with random sampling: wall time and the best test loss each found; then the unpruned search's learning curves are
replayed through each pruner (what it would have stopped of those very trials, and Hyperband's spread over study
names, which assign its brackets). `--only LABEL ...` runs some searches again and keeps the others' results.
Parallelism: a random search of `--parallel-trials` trials of `--parallel-epochs` epochs,
no pruning, with search.parallel=1 and =2, one torch thread per worker: trials per minute. Each search runs as
`python -m vae_sweep -m hydra/sweeper=search ...` in a fresh folder; the machine's matmul rate and load are measured
in the same run.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.busy import matmul_gflops
from benchmarks.common import loadavg, run_process, subprocess_env, vae_sweep_command
from benchmarks.markdown import replace_section

REPO = Path(__file__).resolve().parents[1]
RESULTS_JSON = REPO / "benchmarks" / "results_search.json"
RESULTS_MD = REPO / "benchmarks" / "RESULTS.md"
HEADING = "## Search"
SPACE = (
    "search.space.model.latent=tag(log, int(interval(2, 64)))",
    "search.space.optimizer.lr=tag(log, interval(1e-4, 3e-3))",
)
QUIET = ("eval.enabled=false", "tracking.image_every=0", "tracking.system_metrics_s=0")
TARGET_WALL_CUT = 0.40  # pruning cuts wall time by at least this much
TARGET_LOSS_NATS = 1.0  # with the best test loss within this of the unpruned search's
TARGET_SPEEDUP = 1.7  # parallel=2 over parallel=1, trials per minute
SAMPLERS = ("tpe", "random")
PRUNERS = ("none", "successive_halving", "hyperband")  # the first is the baseline of the others
REPLAY_NAMES = 30  # study names tried when replaying Hyperband, whose bracket of a trial hashes the name


def study_trials(folder: Path) -> list:
    """The trials of the one study a search in `folder` ran."""
    import optuna

    storage = f"sqlite:///{folder}/optuna.db"
    (summary,) = optuna.get_all_study_summaries(storage)
    return optuna.load_study(study_name=summary.study_name, storage=storage).get_trials()


def study_outcome(trials: list) -> dict:
    complete = [t for t in trials if t.state.name == "COMPLETE"]
    best = min(complete, key=lambda t: t.value) if complete else None
    epochs_trained = sum(len(t.intermediate_values) for t in trials)
    return {
        "trials": len(trials),
        "complete": len(complete),
        "pruned": sum(t.state.name == "PRUNED" for t in trials),
        "failed": sum(t.state.name == "FAIL" for t in trials),
        "epochs_trained": epochs_trained,
        "best_loss": best.value if best else None,
        "best_params": best.params if best else None,
    }


def replay(trials: list) -> dict:
    """The unpruned search's per-epoch objective fed, trial by trial in their order, through each pruner: the epochs
    it would have trained and the best loss it would have kept, from learning curves measured once."""
    import optuna

    from vae_sweep.search.study import Plan

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    epochs = max(len(t.intermediate_values) for t in trials)
    out = {}
    for pruner in PRUNERS[1:]:
        names = [f"replay-{i}" for i in range(REPLAY_NAMES if pruner == "hyperband" else 1)]
        outcomes = [_replayed(trials, Plan.pruner_for(pruner, warmup_epochs=1, epochs=epochs), name) for name in names]
        out[pruner] = {"epochs_trained": [o[0] for o in outcomes], "best_loss": [o[1] for o in outcomes]}
    return out


def _replayed(trials, pruner, name: str) -> tuple[int, float]:
    import optuna

    study = optuna.create_study(study_name=name, pruner=pruner)
    trained, best = 0, float("inf")
    for done in sorted(trials, key=lambda t: t.number):
        trial = study.ask(done.distributions)
        curve = sorted(done.intermediate_values.items())
        for epoch, value in curve:
            trained += 1
            trial.report(value, epoch)
            if trial.should_prune():
                study.tell(trial, state=optuna.trial.TrialState.PRUNED)
                break
        else:
            best = min(best, done.value)
            study.tell(trial, done.value)
    return trained, best


def search(label: str, overrides: list[str], args, root: Path) -> dict:
    folder = root / label.replace(" ", "_").replace("=", "")
    folder.mkdir()
    command = vae_sweep_command("hydra/sweeper=search", *QUIET, *overrides, multirun=True)
    result = run_process(command, folder, subprocess_env(Path(args.data_root)), args.timeout, folder / "search.log")
    trials = study_trials(folder) if (folder / "optuna.db").exists() else []
    outcome = study_outcome(trials) if trials else {}
    if label.endswith(f"pruner={PRUNERS[0]}") and trials and all(t.state.name == "COMPLETE" for t in trials):
        outcome["replay"] = replay(trials)  # the baseline of a pruning group: its curves, through each pruner
    print(f"  {label}: {result['wall_s']:.0f} s, exit {result['returncode']}, {outcome}", flush=True)
    return {"label": label, "overrides": overrides, **result, **outcome}


def planned(args) -> dict[str, list[str]]:
    """Each search of the benchmark by its label: the pruning pairs (one per sampler) and the parallel pair."""
    searches = {}
    for sampler in SAMPLERS:
        for pruner in PRUNERS:
            searches[f"{sampler} {args.trials}x{args.epochs}, pruner={pruner}"] = [
                f"search.trials={args.trials}", f"training.epochs={args.epochs}", f"search.sampler={sampler}",
                f"search.pruner={pruner}", *SPACE,
            ]  # fmt: skip
    for workers in (1, 2):
        searches[f"parallel={workers}"] = [
            f"search.trials={args.parallel_trials}", f"training.epochs={args.parallel_epochs}",
            "search.sampler=random", "training.threads=1", f"search.parallel={workers}", *SPACE,
        ]  # fmt: skip
    return searches


def run_all(args, earlier: dict | None) -> dict:
    """Every planned search, or with --only those labels, the others kept from the earlier results."""
    began, loads = time.monotonic(), [loadavg()]
    rate = matmul_gflops()
    root = Path(tempfile.mkdtemp(prefix="vae-sweep-search-bench-"))
    runs = dict(earlier["runs"]) if earlier and args.only else {}
    for label, overrides in planned(args).items():
        if args.only and label not in args.only:
            continue
        runs[label] = search(label, overrides, args, root)
        runs[label]["when"] = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
        runs[label]["matmul_gflops"] = rate
        loads.append(loadavg())
        # A long benchmark keeps what it measured so far: an interrupted one leaves its finished searches.
        write(summary(args, runs, began, loads, rate))
    return summary(args, runs, began, loads, rate)


def summary(args, runs: dict, began: float, loads: list, rate: float) -> dict:
    return {
        "when": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": "python -m benchmarks.search " + " ".join(sys.argv[1:]),
        "machine": {
            "usable cores": len(os.sched_getaffinity(0)),
            "python": platform.python_version(),
            "matmul_gflops": rate,
        },  # fmt: skip
        "load_average": {"start": loads[0], "during": loads[1:-1], "end": loads[-1]},
        "settings": vars(args),
        "minutes": (time.monotonic() - began) / 60,
        "runs": runs,
    }


def verdict(met: bool) -> str:
    return "**met**" if met else "**not met**"


def ran(run: dict, results: dict) -> str:
    """When a search ended and the matmul rate of the benchmark run it was part of."""
    return f"{run.get('when', results['when'])[:16].replace('T', ' ')} UTC, {run.get('matmul_gflops', 0):.0f} GFLOP/s"


def groups(runs: dict) -> dict[str, dict[str, dict]]:
    """The pruning searches by sampler and budget ('tpe 24x10'), each by pruner; only groups with their baseline."""
    out: dict[str, dict[str, dict]] = {}
    for label, run in runs.items():
        name, _, pruner = label.partition(", pruner=")
        if pruner:
            out.setdefault(name, {})[pruner] = run
    return {name: group for name, group in out.items() if PRUNERS[0] in group}


def pruning_lines(results: dict) -> list[str]:
    lines = [
        "| search (sampler trials x epochs) | wall | trials complete / pruned | epochs trained | best test loss (nats) "
        "| best trial | ran |",
        "|---|---|---|---|---|---|---|",
    ]
    found = groups(results["runs"])
    for group in found.values():
        for run in (group[pruner] for pruner in PRUNERS if pruner in group):
            best = ", ".join(f"{k}={v:.3g}" for k, v in (run["best_params"] or {}).items())
            lines.append(
                f"| {run['label']} | {run['wall_s'] / 60:.1f} min | {run['complete']} / {run['pruned']} | "
                f"{run['epochs_trained']} | {run['best_loss']:.2f} | {best} | {ran(run, results)} |"
            )
    lines.append("")
    for name, group in found.items():
        none = group[PRUNERS[0]]
        for pruner in (p for p in PRUNERS[1:] if p in group):
            run = group[pruner]
            cut, gap = 1 - run["wall_s"] / none["wall_s"], run["best_loss"] - none["best_loss"]
            lines.append(
                f"- {name}: {pruner} cuts wall time by {cut:.0%} (target >= {TARGET_WALL_CUT:.0%}): "
                f"{verdict(cut >= TARGET_WALL_CUT)}; its best test loss is {gap:+.2f} nats from the unpruned "
                f"search's (target within {TARGET_LOSS_NATS:g}): {verdict(abs(gap) <= TARGET_LOSS_NATS)}"
            )
    lines += [
        "",
        "Successive halving judges every trial at epochs 1, 3 and 9 against all the trials that reached that epoch "
        "before it; Hyperband (for 10 epochs) deals the trials out to three brackets that start judging at epochs 1, 3 "
        "and 9, so each trial meets only its bracket's rivals and the last bracket's trials train to epoch 9 unjudged.",
    ]
    replayed = {name: group[PRUNERS[0]]["replay"] for name, group in found.items() if group[PRUNERS[0]].get("replay")}
    if replayed:
        lines += [
            "",
            "Replayed: each unpruned search's per-epoch test losses fed, trial by trial, through the pruners as "
            "`search.pruner` builds them (the epochs they would have let those same trials train, and the best "
            f"loss kept). Hyperband assigns a trial's bracket by a hash of the study name and trial number, so it "
            f"is replayed under {REPLAY_NAMES} study names: median and range.",
            "",
            "| unpruned search | pruner | epochs trained | best test loss (nats), worst case |",
            "|---|---|---|---|",
        ]
        for name, replay in replayed.items():
            none = found[name][PRUNERS[0]]
            lines.append(f"| {name} | none | {none['epochs_trained']} | {none['best_loss']:.2f} |")
            for pruner, outcome in replay.items():
                trained = sorted(outcome["epochs_trained"])
                spread = f" ({trained[0]}-{trained[-1]})" if len(trained) > 1 else ""
                worst = max(outcome["best_loss"])
                lines.append(f"| {name} | {pruner} | {statistics.median(trained):.0f}{spread} | {worst:.2f} |")
    return lines


def parallel_lines(results: dict) -> list[str]:
    runs, settings = results["runs"], results["settings"]
    if not {"parallel=1", "parallel=2"} <= runs.keys():
        return []
    one, two = runs["parallel=1"], runs["parallel=2"]
    throughput = {run["label"]: run["trials"] / (run["wall_s"] / 60) for run in (one, two)}
    speedup = throughput["parallel=2"] / throughput["parallel=1"]
    lines = [
        f"Parallel workers: a random search of {settings['parallel_trials']} trials of {settings['parallel_epochs']} "
        "epochs, no pruning, `training.threads=1`, `search.parallel=1` then `=2` (joblib workers, each asking for its "
        "next trial as soon as its last one ends).",
        "",
        "| search | wall | trials | trials per minute | ran |",
        "|---|---|---|---|---|",
    ]
    for run in (one, two):
        lines.append(
            f"| {run['label']} | {run['wall_s'] / 60:.1f} min | {run['trials']} | {throughput[run['label']]:.2f} "
            f"| {ran(run, results)} |"
        )
    lines += [
        "",
        f"- parallel=2 / parallel=1 = {speedup:.2f}x the trial throughput (target >= {TARGET_SPEEDUP}): "
        f"{verdict(speedup >= TARGET_SPEEDUP)}",
    ]
    return lines


def markdown(results: dict) -> str:
    load = results["load_average"]
    lines = [
        HEADING,
        "",
        f"Written by `{results['command']}` on {results['when']} ({results['minutes']:.1f} min), real MNIST, "
        f"evaluation at the end of runs off (the per-epoch test loss is the objective). Machine: "
        f"{results['machine']['usable cores']} usable cores, dense float32 matmul "
        f"{results['machine']['matmul_gflops']:.0f} GFLOP/s (1024², measured in this run); load average (1 min) "
        f"{load['start']:.2f} at the start, {load['end']:.2f} at the end. Each row says when it ran and the matmul "
        "rate of that run: rows of one table ran one after the other on the same machine.",
        "",
        "Pruning: `hydra/sweeper=search` over `model.latent=tag(log, int(interval(2, 64)))` x "
        "`optimizer.lr=tag(log, interval(1e-4, 3e-3))`, seed 0, the budget in the search's name, one worker at a "
        "time with the cores free as it starts; with TPE, and with random sampling (whose proposals do not "
        "depend on the results, so the searches of a random group try the same points and differ only in what "
        "pruning stopped).",
        "",
        *pruning_lines(results),
        "",
        *parallel_lines(results),
    ]
    return "\n".join(lines) + "\n"


def write(results: dict) -> None:
    RESULTS_JSON.write_text(json.dumps(results, indent=1) + "\n")
    replace_section(RESULTS_MD, HEADING, markdown(results))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.search", description=__doc__.split("\n")[0])
    parser.add_argument("--trials", type=int, default=24, help="trials of the pruning comparison")
    parser.add_argument("--epochs", type=int, default=10, help="epochs of each of its trials")
    parser.add_argument("--parallel-trials", type=int, default=8, help="trials of the parallel comparison")
    parser.add_argument("--parallel-epochs", type=int, default=3, help="epochs of each of its trials")
    parser.add_argument("--timeout", type=float, default=3600, help="seconds one search may take")
    parser.add_argument("--data-root", default=os.environ.get("VAE_SWEEP_DATA_DIR", str(REPO / "data")))
    parser.add_argument("--render", action="store_true", help="rewrite the section from results_search.json")
    parser.add_argument("--only", nargs="*", help="run these searches (labels as in the table); keep the others")
    args = parser.parse_args(argv)
    earlier = json.loads(RESULTS_JSON.read_text()) if RESULTS_JSON.exists() else None
    results = earlier if args.render else run_all(args, earlier)
    write(results)
    print(markdown(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
