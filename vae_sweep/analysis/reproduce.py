"""Re-run a recorded job from its stored config and say, metric by metric, whether the result matches.

python -m vae_sweep.reproduce RUN_ID [overrides...] [--atol 0] [--rtol 0] [--strict] [--tracking-uri URI]
python -m vae_sweep.reproduce multirun/2026-11-24/10-00-00/0 [overrides...]
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from vae_sweep import names
from vae_sweep.config import CONFIG_PACKAGE
from vae_sweep.core.signals import forwarded
from vae_sweep.errors import UserError

# Across machines or library versions float rounding differs from the first step on and training amplifies it; a
# run that trains the same way stays within this fraction of each original value (1 vs 2 threads, a rounding change of
# the same kind, stayed within 0.3% on test recon over 3 epochs).
CROSS_ENVIRONMENT_RTOL = 0.02


@dataclass
class Recorded:
    source: str
    hydra_dir: Path  # holds the job's config.yaml and overrides.yaml
    history: list[dict[str, float]]
    final: dict[str, float]
    provenance: dict[str, str]


def read_history(path: Path) -> list[dict[str, float]]:
    """The rows of a history.csv, its columns under their current names whichever version wrote it."""
    with open(path) as handle:
        return [
            {names.current_metric(key): float(value) for key, value in row.items()} for row in csv.DictReader(handle)
        ]


def _read_json(path: Path) -> dict:
    return json.loads(path.read_text()) if path.is_file() else {}


def from_job_dir(folder: Path) -> Recorded:
    hydra_dir = folder / names.HYDRA_DIR
    if not (hydra_dir / names.JOB_CONFIG).is_file():
        raise UserError(
            f"{folder} holds no .hydra/config.yaml; pass a job folder of a vae_sweep run or an MLflow run id."
        )
    if not (folder / names.HISTORY).is_file():
        raise UserError(
            f"{folder} holds no history.csv: the job never finished an epoch, so there is nothing to compare."
        )
    final = names.current_metrics(_read_json(folder / names.FINAL_METRICS))
    tags = _read_json(folder / names.PROVENANCE)
    return Recorded(str(folder), hydra_dir, read_history(folder / names.HISTORY), final, tags)


def from_run(run_id: str, tracking_uri: str | None, workdir: Path) -> Recorded:
    from mlflow.exceptions import MlflowException

    from vae_sweep.tracking.store import default_tracking_uri, existing_store

    uri = tracking_uri or default_tracking_uri()
    client = existing_store(uri, "pass --tracking-uri, or a job folder instead of a run id.")
    try:
        run = client.get_run(run_id)
    except MlflowException:
        raise UserError(f"No run {run_id!r} in the MLflow store at {uri}.") from None
    try:
        hydra_dir = Path(client.download_artifacts(run_id, names.ARTIFACT_HYDRA, str(workdir)))
        history = read_history(Path(client.download_artifacts(run_id, names.HISTORY, str(workdir))))
    except (MlflowException, OSError):
        raise UserError(
            f"Run {run_id} has no stored config (artifacts hydra/ and history.csv); it cannot be reproduced."
        ) from None
    final = names.current_metrics(run.data.metrics)
    return Recorded(run_id, hydra_dir, history, final, dict(run.data.tags))


def provenance_differences(
    recorded: dict[str, str], current: dict[str, str], prefixes: tuple[str, ...] = names.CODE_AND_DATA_PREFIXES
) -> list[str]:
    keys = sorted(k for k in set(recorded) | set(current) if k.startswith(prefixes))
    return [
        f"{key}: recorded {recorded.get(key, '(none)')}, now {current.get(key, '(none)')}"
        for key in keys
        if recorded.get(key) != current.get(key)
    ]


@dataclass
class RuntimeSettings:
    pinned: list[str]  # overrides that restore what the run recorded
    overridden: list[str]  # the user's overrides of such a setting to another value
    unrecorded: list[str]  # settings the run did not record (runs from before they were recorded)


def runtime_settings(recorded: dict[str, str], overrides: list[str]) -> RuntimeSettings:
    """What the result depends on that the stored config may leave open (threads, device), set back to what the run
    recorded, unless an override sets it."""
    settings = RuntimeSettings([], [], [])
    given = dict(override.lstrip("+").partition("=")[::2] for override in overrides)
    for tag, key in names.RUNTIME_SETTINGS.items():
        value = recorded.get(tag)
        if key in given:
            if value is not None and given[key] != value:
                settings.overridden.append(f"{key}={given[key]} (the run recorded {value})")
        elif value is None:
            settings.unrecorded.append(key)
        else:
            settings.pinned.append(f"{key}={value}")
    return settings


@dataclass
class Tolerance:
    atol: float = 0.0
    rtol: float = 0.0

    def __str__(self) -> str:
        return f"atol {self.atol:g}" + (f", rtol {self.rtol:g}" if self.rtol else "")


def _differs(a: float, b: float, tolerance: Tolerance) -> bool:
    if math.isnan(a) or math.isnan(b):
        return not (math.isnan(a) and math.isnan(b))
    return abs(a - b) > tolerance.atol + tolerance.rtol * abs(a)


def _largest(pairs: list[tuple[int, float, float]]) -> tuple[int, float, float]:
    """(epoch, |difference|, relative difference) where a metric's two runs differ most; NaN on one side counts."""

    def gap(pair):
        _, a, b = pair
        return math.inf if math.isnan(a) != math.isnan(b) else (0.0 if math.isnan(a) else abs(a - b))

    epoch, a, b = max(pairs, key=gap)
    difference = gap((epoch, a, b))
    return epoch, difference, difference / abs(a) if a else difference


