"""The MLflow store and experiment: reached or created once, safely under parallel jobs, failing in one message.

MLflow is imported by the functions that reach a store, not by this module: a job with tracking off never loads it.
"""

from __future__ import annotations

import os
import urllib.error
import urllib.parse
import urllib.request
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

from filelock import FileLock

from vae_sweep import names
from vae_sweep.errors import UserError

if TYPE_CHECKING:
    from mlflow.tracking import MlflowClient


def is_remote(uri: str) -> bool:
    return uri.startswith(("http://", "https://"))


def check_reachable(uri: str, timeout: float = 5.0) -> None:
    """Fail fast with one message when a tracking server does not answer (MLflow itself retries for minutes)."""
    if not is_remote(uri):
        return
    try:
        urllib.request.urlopen(f"{uri.rstrip('/')}/health", timeout=timeout).close()
    except (urllib.error.URLError, OSError) as error:
        reason = getattr(error, "reason", error)
        raise UserError(
            f"tracking.uri={uri} is unreachable ({reason}). Start the server, fix tracking.uri or "
            "MLFLOW_TRACKING_URI, or run with tracking.enabled=false."
        ) from None


def check_signed_in(client: MlflowClient, uri: str) -> None:
    """Fail with one message when the server refuses this user: /health answers anyone, so ask for an experiment."""
    if is_remote(uri):
        with refusals_explained(uri):
            client.search_experiments(max_results=1)


@contextmanager
def refusals_explained(uri: str) -> Iterator[None]:
    """A server's 401 or 403 becomes the UserError that names the credential variables; other errors pass on."""
    from mlflow.environment_variables import MLFLOW_TRACKING_PASSWORD, MLFLOW_TRACKING_USERNAME
    from mlflow.exceptions import MlflowException

    try:
        yield
    except MlflowException as error:
        status = error.get_http_status_code()
        user = MLFLOW_TRACKING_USERNAME.get()
        variables = f"{MLFLOW_TRACKING_USERNAME.name} and {MLFLOW_TRACKING_PASSWORD.name}"
        if status == 401 and not (user and MLFLOW_TRACKING_PASSWORD.get()):
            raise UserError(
                f"tracking.uri={uri} requires a login (HTTP 401): set {variables} to your account on that server "
                "(its admin creates one), or run with tracking.enabled=false."
            ) from None
        if status == 401:
            raise UserError(
                f"tracking.uri={uri} refused the login of user {user!r} (HTTP 401): check {variables}, or ask the "
                "server's admin to create or reset that account."
            ) from None
        if status == 403:
            raise UserError(
                f"tracking.uri={uri} does not allow user {user!r} this (HTTP 403: {error.message}); ask the "
                f"server's admin for EDIT permission, or set {variables} to another account."
            ) from None
        raise


EXPERIMENT_NOTE = """Variational autoencoders trained by vae-sweep: one run per sweep point.

- Sweep: `python -m vae_sweep -m model.latent=2,100,200 training.epochs=50,100` (one run per combination).
- Report: `python -m vae_sweep.report` compares the latest sweep (quality vs latent size, learning curves,
  findings); `--sweep <multirun folder>` or `--all` for others.
- Each run: learning curves `loss/train`, `loss/test` and the terms `loss/kl/*`, `loss/recon/*`, end-of-run
  `quality/` metrics, images per epoch in Model metrics, figures under Artifacts; its Description has the headline
  numbers.
"""


def describe_experiment(client: MlflowClient, experiment) -> None:
    """Make the MLflow UI open the experiment on its runs and say what it holds, unless it says so already."""
    tags = experiment.tags
    if tags.get(names.TAG_EXPERIMENT_KIND) is None:
        client.set_experiment_tag(experiment.experiment_id, names.TAG_EXPERIMENT_KIND, names.EXPERIMENT_KIND)
    if not tags.get(names.TAG_NOTE):
        client.set_experiment_tag(experiment.experiment_id, names.TAG_NOTE, EXPERIMENT_NOTE)


def ensure_experiment(client: MlflowClient, name: str, artifact_root: str | None) -> str:
    """The experiment's id, created on first use; safe when another process creates it at the same moment."""
    from mlflow.exceptions import MlflowException

    experiment = client.get_experiment_by_name(name)
    if experiment is None:
        location = Path(artifact_root).resolve().as_uri() if artifact_root else None
        tags = {names.TAG_EXPERIMENT_KIND: names.EXPERIMENT_KIND, names.TAG_NOTE: EXPERIMENT_NOTE}
        try:
            client.create_experiment(name, artifact_location=location, tags=tags)
        except MlflowException:
            if client.get_experiment_by_name(name) is None:
                raise
        experiment = client.get_experiment_by_name(name)
    describe_experiment(client, experiment)
    return experiment.experiment_id


# MLflow 3's UI opens every experiment's pages (runs, a run, its artifacts) in its GenAI mode (traces) until the user
# flips a switch, whatever the experiment's kind; a page's `workflowType` parameter opens it in model-training mode.
MODEL_TRAINING = {"workflowType": "machine_learning"}


