"""What a search hands the job it runs for one trial: tags for the run, and after every epoch the objective to report,
with the answer whether to stop there (pruned). The job knows nothing of Optuna; the search's worker sets this."""

from __future__ import annotations

from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Callable, Iterator


@dataclass
class Trial:
    name: str  # the run's name: what the trial tries
    tags: dict[str, str]
    objective: str  # the per-epoch metric reported
    report: Callable[[int, float], bool]  # (epoch, objective value) -> stop now: the trial is pruned
    evaluate_pruned: bool  # a pruned trial still gets the end-of-run evaluation
    epochs: int  # the trial's training.epochs: after the last one nothing is left to save, so nothing is pruned
    pruned_epoch: int | None = None  # the last epoch a pruned trial trained
    value: float | None = None  # the objective at the end of the job
    run_id: str | None = None

    def stop_after(self, epoch: int, metrics: dict[str, float]) -> bool:
        """fit()'s `should_stop`: report this epoch's objective; True when the pruner says stop and epochs are left.

        A trial that trained every epoch is complete whatever the pruner thinks of its value: pruned, it would skip
        its evaluation and drop out of every comparison."""
        if self.report(epoch, metrics[self.objective]) and epoch < self.epochs:
            self.pruned_epoch = epoch
            return True
        return False


_current: ContextVar[Trial | None] = ContextVar("vae_sweep_trial", default=None)


def current() -> Trial | None:
    """The trial the job in progress runs for; None outside a search."""
    return _current.get()


@contextmanager
def running(trial: Trial) -> Iterator[Trial]:
    token = _current.set(trial)
    try:
        yield trial
    finally:
        _current.reset(token)
