"""Stop signals handled the way Ctrl-C is: Ctrl-C (SIGINT), SIGTERM (`timeout`, `docker stop`, systemd, Kubernetes,
SLURM pre-emption) and SIGHUP (a closed terminal) become an exception in the main thread, so that a job writes its
checkpoint and marks its run KILLED, and the process exits with 128 + the signal's number.

Only the first signal counts: the ones after it (a second Ctrl-C, the same signal from both the terminal and a parent
process) are ignored while that stop is carried out, so that its checkpoint and its run's status are written whole.
`kill -9` still stops a process at once.
"""

from __future__ import annotations

import os
import signal
import threading
from contextlib import contextmanager
from typing import Callable, Iterable, Iterator

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class Stopped(KeyboardInterrupt):
    """A stop signal, raised where Ctrl-C raises KeyboardInterrupt: whatever handles one handles the other."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name

    @property
    def exit_code(self) -> int:
        """The shell's convention for a process ended by a signal: 130 for SIGINT, 143 for SIGTERM, 129 for SIGHUP."""
        return 128 + self.signum

    def __str__(self) -> str:
        return f"stopped by {self.name}"


class JobStopped(Exception):
    """A job that a stop signal ended in a worker process, as an ordinary error: its launcher collects it as a failed
    job, where a KeyboardInterrupt would make joblib kill the other workers in the middle of their own stop."""


_received: int | None = None  # the first stop signal this process got
_stoppable_depth = 0  # > 0 while a stop signal should raise Stopped here
_held_depth = 0  # > 0 while the main thread is in a held section: Stopped waits for its end
_pending = False  # a Stopped that waits for the held section to end
_forward_to: Callable[[], Iterable[int]] | None = None  # the processes that do this one's work, while they do it


def _handle(signum: int, frame) -> None:
    global _received, _pending
    if _received is not None:
        return
    _received = signum
    if _forward_to is not None:
        for pid in _forward_to():
            try:
                os.kill(pid, signum)
            except ProcessLookupError:
                pass
    elif _stoppable_depth and _held_depth:
        _pending = True
    elif _stoppable_depth:
        raise Stopped(signum)


def install() -> list[tuple[int, object]]:
    """Handle the stop signals nobody else handles, from now on; returns the (signal, handler) pairs it replaced.

    A handler a launcher set (submitit's for SIGTERM) or an ignored signal (SIGHUP under nohup) stays as it is. Python
    runs handlers in the main thread only, and only there can they be set.
    """
    if threading.current_thread() is not threading.main_thread():
        return []
    replaced = []
    for signum in STOP_SIGNALS:
        previous = signal.getsignal(signum)
        if previous in (signal.SIG_DFL, signal.default_int_handler):
            signal.signal(signum, _handle)
            replaced.append((signum, previous))
    return replaced


@contextmanager
def _handled() -> Iterator[None]:
    """Stop signals handled here for the section; the handlers it replaced come back after it, and a stop it
    received, having been raised, is forgotten."""
    global _received
    replaced = install()
    try:
        yield
    finally:
        if replaced:
            for signum, previous in replaced:
                signal.signal(signum, previous)
            _received = None


def is_stoppable() -> bool:
    """Whether a stop signal raises Stopped here, i.e. whether a caller up the stack carries the stop out."""
    return _stoppable_depth > 0


@contextmanager
def stoppable() -> Iterator[None]:
    """Within: the first stop signal raises Stopped in the main thread. In a process that called install(), a signal
    outside such a section is only remembered, and the next section raises it as it starts: a launcher's worker
    process between jobs stays alive, and a job it is handed after the stop ends before it begins."""
    global _stoppable_depth
    with _handled():
        if _received is not None:
            raise Stopped(_received)
        _stoppable_depth += 1
        try:
            yield
        finally:
            _stoppable_depth -= 1


@contextmanager
def forwarded(processes: Callable[[], Iterable[int]]) -> Iterator[None]:
    """While other processes do this one's work (a launcher's workers, a reproduction's job): a stop signal is passed
    on to `processes()` instead of raised here, so that each ends its own job, and raised once the section is over."""
    global _forward_to
    with _handled():
        if _received is not None:
            raise Stopped(_received)
        previous, _forward_to = _forward_to, processes
        try:
            yield
        except Exception:
            if _received is None:
                raise
            # What failed after the stop failed because of it (a worker that had not yet set its handler ended at once).
        finally:
            _forward_to = previous
        if _received is not None:
            raise Stopped(_received)


@contextmanager
def held() -> Iterator[None]:
    """A stop signal that arrives in the section raises Stopped as it ends, not in the middle of it: no file is left
    half written, no run status half set, no database transaction half done.

    Python runs signal handlers in the main thread, whichever thread the signal reached, so a handler that sees this
    flag is the deferral; blocking the signal (pthread_sigmask) in the main thread would not be, since torch's
    OpenMP threads and others would take it instead. A section that raises ends with its own exception.
    """
    global _held_depth, _pending
    _held_depth += 1
    try:
        yield
    finally:
        _held_depth -= 1
        release = _pending and not _held_depth
        if release:
            _pending = False
    if release:
        raise Stopped(_received)
