"""`python -m benchmarks.pruning`: how often a pruned search keeps the unpruned search's winner, from learning curves
measured once; writes benchmarks/results_pruning.json and the "## Pruning" section of RESULTS.md.

`--collect LABEL=FOLDER ...` first reads the complete trials of an unpruned random search that ran in FOLDER (its
optuna.db and its jobs' history.csv: per-epoch validation and test losses and epoch times) into
benchmarks/curves_pruning.json, as the pool of the space LABEL. The replay then draws searches of each budget (trials x
epochs) from each pool: `--draws` random sets of that many trials in random order (without replacement when the pool
holds enough, else with), each curve cut to the budget's epochs, and feeds each set through every candidate setting
the way a search's worker consults its pruner (vae_sweep.search.study.judged). Each draw has a study name of its own,
so Hyperband's brackets, which hash the name, differ from draw to draw. Per budget, space and setting: the share of
draws whose pruned best validation loss is within TARGET_NATS of the unpruned best, the same for the test loss of the
trial each picked, and the share of training time saved (by the measured epoch times).
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import random
import statistics
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

from benchmarks.common import git_state
from benchmarks.markdown import replace_section
from vae_sweep import names

REPO = Path(__file__).resolve().parents[1]
CURVES_JSON = REPO / "benchmarks" / "curves_pruning.json"
RESULTS_JSON = REPO / "benchmarks" / "results_pruning.json"
RESULTS_MD = REPO / "benchmarks" / "RESULTS.md"
HEADING = "## Pruning: which setting keeps the winner"
TARGET_NATS = 1.0  # a pruned search found as good a trial as the unpruned one when its best is within this
BUDGETS = ((8, 4), (16, 6), (24, 10))  # (trials, epochs)
DRAWS = 200
HALVING = ("successive_halving", "hyperband")  # the pruners with a reduction factor


@dataclass(frozen=True)
class Candidate:
    """One pruner setting: search.pruner; its warm-up in epochs, or with warmup_epochs None a fraction of
    training.epochs; the reduction factor of successive halving and Hyperband."""

    pruner: str
    warmup_epochs: int | None = 1
    warmup_fraction: float | None = None
    reduction_factor: int = 3

    def label(self) -> str:
        if self.pruner == "none":
            return "none"
        warmup = f"{self.warmup_fraction:g} x epochs" if self.warmup_epochs is None else f"{self.warmup_epochs}"
        factor = f", factor {self.reduction_factor}" if self.pruner in HALVING else ""
        return f"{self.pruner}, warm-up {warmup}{factor}"

    def warmup_for(self, epochs: int) -> int:
        if self.warmup_epochs is not None:
            return self.warmup_epochs
        return max(1, math.ceil(self.warmup_fraction * epochs))

    def pruner_for(self, epochs: int):
        from vae_sweep.search.study import Plan

        return Plan.pruner_for(self.pruner, self.warmup_for(epochs), epochs, self.reduction_factor)


CANDIDATES = (
    Candidate("none"),
    *(Candidate("successive_halving", warmup) for warmup in (1, 2, 3)),
    *(Candidate("successive_halving", 1, reduction_factor=factor) for factor in (2, 4)),
    *(Candidate("successive_halving", None, fraction, factor) for fraction in (0.5,) for factor in (2, 3, 4)),
    *(Candidate("median", warmup) for warmup in (1, 2)),
    Candidate("median", None, 0.5),
    Candidate("hyperband", 1),
    Candidate("hyperband", None, 0.5),
)
PRESET = Candidate("median", 2)  # conf/search/latent_lr.yaml with the default search.warmup_epochs


# ---- the pools: curves of unpruned searches ----------------------------------------------------------------------


def read_pool(folder: Path) -> list[dict]:
    """The complete trials of the unpruned search in `folder`, in trial order: parameters and per-epoch curves."""
    from benchmarks.search import study_trials
    from vae_sweep.analysis.reproduce import read_history

    pool = []
    for trial in sorted(study_trials(folder), key=lambda t: t.number):
        if trial.state.name != "COMPLETE":
            continue
        (history,) = folder.glob(f"multirun/*/*/{trial.number}/{names.HISTORY}")
        rows = read_history(history)
        reported = [trial.intermediate_values[epoch] for epoch in sorted(trial.intermediate_values)]
        val = [row[names.VAL_LOSS] for row in rows]
        if len(val) != len(reported) or not all(map(math.isclose, val, reported)):
            raise ValueError(f"{history}: its {names.VAL_LOSS} is not what trial {trial.number} reported")
        test, seconds = [row[names.TEST_LOSS] for row in rows], [row[names.EPOCH_TIME] for row in rows]
        pool.append({"trial": trial.number, "params": trial.params, "val": val, "test": test, "epoch_s": seconds})
    return pool


def search_overrides(folder: Path) -> list[str]:
    """The command-line overrides the search in `folder` ran with, as Hydra recorded them."""
    from omegaconf import OmegaConf

    (recorded,) = folder.glob("multirun/*/*/multirun.yaml")
    return list(OmegaConf.load(recorded).hydra.overrides.task)


def collect(pairs: list[str]) -> dict:
    """curves_pruning.json with the pools named LABEL=FOLDER added (or replaced)."""
    curves = json.loads(CURVES_JSON.read_text()) if CURVES_JSON.exists() else {"pools": {}}
    for pair in pairs:
        label, _, folder = pair.partition("=")
        trials = read_pool(Path(folder))
        curves["pools"][label] = {
            "collected": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "overrides": search_overrides(Path(folder)),
            "trials": trials,
        }
        print(f"  {label}: {len(trials)} complete trials of {len(trials[0]['val'])} epochs from {folder}")
    CURVES_JSON.write_text(json.dumps(curves, indent=1) + "\n")
    return curves


def inversions(trials: list[dict], epochs: int) -> float:
    """Share of trial pairs whose order by validation loss after epoch 1 is the reverse of their order at `epochs`:
    how far the first epoch misleads."""
    pairs = [(a, b) for i, a in enumerate(trials) for b in trials[i + 1 :]]
    flipped = sum((a["val"][0] < b["val"][0]) != (a["val"][epochs - 1] < b["val"][epochs - 1]) for a, b in pairs)
    return flipped / len(pairs)


# ---- the replay ------------------------------------------------------------------------------------------------


@dataclass
class Outcome:
    best: int | None  # index of the best complete trial
    complete: int
    seconds: float  # training time of the epochs trained


def replay(trials: list[dict], candidate: Candidate, epochs: int, name: str) -> Outcome:
    """One search of these trials, curves cut to `epochs`, under a candidate setting."""
    import optuna

    from vae_sweep.search.study import judged

    study = optuna.create_study(study_name=name, pruner=candidate.pruner_for(epochs))
    warmup, outcome = candidate.warmup_for(epochs), Outcome(None, 0, 0.0)
    for index, done in enumerate(trials):
        trial = study.ask()
        for epoch, value in enumerate(done["val"][:epochs], start=1):
            outcome.seconds += done["epoch_s"][epoch - 1]
            if judged(trial, epoch, value, warmup) and epoch < epochs:
                study.tell(trial, state=optuna.trial.TrialState.PRUNED)
                break
        else:
            study.tell(trial, value)
            outcome.complete += 1
            if outcome.best is None or value < trials[outcome.best]["val"][epochs - 1]:
                outcome.best = index
    return outcome


def draws(pool: list[dict], trials: int, count: int, seed: int) -> list[list[dict]]:
    """`count` searches of `trials` trials from the pool, each in a random order."""
    rng = random.Random(seed)
    if trials <= len(pool):
        return [rng.sample(pool, trials) for _ in range(count)]
    return [rng.choices(pool, k=trials) for _ in range(count)]


def gaps(trials: list[dict], outcome: Outcome, epochs: int) -> tuple[float, float]:
    """How much worse the pruned search's pick is than the unpruned one's: on validation loss, on test loss."""
    if outcome.best is None:
        return math.inf, math.inf
    unpruned = min(trials, key=lambda t: t["val"][epochs - 1])
    picked, last = trials[outcome.best], epochs - 1
    return picked["val"][last] - unpruned["val"][last], picked["test"][last] - unpruned["test"][last]


def measure(sets: list[list[dict]], candidate: Candidate, epochs: int) -> dict:
    """A candidate over the drawn searches of one budget."""
    within_val = within_test = few = 0
    saved, worst = [], 0.0
    for number, trials in enumerate(sets):
        outcome = replay(trials, candidate, epochs, f"replay-{number}")
        val_gap, test_gap = gaps(trials, outcome, epochs)
        within_val += val_gap <= TARGET_NATS
        within_test += test_gap <= TARGET_NATS
        few += outcome.complete < 2
        worst = max(worst, val_gap)
        saved.append(1 - outcome.seconds / sum(sum(t["epoch_s"][:epochs]) for t in trials))
    n = len(sets)
    return {
        "within_val": within_val / n, "within_test": within_test / n, "saved": statistics.mean(saved),
        "worst_val_gap": worst, "fewer_than_two_complete": few / n,
    }  # fmt: skip


def replay_all(curves: dict, count: int) -> list[dict]:
    rows = []
    for space, pool in curves["pools"].items():
        for trials, epochs in BUDGETS:
            sets = draws(pool["trials"], trials, count, seed=trials * 1000 + epochs)
            for candidate in CANDIDATES:
                figures = measure(sets, candidate, epochs)
                rows.append({"space": space, "trials": trials, "epochs": epochs, **asdict(candidate), **figures})
                print(f"  {space} {trials}x{epochs} {candidate.label()}: {figures}", flush=True)
    return rows


# ---- results ---------------------------------------------------------------------------------------------------


def pool_lines(curves: dict) -> list[str]:
    lines = [
        "| space | the unpruned search that measured it | trials x epochs | best validation loss | pairs of trials "
        "whose epoch-1 order is reversed at the last epoch |",
        "|---|---|---|---|---|",
    ]
    for space, pool in curves["pools"].items():
        trials, epochs = pool["trials"], len(pool["trials"][0]["val"])
        best = min(t["val"][-1] for t in trials)
        command = "`python -m vae_sweep -m " + " ".join(pool["overrides"]) + "`"
        lines.append(
            f"| {space} | {command}, {pool['collected'][:10]} | {len(trials)} x {epochs} | {best:.2f} | "
            f"{inversions(trials, epochs):.0%} |"
        )
    return lines


def setting_of(row: dict) -> Candidate:
    return Candidate(row["pruner"], row["warmup_epochs"], row["warmup_fraction"], row["reduction_factor"])


def space_lines(rows: list[dict], space: str) -> list[str]:
    budgets = [(trials, epochs) for trials, epochs in BUDGETS]
    lines = [
        f"| {space}: setting | " + " | ".join(f"{t} x {e}" for t, e in budgets) + " |",
        "|---|" + "---|" * len(budgets),
    ]
    for candidate in CANDIDATES:
        cells = []
        for trials, epochs in budgets:
            (row,) = [
                r for r in rows
                if r["space"] == space and (r["trials"], r["epochs"]) == (trials, epochs) and setting_of(r) == candidate
            ]  # fmt: skip
            cells.append(f"{row['within_val']:.0%} / {row['within_test']:.0%}, saves {row['saved']:.0%}")
        chosen = " (the preset's)" if candidate == PRESET else ""
        lines.append(f"| {candidate.label()}{chosen} | " + " | ".join(cells) + " |")
    return lines


def markdown(results: dict, curves: dict) -> str:
    lines = [
        HEADING,
        "",
        f"Written by `{results['command']}` on {results['when'][:16].replace('T', ' ')} UTC, code {results['code']}: "
        f"no training, a replay of the real-MNIST learning curves in benchmarks/curves_pruning.json (each an "
        "unpruned random search, `search.objective=loss/val` on `data.validation=10000` held-out training images, "
        "evaluation at the end of runs off).",
        "",
        *pool_lines(curves),
        "",
        f"Each cell: of {results['draws']} searches of that budget drawn from the pool (trials in random order, a "
        "study name each), the share whose pruned search's best validation loss is within "
        f"{TARGET_NATS:g} nat of the unpruned search's / the share whose picked trial's test loss is within "
        f"{TARGET_NATS:g} nat of the unpruned pick's; and the share of training time pruning saved. Warm-up: the "
        "first epoch a pruner judges (successive halving's first rung; the median pruner's first epoch; the median "
        "pruner also waits for 5 complete trials).",
        "",
        "Why draws from one pool stand for searches: a random sampler's proposals do not depend on the results, so a "
        "pruned random search tries the same kind of points as the unpruned one; TPE's first 10 trials are random "
        "too (its start-up), later ones depend on what pruning left, which a replay cannot show. A pool smaller than "
        "the budget is drawn with replacement (the lr pool, 10 trials, for 16 and 24). A curve's first epochs stand "
        "for a shorter run's: the runs have a constant learning rate and no KL warm-up, and nothing else in training "
        "depends on training.epochs.",
        "",
    ]
    for space in curves["pools"]:
        lines += [*space_lines(results["rows"], space), ""]
    return "\n".join([*lines, *preset_lines(results["rows"]), ""])


def preset_lines(rows: list[dict]) -> list[str]:
    """The preset's worst draw, and the setting that most often left fewer than two complete trials."""
    worst = max(r["worst_val_gap"] for r in rows if setting_of(r) == PRESET)
    few = max(rows, key=lambda r: r["fewer_than_two_complete"])
    return [
        f"The preset's setting ({PRESET.label()}): its worst draw, over every budget and space, kept a best "
        f"validation loss {worst:.2f} nats above the unpruned search's. Fewest complete trials: "
        f"{setting_of(few).label()} left fewer than two in {few['fewer_than_two_complete']:.0%} of the {few['space']} "
        f"{few['trials']} x {few['epochs']} draws (the most of any setting; results_pruning.json)."
    ]


def write(results: dict, curves: dict) -> None:
    RESULTS_JSON.write_text(json.dumps(results, indent=1) + "\n")
    replace_section(RESULTS_MD, HEADING, markdown(results, curves))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.pruning", description=__doc__.split("\n")[0])
    parser.add_argument("--collect", nargs="*", default=[], metavar="LABEL=FOLDER", help="add unpruned searches")
    parser.add_argument("--draws", type=int, default=DRAWS, help="searches drawn per budget and space")
    parser.add_argument("--render", action="store_true", help="rewrite the section from results_pruning.json")
    args = parser.parse_args(argv)
    curves = collect(args.collect) if args.collect else json.loads(CURVES_JSON.read_text())
    if args.render:
        results = json.loads(RESULTS_JSON.read_text())
    else:
        results = {
            "when": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "command": "python -m benchmarks.pruning " + " ".join(sys.argv[1:] if argv is None else argv),
            "code": git_state(),
            "draws": args.draws,
            "rows": replay_all(curves, args.draws),
        }
    write(results, curves)
    print(markdown(results, curves))
    return 0


if __name__ == "__main__":
    sys.exit(main())
