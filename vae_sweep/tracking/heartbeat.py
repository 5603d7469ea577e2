"""A heartbeat that goes on while the job is busy between epochs: the end-of-run evaluation (L_5000 takes ~25 min)
logs nothing for longer than `training.heartbeat_timeout_s`, and on another host its run and trial would be declared
dead and trained again."""

from __future__ import annotations

import logging
import threading
from contextlib import contextmanager
from typing import Callable, Iterator

log = logging.getLogger(__name__)

BEATS_PER_TIMEOUT = 4  # a beat lost to a locked database leaves three more before the timeout
LONGEST_BEAT_S = 60.0


def beat_interval(timeout_s: float) -> float:
    return min(timeout_s / BEATS_PER_TIMEOUT, LONGEST_BEAT_S)


@contextmanager
def beating(beat: Callable[[], None], timeout_s: float) -> Iterator[None]:
    """beat() from a daemon thread every beat_interval(timeout_s) while inside.

    beat() must not take a stop signal's held section (core.signals.held): that flag is the main thread's."""
    stop = threading.Event()
    every = beat_interval(timeout_s)

    def loop() -> None:
        while not stop.wait(every):
            try:
                beat()
            except Exception as error:  # the next beat tries again; a job does not fail for a missed one
                log.warning(f"Heartbeat not written ({type(error).__name__}: {error}); next in {every:.3g} s.")

    thread = threading.Thread(target=loop, name="vae-sweep-heartbeat", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