def compare_histories(
    original: list[dict], reproduced: list[dict], atol: float, rtol: float = 0.0
) -> tuple[list[str], bool]:
    """Every epoch and every metric of the original against the reproduction: a missing epoch or metric, or one extra
    epoch, is a mismatch. Per metric, the largest difference over the epochs both runs have, and where it is."""
    tolerance = Tolerance(atol, rtol)
    epochs = min(len(original), len(reproduced))
    lines, agree = [f"per-epoch histories, epochs 1..{epochs}:"], len(original) == len(reproduced)
    if not agree:
        lines.append(f"  MISMATCH: the original has {len(original)} epochs, the reproduction {len(reproduced)}")
    keys = [key for key in original[0] if key != "epoch" and not names.is_machine_reading(key)] if original else []
    lines.append(f"  {'metric':<22}{'max |difference|':>18}{'relative':>11}{'at epoch':>10}")
    for key in keys:
        if epochs == 0 or any(key not in row for row in reproduced[:epochs]):
            lines.append(f"  {key:<22}{'missing in the reproduction':>39}  MISMATCH")
            agree = False
            continue
        both = zip(original[:epochs], reproduced[:epochs], strict=True)
        pairs = [(int(o.get("epoch", i + 1)), o[key], r[key]) for i, (o, r) in enumerate(both)]
        bad = any(_differs(a, b, tolerance) for _, a, b in pairs)
        agree &= not bad
        epoch, difference, relative = _largest(pairs)
        verdict = "MISMATCH" if bad else "ok"
        lines.append(f"  {key:<22}{difference:>18.3g}{relative:>11.2g}{epoch:>10}  {verdict}")
    return lines, agree


