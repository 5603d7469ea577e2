"""The team's tracking server (scripts/team_server.sh): strangers are refused, members' jobs land their runs, and a
job with a wrong or missing login stops in one error before it trains."""

import base64
import urllib.error
import urllib.request
from pathlib import Path
from typing import Iterator

import pytest
from mlflow.exceptions import MlflowException
from mlflow.server import get_app_client

from tests.conftest import experiment_runs, serve_mlflow

ADMIN = ("admin", "admin-pass-7f3e")
MEMBER = ("alice", "alice-pass-41c9")
SEARCH = "/api/2.0/mlflow/experiments/search?max_results=1"
SMALL_JOB = ("training.epochs=1", "model.hidden=[16]", "eval.enabled=false")
# The jobs here run in this process (cli_in_process): what they test is the server's login, which a process of their
# own would only reach seconds of imports later.


@pytest.fixture(scope="module")
def team_server(tmp_path_factory) -> Iterator[str]:
    """The authenticated server on SQLite, with a member and an experiment the admin created."""
    folder = tmp_path_factory.mktemp("team-server")
    with serve_mlflow(
        f"sqlite:///{folder}/mlflow.db", folder / "artifacts", folder / "server.log", folder / "accounts", ADMIN[1]
    ) as uri:
        with pytest.MonkeyPatch.context() as patch:
            sign_in(patch, *ADMIN)
            accounts = get_app_client("basic-auth", tracking_uri=uri)
            accounts.create_user(*MEMBER)
            experiment_runs(uri, "Default")[0].create_experiment("admins")
        yield uri


def sign_in(patch: pytest.MonkeyPatch, user: str | None, password: str | None) -> None:
    """The credentials MLflow's client (and every job started from here) sends; None leaves a variable unset."""
    for variable, value in (("MLFLOW_TRACKING_USERNAME", user), ("MLFLOW_TRACKING_PASSWORD", password)):
        if value is None:
            patch.delenv(variable, raising=False)
        else:
            patch.setenv(variable, value)


def status_of(url: str, login: tuple[str, str] | None) -> int:
    request = urllib.request.Request(url)
    if login:
        request.add_header("Authorization", "Basic " + base64.b64encode(":".join(login).encode()).decode())
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code


@pytest.mark.slow
def test_strangers_are_refused_and_members_let_in(team_server):
    assert status_of(team_server + SEARCH, None) == 401
    assert status_of(team_server + SEARCH, (MEMBER[0], "not-her-password")) == 401
    assert status_of(team_server + SEARCH, ("admin", "password1234")) == 401
    assert status_of(team_server + SEARCH, MEMBER) == 200


@pytest.mark.slow
def test_members_log_into_shared_experiments_but_delete_only_their_own(team_server, monkeypatch):
    sign_in(monkeypatch, *MEMBER)
    client, _ = experiment_runs(team_server, "Default")
    run = client.create_run("0")
    client.set_terminated(run.info.run_id, "FINISHED")
    with pytest.raises(MlflowException) as refused:
        client.delete_experiment(client.get_experiment_by_name("admins").experiment_id)
    assert refused.value.get_http_status_code() == 403


@pytest.mark.slow
def test_a_members_sweep_lands_its_runs(team_server, workdir, monkeypatch, cli_in_process):
    sign_in(monkeypatch, *MEMBER)
    result = cli_in_process("-m", "model.latent=2,3", *SMALL_JOB, f"tracking.uri={team_server}", cwd=workdir)
    assert result.returncode == 0, result.stderr
    _, runs = experiment_runs(team_server)
    assert sorted(run.data.params["model.latent"] for run in runs) == ["2", "3"]
    assert {run.info.status for run in runs} == {"FINISHED"}


def check_stopped_before_training(result, mentions: str, server: str, experiment: str, workdir: Path, patch) -> None:
    """One error line naming the variables, no training, and not even the experiment created: no run at all."""
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("error: tracking.uri="), result.stderr
    assert mentions in result.stderr and "MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD" in result.stderr
    assert not list(workdir.rglob("history.csv"))
    sign_in(patch, *ADMIN)
    client, _ = experiment_runs(server, "Default")
    assert client.get_experiment_by_name(experiment) is None


@pytest.mark.slow
def test_a_job_without_a_login_stops_in_one_error(team_server, workdir, monkeypatch, cli_in_process):
    sign_in(monkeypatch, None, None)
    server = f"tracking.uri={team_server}"
    result = cli_in_process(*SMALL_JOB, server, "tracking.experiment=anonymous", cwd=workdir)
    check_stopped_before_training(result, "requires a login (HTTP 401)", team_server, "anonymous", workdir, monkeypatch)


@pytest.mark.slow
def test_a_sweep_with_a_wrong_password_stops_in_one_error_before_any_job(
    team_server, workdir, monkeypatch, cli_in_process
):
    sign_in(monkeypatch, MEMBER[0], "not-her-password")
    result = cli_in_process(
        "-m", "model.latent=2,3", *SMALL_JOB, f"tracking.uri={team_server}", "tracking.experiment=wrong", cwd=workdir
    )
    refused = "refused the login of user 'alice' (HTTP 401)"
    check_stopped_before_training(result, refused, team_server, "wrong", workdir, monkeypatch)
