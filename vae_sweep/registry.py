"""`python -m vae_sweep.registry register NAME [--sweep DIR | --run RUN_ID | --all]`: the best run as a model."""

import sys

from vae_sweep.cli import collect_only_new_objects, exit_on_user_error


def main(argv: list[str] | None = None) -> int:
    from vae_sweep.analysis.registry import main as registry

    return exit_on_user_error(registry, argv)


if __name__ == "__main__":
    collect_only_new_objects()
    sys.exit(main())
