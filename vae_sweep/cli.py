"""Command-line error reporting: a user's mistake ends in one message and exit code 1, not a traceback."""

from __future__ import annotations

import os
import sys
from typing import Callable

from hydra.errors import CompactHydraException
from omegaconf.errors import OmegaConfBaseException


def _user_message(error: BaseException) -> str:
    message = str(error).split("\nConfig search path:")[0].strip()
    cause = error.__cause__
    if isinstance(cause, OmegaConfBaseException):
        # OmegaConf appends full_key / object_type lines; the first line says what is wrong.
        message += "\n" + str(cause).strip().splitlines()[0]
    return message


def main_with_clean_errors(hydra_main: Callable[[], object]) -> None:
    """Run a @hydra.main function; print user errors (bad config, missing data, ...) as `error: ...`."""
    if os.environ.get("HYDRA_FULL_ERROR") == "1":
        hydra_main()
        return
    # Hydra re-raises instead of printing its own report, so the message below is the only one.
    os.environ["HYDRA_FULL_ERROR"] = "1"
    try:
        hydra_main()
    except (CompactHydraException, OmegaConfBaseException) as error:
        sys.stderr.write(f"error: {_user_message(error)}\n")
        sys.exit(1)
    except KeyboardInterrupt:
        sys.stderr.write("interrupted: the run is marked KILLED; run the same command again to resume it.\n")
        sys.exit(130)
