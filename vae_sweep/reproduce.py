"""`python -m vae_sweep.reproduce RUN_ID|JOB_DIR [overrides...]`: rerun a job and compare the results."""

import sys

from vae_sweep.cli import collect_only_new_objects, exit_on_user_error


def main(argv: list[str] | None = None) -> int:
    from vae_sweep.analysis.reproduce import main as reproduce

    return exit_on_user_error(reproduce, argv)


if __name__ == "__main__":
    collect_only_new_objects()
    sys.exit(main())