def runs_route(experiment_id: str) -> str:
    """The MLflow UI's page of the experiment's runs, best test loss first, in model-training mode."""
    query = {**MODEL_TRAINING, "orderByKey": f"metrics.`{names.TEST_LOSS}`", "orderByAsc": "true"}
    return f"#/experiments/{experiment_id}/runs?{urllib.parse.urlencode(query)}"


def run_route(experiment_id: str, run_id: str, artifact: str | None = None) -> str:
    """A run's page in the MLflow UI, or one of its artifacts there, in model-training mode."""
    page = f"#/experiments/{experiment_id}/runs/{run_id}" + (f"/artifactPath/{artifact}" if artifact else "")
    return f"{page}?{urllib.parse.urlencode(MODEL_TRAINING)}"


def ui_link(uri: str, experiment_id: str) -> str:
    """Where to see the experiment's runs: its page on a tracking server, or how to serve a local store first."""
    route = runs_route(experiment_id)
    if is_remote(uri):
        return f"{uri.rstrip('/')}/{route}"
    return f"mlflow ui --backend-store-uri {uri}  then open http://127.0.0.1:5000/{route}"


def run_link(uri: str, experiment_id: str, run_id: str) -> str:
    """One run's page in the MLflow UI (a sweep's parent lists its jobs there); a local store served on port 5000."""
    base = uri.rstrip("/") if is_remote(uri) else "http://127.0.0.1:5000"
    return f"{base}/{run_route(experiment_id, run_id)}"


def default_tracking_uri() -> str:
    """MLFLOW_TRACKING_URI, else the embedded store of the current directory, as jobs launched here use it."""
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{Path.cwd() / 'mlflow.db'}"


def _sqlite_file(uri: str) -> Path | None:
    return Path(uri.removeprefix("sqlite:///")) if uri.startswith("sqlite:///") else None


def signed_in_client(uri: str) -> MlflowClient:
    """A client on a store that answers and, on a server with logins, accepts this user's credentials."""
    from mlflow.tracking import MlflowClient

    check_reachable(uri)
    client = MlflowClient(uri)
    check_signed_in(client, uri)
    return client


def existing_store(uri: str, hint: str) -> MlflowClient:
    """A client on a store that must exist already: MlflowClient would create an empty database rather than fail."""
    database = _sqlite_file(uri)
    if database is not None and not database.is_file():
        raise UserError(f"No MLflow store at {uri}; {hint}")
    return signed_in_client(uri)


def _creation_lock(uri: str) -> FileLock | nullcontext:
    """SQLite stores break when several processes create their tables at once; a lock file beside them serialises it."""
    database = _sqlite_file(uri)
    if database is None:
        return nullcontext()
    database.parent.mkdir(parents=True, exist_ok=True)
    return FileLock(f"{database}.lock")


def connect(uri: str, experiment: str, artifact_root: str | None) -> tuple[MlflowClient, str]:
    """A client on the store (created if new) and the experiment id."""
    with _creation_lock(uri):
        client = signed_in_client(uri)
        # A tracking server decides where artifacts go (its --artifacts-destination), not each client.
        with refusals_explained(uri):
            return client, ensure_experiment(client, experiment, None if is_remote(uri) else artifact_root)


def fail_orphaned_run(tracking_cfg, sweep_id: str, job: int, reason: str) -> str | None:
    """Mark FAILED the run that a job left RUNNING when it was killed without a chance to end it; its run id.

    The job is found by the tags every run carries (`sweep.id`, `sweep.job`); None when it had not started one.
    """
    if not tracking_cfg.enabled:
        return None
    client, experiment_id = connect(tracking_cfg.uri, tracking_cfg.experiment, tracking_cfg.artifact_root)
    query = (
        f"tags.`{names.TAG_SWEEP_ID}` = '{sweep_id}' and tags.`{names.TAG_SWEEP_JOB}` = '{job}' "
        "and attributes.status = 'RUNNING'"
    )
    runs = client.search_runs([experiment_id], filter_string=query)
    for run in runs:
        client.set_tag(run.info.run_id, names.TAG_ERROR, reason)
        client.set_terminated(run.info.run_id, "FAILED")
    return runs[0].info.run_id if runs else None


@dataclass
class Store:
    client: MlflowClient
    experiment_id: str

    def runs_link(self) -> str:
        return ui_link(self.client.tracking_uri, self.experiment_id)


def open_store(tracking_cfg) -> Store | None:
    """The configured store and experiment, created if new; None when tracking is off."""
    if not tracking_cfg.enabled:
        return None
    return Store(*connect(tracking_cfg.uri, tracking_cfg.experiment, tracking_cfg.artifact_root))


def runs_link(tracking_cfg) -> str | None:
    """Where to see the configured experiment's runs (see ui_link); None when tracking is off."""
    store = open_store(tracking_cfg)
    return None if store is None else store.runs_link()
