"""`python -m vae_sweep.report [--sweep DIR | --all] ...`: the comparison report of a sweep's runs."""

import sys

from vae_sweep.cli import collect_only_new_objects, exit_on_user_error


def main(argv: list[str] | None = None) -> int:
    from vae_sweep.analysis.report.cli import main as report

    return exit_on_user_error(report, argv)


if __name__ == "__main__":
    collect_only_new_objects()
    sys.exit(main())