def compare_finals(
    original: dict[str, float], reproduced: dict[str, float], atol: float, rtol: float = 0.0
) -> tuple[list[str], bool]:
    """Every final metric of the original against the reproduction's; one the reproduction lacks is a mismatch."""
    keys = sorted(key for key in original if not names.is_machine_reading(key))
    lines, agree = [f"  {'final metric':<28}{'original':>14}{'reproduced':>14}{'|difference|':>14}"], True
    for key in keys:
        if key not in reproduced:
            lines.append(f"  {key:<28}{original[key]:>14.6g}{'missing':>14}{'':>14}  MISMATCH")
            agree = False
            continue
        bad = _differs(original[key], reproduced[key], Tolerance(atol, rtol))
        agree &= not bad
        difference = abs(original[key] - reproduced[key])
        verdict = "MISMATCH" if bad else "ok"
        lines.append(f"  {key:<28}{original[key]:>14.6g}{reproduced[key]:>14.6g}{difference:>14.3g}  {verdict}")
    return lines, agree


def write_primary_config(recorded: Recorded, folder: Path) -> None:
    """A config that is the stored job config on top of the typed schema, with today's Hydra settings."""
    (folder / "stored.yaml").write_text((recorded.hydra_dir / names.JOB_CONFIG).read_text())
    (folder / "reproduce.yaml").write_text(
        "defaults:\n  - schema\n  - hydra: default\n  - stored\n  - _self_\n"
        f"hydra:\n  searchpath:\n    - {CONFIG_PACKAGE}\n"
    )


def current_provenance(folder: Path, overrides: list[str]) -> dict[str, str]:
    """What this machine and checkout would record for the job: compose it to find its data files."""
    from hydra import compose, initialize_config_dir
    from hydra.core.hydra_config import HydraConfig

    from vae_sweep.config import register_configs, validate
    from vae_sweep.core.data import data_md5s, load_own
    from vae_sweep.core.models import schemas
    from vae_sweep.tracking.provenance import provenance

    register_configs(schemas())
    with initialize_config_dir(config_dir=str(folder), version_base="1.3"):
        cfg = compose("reproduce", overrides=overrides, return_hydra_config=True)
    HydraConfig.instance().set_config(cfg)
    validate(cfg)
    md5s = data_md5s(cfg.data, load_own(cfg.data))
    return {**provenance(Path(cfg.paths.root_dir)), **{f"{names.TAG_DATA_MD5}{k}": v for k, v in md5s.items()}}


def rerun(folder: Path, overrides: list[str], run_dir: Path, source: str) -> None:
    command = [
        sys.executable,
        "-m",
        "vae_sweep",
        f"--config-path={folder}",
        "--config-name=reproduce",
        f"hydra.run.dir={run_dir}",
        f"+tracking.tags.{names.TAG_REPRODUCES}={source}",
        # The original FINISHED run has the same fingerprint: without this the job would be skipped.
        "training.resume=never",
        # A reproduction is no job of the original's sweep, so not nested under its parent (++: older configs lack it).
        "++tracking.parent_run_id=null",
        *overrides,
    ]
    job = subprocess.Popen(command)
    # A stop signal goes to the job, which marks its run KILLED; this process waits for that, then stops too.
    with forwarded(lambda: [job.pid]):
        returncode = job.wait()
    if returncode != 0:
        raise UserError(f"The reproduction job failed; see {run_dir}.")


def check_environment(recorded: Recorded, current: dict[str, str], strict: bool) -> list[str]:
    """Warn, before training, of every difference in code, data, machine or libraries; returns the machine and
    library differences, which make bitwise equality unexpected."""
    code_and_data = provenance_differences(recorded.provenance, current)
    environment = provenance_differences(recorded.provenance, current, names.ENVIRONMENT_PREFIXES)
    for line in code_and_data + environment:
        print(f"warning: {line}", file=sys.stderr)
    if (code_and_data or environment) and strict:
        raise UserError("--strict: the environment differs from the recorded one (see the warnings above).")
    return environment


