"""The one place where a user's mistake becomes one `error:` line and exit code 1, and a stop signal (Ctrl-C, SIGTERM,
SIGHUP) one `interrupted` line and exit code 128 + its number (130, 143, 129), not a traceback; and how a command's
process treats the garbage collector, from its imports to its exit."""

from __future__ import annotations

import atexit
import dataclasses
import functools
import gc
import os
import re
import sys
from typing import Callable, TypeVar

from hydra.core.hydra_config import HydraConfig
from hydra.errors import CompactHydraException
from hydra.types import RunMode
from omegaconf import DictConfig
from omegaconf.errors import OmegaConfBaseException

from vae_sweep.core.signals import Stopped, stoppable
from vae_sweep.errors import UserError

T = TypeVar("T")


def _user_message(error: BaseException) -> str:
    message = str(error).split("\nConfig search path:")[0].strip()
    cause = error.__cause__
    if isinstance(cause, OmegaConfBaseException):
        # OmegaConf appends full_key / object_type lines; the first line says what is wrong.
        message += "\n" + str(cause).strip().splitlines()[0]
    # Hydra lists a group's options one per line: on one line they stay an `error:` line.
    message = re.sub(r"\n*Available options in '([^']+)':((?:\n\t\S+)+)", _options_line, message)
    return message + _foreign_model_key(message)


def _options_line(match: re.Match) -> str:
    return f"; available options in '{match.group(1)}': " + ", ".join(match.group(2).split())


def _foreign_model_key(message: str) -> str:
    """A key of another family's schema: name the keys the chosen family has."""
    found = re.search(r"Key '(\w+)' not in '(\w+)'", message)
    if found is None:
        return ""
    from vae_sweep.core.models import schemas

    for family, schema in schemas().items():
        if schema.__name__ == found.group(2):
            keys = ", ".join(field.name for field in dataclasses.fields(schema))
            return f"\nmodel={family} has the keys {keys}; other families: model=" + ",".join(schemas())
    return ""


def report_user_error(error: BaseException) -> None:
    sys.stderr.write(f"error: {_user_message(error)}\n")


def single_run_exits_on_user_error(task: Callable[[DictConfig], T]) -> Callable[[DictConfig], T]:
    """A Hydra task function whose user error, in a single run, ends the process with its message alone.

    Hydra prints "Error executing job with overrides" before re-raising a job's exception, so the exit has to happen
    inside the job. In a multirun the error goes on to the sweeper, which lists it among the failed jobs.
    """

    @functools.wraps(task)
    def wrapped(cfg: DictConfig) -> T:
        try:
            return task(cfg)
        except UserError as error:
            if HydraConfig.get().mode == RunMode.MULTIRUN:
                raise
            report_user_error(error)
            raise SystemExit(1) from None

    return wrapped


def report_interrupted(stop: KeyboardInterrupt, consequence: str = "") -> int:
    """One line for a stop signal; returns the exit code that says which one (a bare KeyboardInterrupt: Ctrl-C)."""
    name, code = (stop.name, stop.exit_code) if isinstance(stop, Stopped) else ("SIGINT", 130)
    sys.stderr.write(f"interrupted by {name}{consequence}\n")
    return code


def exit_on_user_error(main: Callable[[list[str] | None], int], argv: list[str] | None = None) -> int:
    """A plain (non-Hydra) command's main(argv) -> exit code, with a user error as one `error:` line and code 1."""
    try:
        with stoppable():
            return main(argv)
    except UserError as error:
        report_user_error(error)
        return 1
    except KeyboardInterrupt as stop:
        return report_interrupted(stop)


def main_with_clean_errors(hydra_main: Callable[[], object]) -> None:
    """Run a @hydra.main function; print user errors (bad config, missing data, ...) as `error: ...`."""
    try:
        with stoppable():
            if os.environ.get("HYDRA_FULL_ERROR") == "1":
                hydra_main()
                return
            # Hydra re-raises instead of printing its own report, so the message below is the only one.
            os.environ["HYDRA_FULL_ERROR"] = "1"
            try:
                hydra_main()
            except (UserError, CompactHydraException, OmegaConfBaseException) as error:
                report_user_error(error)
                sys.exit(1)
    except KeyboardInterrupt as stop:
        resume = ": runs are marked KILLED with their checkpoints kept; run the same command again to resume them."
        sys.exit(report_interrupted(stop, resume))


def collect_only_new_objects() -> None:
    """For a process that ends with this command: keep the garbage collector off the objects that live until exit.

    The imports' objects (~170,000 once torch, Hydra and the jobs' modules are in) last the whole process, yet every
    full collection traverses them again; frozen now, a job's full collections look only at what it made since. At
    exit, the interpreter's final collections would traverse everything once more just before the OS frees it all:
    with torch loaded ~0.4-0.8 s at the end of every command (benchmarks/SPEEDUPS.md). gc.freeze only moves objects
    out of the collector's reach: atexit handlers (registered before or after this one), weakref finalizers and the
    flushing of stdout and stderr all still run. What is skipped are the __del__ methods of objects still alive at
    exit, which Python does not promise to call anyway."""
    gc.freeze()
    atexit.register(gc.freeze)
