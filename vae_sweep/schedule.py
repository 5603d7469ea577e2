"""Learning-rate schedules by epoch: plain arithmetic that the config checks and the optimizer both use."""

from __future__ import annotations

import itertools

BURDA = "burda"
# Burda et al. (2015), section 5: stage i = 0..7 runs 3^i passes at lr * 10^(-i/7), 3,280 passes in all.
BURDA_STAGES = 8
BURDA_STAGE_BASE = 3
BURDA_DECADE_STAGES = 7


def burda_stage_passes(pass_scale: float) -> list[int]:
    """Passes of each stage of the Burda schedule, 3^i times pass_scale, at least one: a smaller scale keeps every
    learning rate of the schedule but spends fewer passes at each."""
    return [max(1, round(BURDA_STAGE_BASE**stage * pass_scale)) for stage in range(BURDA_STAGES)]


def burda_lr(epoch: int, lr: float, pass_scale: float = 1.0) -> float:
    """The learning rate of 1-based `epoch` under Burda et al.'s schedule: lr * 10^(-i/7) in stage i."""
    passes = burda_stage_passes(pass_scale)
    stage = next((stage for stage, end in enumerate(itertools.accumulate(passes)) if epoch <= end), None)
    if stage is None:
        raise ValueError(f"epoch {epoch} is past the schedule's {sum(passes)} passes")
    return lr * 10 ** (-stage / BURDA_DECADE_STAGES)


def epochs(name: str, pass_scale: float) -> int | None:
    """The number of epochs a schedule is defined for; None when any number will do (constant)."""
    return sum(burda_stage_passes(pass_scale)) if name == BURDA else None