def chosen_tolerance(given: Tolerance | None, environment: list[str]) -> Tolerance:
    """The given tolerance, else exact on the machine and libraries that trained the run and CROSS_ENVIRONMENT_RTOL
    elsewhere, where it is stated before training."""
    if not environment:
        return given or Tolerance()
    tolerance = given or Tolerance(rtol=CROSS_ENVIRONMENT_RTOL)
    print(
        "note: another machine or library version than the run's (see the warnings): float rounding differs, so the "
        f"results are not expected to agree bit for bit; comparing within {tolerance}.",
        file=sys.stderr,
    )
    return tolerance


def reproduce(
    source: str, overrides: list[str], tolerance: Tolerance | None, strict: bool, tracking_uri: str | None
) -> bool:
    if tracking_uri and not any(o.startswith("tracking.uri=") for o in overrides):
        overrides = [*overrides, f"tracking.uri={tracking_uri}"]  # the new run lands beside the original
    with tempfile.TemporaryDirectory() as scratch:
        # Downloads and the generated config live apart: a downloaded hydra/ folder would shadow Hydra's own group.
        downloads, config_dir = Path(scratch) / "recorded", Path(scratch) / "config"
        config_dir.mkdir()
        folder = Path(source)
        recorded = from_job_dir(folder) if folder.is_dir() else from_run(source, tracking_uri, downloads)
        write_primary_config(recorded, config_dir)
        runtime = runtime_settings(recorded.provenance, overrides)
        overrides = [*runtime.pinned, *overrides]
        if runtime.pinned:
            print(f"restored from the run: {' '.join(runtime.pinned)}", file=sys.stderr)
        for line in runtime.overridden:
            print(f"note: {line}: float rounding differs from the run's, so results may too", file=sys.stderr)
        for key in runtime.unrecorded:
            print(f"warning: the run did not record the {key} it trained with; this machine chooses", file=sys.stderr)
        environment = check_environment(recorded, current_provenance(config_dir, overrides), strict)
        tolerance = chosen_tolerance(tolerance, environment)
        run_dir = Path("outputs") / "reproduce" / datetime.now().strftime("%Y-%m-%d_%H-%M-%S")
        rerun(config_dir, overrides, run_dir.resolve(), source)
    reproduced = from_job_dir(run_dir)
    lines, agree = compare_histories(recorded.history, reproduced.history, tolerance.atol, tolerance.rtol)
    if len(recorded.history) == len(reproduced.history):
        final_lines, finals_agree = compare_finals(recorded.final, reproduced.final, tolerance.atol, tolerance.rtol)
        lines, agree = final_lines + lines, agree and finals_agree
    else:
        lines.append("final metrics not compared: the two runs trained for different numbers of epochs (a MISMATCH)")
    print(f"original: {source}\nreproduced: {run_dir}\n" + "\n".join(lines))
    print(f"{'MATCH' if agree else 'MISMATCH'} ({tolerance})")
    if not agree and runtime.overridden:
        print(f"  likely reason: {', '.join(runtime.overridden)}: a different float rounding from the first step")
    return agree


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m vae_sweep.reproduce", description=__doc__.split("\n")[0])
    parser.add_argument("source", help="an MLflow run id, or a job folder holding .hydra/config.yaml")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides applied on top, e.g. training.epochs=5")
    parser.add_argument(
        "--atol", type=float, help="largest absolute difference that still agrees (default 0, see --rtol)"
    )
    parser.add_argument(
        "--rtol",
        type=float,
        help="largest difference relative to the original's value that still agrees (default 0 on the run's machine "
        f"and libraries, {CROSS_ENVIRONMENT_RTOL:g} elsewhere)",
    )
    parser.add_argument("--strict", action="store_true", help="stop when code, data, libraries or machine differ")
    parser.add_argument("--tracking-uri", help="the store holding RUN_ID (default: MLFLOW_TRACKING_URI or ./mlflow.db)")
    args = parser.parse_args(argv)
    tolerance = None if args.atol is None and args.rtol is None else Tolerance(args.atol or 0.0, args.rtol or 0.0)
    return 0 if reproduce(args.source, args.overrides, tolerance, args.strict, args.tracking_uri) else 1
