import subprocess
import time

import pytest
import torch
from mlflow.tracking import MlflowClient
from omegaconf import OmegaConf

from tests.conftest import REPO, experiment_runs, free_port, make_mnist_like, run_cli, serve_mlflow, train_in_process
from vae_sweep import load_model, names
from vae_sweep.errors import UserError
from vae_sweep.tracking import provenance
from vae_sweep.tracking.mlflow_tracker import MlflowTracker
from vae_sweep.tracking.runs import NullTracker, tracked_run
from vae_sweep.tracking.store import check_reachable, connect, open_store, run_link, ui_link

FIGURES = {
    "losses.png", "reconstructions.png", "samples.png", "latent_scatter.png", "kl_per_dim.png", "kl_per_dim_history.png"
}  # fmt: skip
EPOCH_METRICS = [
    "loss/recon/train",
    "loss/recon/test",
    "loss/kl/train",
    "loss/kl/test",
    "loss/train",
    "loss/test",
    "loss/elbo/test",
    "active_units",
    "kl_weight",
    "lr",
    "time/epoch_s",
]


def tracking_cfg(tmp_path, **changes):
    values = dict(
        enabled=True, uri=f"sqlite:///{tmp_path}/mlflow.db", experiment="t", artifact_root=f"{tmp_path}/mlruns"
    )
    return OmegaConf.create({**values, **changes})


def only_run(uri: str, experiment: str = "t"):
    client, runs = experiment_runs(uri, experiment)
    assert len(runs) == 1
    return client, runs[0]


def test_a_run_that_completes_is_finished_with_its_params(tmp_path):
    cfg = tracking_cfg(tmp_path)
    with tracked_run(open_store(cfg), "latent=3", {"model.latent": 3}, {"sweep.job": "0"}) as tracker:
        tracker.log_epoch(1, {"loss/test": 5.0})
    client, run = only_run(cfg.uri)
    assert run.info.status == "FINISHED" and run.info.run_name == "latent=3"
    assert run.data.params == {"model.latent": "3"} and run.data.tags["sweep.job"] == "0"
    assert [(m.step, m.value) for m in client.get_metric_history(run.info.run_id, "loss/test")] == [(1, 5.0)]
    assert run.info.artifact_uri.startswith(f"file://{tmp_path}/mlruns")


def test_a_run_that_raises_is_failed_with_the_message(tmp_path):
    cfg = tracking_cfg(tmp_path)
    with pytest.raises(ValueError), tracked_run(open_store(cfg), "x", {}, {}):
        raise ValueError("loss went to nan")
    _, run = only_run(cfg.uri)
    assert run.info.status == "FAILED" and run.data.tags["error"] == "ValueError: loss went to nan"


def test_ctrl_c_marks_the_run_killed(tmp_path):
    cfg = tracking_cfg(tmp_path)
    with pytest.raises(KeyboardInterrupt), tracked_run(open_store(cfg), "x", {}, {}):
        raise KeyboardInterrupt
    assert only_run(cfg.uri)[1].info.status == "KILLED"


def test_experiment_creation_is_idempotent(tmp_path):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    assert connect(uri, "e", None)[1] == connect(uri, "e", None)[1]


def test_the_experiment_opens_on_its_runs_in_the_mlflow_ui(tmp_path):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    client, experiment_id = connect(uri, "e", None)
    tags = client.get_experiment(experiment_id).tags
    assert tags["mlflow.experimentKind"] == "custom_model_development"
    assert "python -m vae_sweep -m" in tags["mlflow.note.content"]
    assert "python -m vae_sweep.report" in tags["mlflow.note.content"]


def test_a_reopened_run_carries_neither_its_last_attempts_error_nor_an_empty_one(tmp_path):
    client, experiment_id = connect(f"sqlite:///{tmp_path}/mlflow.db", "e", None)
    failed, killed = (client.create_run(experiment_id).info.run_id for _ in range(2))
    client.set_tag(failed, names.TAG_ERROR, "NonFiniteLoss: Non-finite loss in epoch 3")
    for run_id in (failed, killed):
        MlflowTracker.reopen(client, run_id, {names.TAG_THREADS: "1"})
        run = client.get_run(run_id)
        assert run.info.status == "RUNNING" and names.TAG_ERROR not in run.data.tags
        assert run.data.tags[names.TAG_RESUMED] == "true" and run.data.tags[names.TAG_THREADS] == "1"


def test_an_experiment_made_before_the_kind_tag_gets_it(tmp_path):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    experiment_id = MlflowClient(uri).create_experiment("old", tags={"mlflow.note.content": "ours"})
    client, same = connect(uri, "old", None)
    tags = client.get_experiment(same).tags
    assert same == experiment_id and tags["mlflow.experimentKind"] == "custom_model_development"
    assert tags["mlflow.note.content"] == "ours"


def test_the_runs_link_serves_a_local_store_first():
    assert ui_link("http://host:5000/", "3").startswith("http://host:5000/#/experiments/3/runs?")
    assert "workflowType=machine_learning" in ui_link("http://host:5000/", "3")
    local = ui_link("sqlite:////x/mlflow.db", "1")
    assert local.startswith("mlflow ui --backend-store-uri sqlite:////x/mlflow.db")
    assert "then open http://127.0.0.1:5000/#/experiments/1/runs?" in local


def test_run_and_artifact_links_open_in_model_training_mode():
    # Without the parameter MLflow 3.17's UI shows a run, or a figure in its Description, in GenAI mode.
    assert run_link("http://host:5000", "3", "abc") == (
        "http://host:5000/#/experiments/3/runs/abc?workflowType=machine_learning"
    )
    tracker = MlflowTracker(client=None, run_id="abc", experiment_id="3")
    assert tracker.artifact_link("figures/losses.png") == (
        "#/experiments/3/runs/abc/artifactPath/figures/losses.png?workflowType=machine_learning"
    )


def test_disabled_tracking_writes_no_store(tmp_path):
    with tracked_run(open_store(tracking_cfg(tmp_path, enabled=False)), "x", {}, {}) as tracker:
        tracker.log_epoch(1, {"loss/test": 1.0})
    assert not (tmp_path / "mlflow.db").exists()


def test_unreachable_server_fails_fast_naming_the_uri():
    uri = f"http://127.0.0.1:{free_port()}"
    start = time.monotonic()
    with pytest.raises(UserError, match=f"tracking.uri={uri} is unreachable"):
        check_reachable(uri)
    assert time.monotonic() - start < 10


def check_complete_run(client: MlflowClient, run, epochs: int) -> None:
    """Params, one metric value per epoch with no gaps or duplicates, figures, config and checkpoint."""
    run_id = run.info.run_id
    assert run.info.status == "FINISHED"
    for key in EPOCH_METRICS:
        assert [m.step for m in client.get_metric_history(run_id, key)] == list(range(1, epochs + 1)), key
    assert "time/train_s" in run.data.metrics and not [key for key in run.data.metrics if key.startswith("final/")]
    if any(key.startswith("quality/") for key in run.data.metrics):
        assert {"quality/iwae_bound", "quality/active_units", "quality/fid", "quality/train_test_gap"} <= set(
            run.data.metrics
        )
        assert run.data.metrics[names.Q_PRIOR_DIMS] <= int(run.data.params["model.latent"])
    figures = {a.path.split("/")[-1] for a in client.list_artifacts(run_id, "figures")}
    assert FIGURES <= figures
    assert {a.path for a in client.list_artifacts(run_id, "hydra")} >= {"hydra/config.yaml", "hydra/overrides.yaml"}
    artifacts = {a.path for a in client.list_artifacts(run_id)}
    assert artifacts >= {"config_resolved.yaml", "checkpoint", "history.csv", "kl_per_dim_history.csv"}
    for tag in ("sweep.id", "sweep.job", "hydra.overrides", "git.commit", "sys.host", "version.torch"):
        assert tag in run.data.tags


def test_the_code_commit_is_the_package_checkouts_wherever_a_job_is_launched(tmp_path, monkeypatch):
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True)
    if head.returncode != 0:
        pytest.skip("the tests run from files outside a git checkout")
    assert provenance.provenance(tmp_path)["git.commit"] == head.stdout.strip()  # tmp_path is in no checkout
    monkeypatch.setattr(provenance, "code_checkout", lambda: None)  # as installed from a wheel: the launch folder's
    assert provenance.provenance(tmp_path)["git.commit"] == "unknown"
    assert provenance.provenance(REPO)["git.commit"] == head.stdout.strip()


def test_a_job_without_figures_draws_none_and_says_so(workdir):
    train_in_process(workdir, "training.epochs=1", "model.hidden=[16]", "eval.enabled=false", "tracking.figures=false")
    client, (run,) = experiment_runs(f"sqlite:///{workdir}/mlflow.db")
    assert run.info.status == "FINISHED" and not client.list_artifacts(run.info.run_id, "figures")
    assert not (workdir / "outputs" / "in-process" / names.FIGURES).exists()
    assert "Figures: none drawn (`tracking.figures=false`)" in run.data.tags["mlflow.note.content"]
    assert "tracking.figures" not in run.data.params  # it changes no result: a search's trials still match a run


@pytest.mark.slow
@pytest.mark.fresh_workdir  # one of its jobs trains the FID classifier
def test_multirun_leaves_one_complete_run_per_job(workdir, cli_in_process):
    result = cli_in_process(
        "-m", "model.latent=2,3", "training.epochs=2", "model.hidden=[32]", "eval.samples=200",
        "eval.iwae_k=5", cwd=workdir,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "MLflow runs: mlflow ui --backend-store-uri sqlite:///" in result.stdout + result.stderr
    client, runs = experiment_runs(f"sqlite:///{workdir}/mlflow.db")
    assert sorted(run.info.run_name for run in runs) == [
        "latent=2 epochs=2 hidden=[32] samples=200 iwae_k=5",
        "latent=3 epochs=2 hidden=[32] samples=200 iwae_k=5",
    ]
    assert {run.data.params["model.latent"] for run in runs} == {"2", "3"}
    assert runs[0].data.params["model.hidden"] == "[32]"
    for run in runs:
        check_complete_run(client, run, epochs=2)
        assert run.data.metrics["quality/iwae_k"] == 5
        # Grey levels: -L_k is a bound in nats but no likelihood, so it is not called an NLL.
        assert "quality/iwae_nll" not in run.data.metrics
        assert 0 < run.data.metrics["quality/iwae_grey_bound_nats"] <= run.data.metrics["loss/test"] + 1e-3
        assert run.data.metrics["quality/iwae_images"] == 200 and run.data.metrics["quality/samples"] == 200
        assert run.data.metrics["quality/active_units"] <= int(run.data.params["model.latent"])
        assert len([t for t in run.data.tags if t.startswith("data.md5.")]) == 4
        note = run.data.tags["mlflow.note.content"]
        assert "IWAE bound on grey levels (not an NLL) (k=5)" in note and "FID" in note
    trained = [run for run in runs if "time/classifier_train_s" in run.data.metrics]
    assert len(trained) == 1 and "sys.trained_classifier" in trained[0].data.tags
    assert "trained the shared FID classifier" in trained[0].data.tags["mlflow.note.content"]
    manifold_runs = [
        r
        for r in runs
        if any(a.path == "figures/manifold.png" for a in client.list_artifacts(r.info.run_id, "figures"))
    ]
    assert [r.data.params["model.latent"] for r in manifold_runs] == ["2"]
    model, config = load_model(runs[0].info.run_id, tracking_uri=f"sqlite:///{workdir}/mlflow.db")
    assert config["model"]["latent"] == model.latent
    assert model.sample(2).shape == model.decode(torch.zeros(2, model.latent)).shape == (2, 784)


@pytest.mark.slow
@pytest.mark.fresh_workdir
def test_parallel_jobs_on_a_fresh_store_all_finish(workdir):
    # As many jobs as workers: all of them open the fresh store at once, the race this is about; a second round of
    # jobs would find it made.
    result = run_cli(
        "vae_sweep",
        "-m",
        "hydra/launcher=joblib",
        "hydra.launcher.n_jobs=4",
        "model.latent=2,3,4,5",
        "training.epochs=1",
        "model.hidden=[32]",
        "training.threads=1",
        "eval.enabled=false",
        cwd=workdir,
    )
    assert result.returncode == 0, result.stderr
    client, runs = experiment_runs(f"sqlite:///{workdir}/mlflow.db")
    assert len(runs) == 4
    for run in runs:
        check_complete_run(client, run, epochs=1)


@pytest.mark.slow
def test_a_failing_job_is_failed_and_its_siblings_finish(workdir, tmp_path, cli_in_process):
    only_mnist = make_mnist_like(tmp_path / "only-mnist")
    result = cli_in_process(
        "-m", "data.name=fashion_mnist,mnist", f"data.root={only_mnist}", "data.download=false",
        "training.epochs=1", "model.hidden=[32]", "eval.enabled=false", cwd=workdir,
    )  # fmt: skip
    assert result.returncode == 1
    assert "1 of 2 jobs failed" in result.stderr and "fashion_mnist data not found" in result.stderr
    client, runs = experiment_runs(f"sqlite:///{workdir}/mlflow.db")
    by_dataset = {run.data.params["data.name"]: run for run in runs}
    assert by_dataset["mnist"].info.status == "FINISHED"
    failed = by_dataset["fashion_mnist"]
    assert failed.info.status == "FAILED" and "fashion_mnist data not found" in failed.data.tags["error"]


@pytest.mark.slow
def test_a_non_finite_loss_fails_its_job_with_epoch_and_batch(workdir, cli_in_process):
    result = cli_in_process(
        "-m", "optimizer.lr=1e-3,1e4", "training.epochs=2", "model.hidden=[32]", "eval.enabled=false",
        cwd=workdir,
    )  # fmt: skip
    assert result.returncode == 1
    assert "1 of 2 jobs failed" in result.stderr and "Non-finite loss in epoch 1, batch" in result.stderr
    client, runs = experiment_runs(f"sqlite:///{workdir}/mlflow.db")
    status = {run.data.params["optimizer.lr"]: run.info.status for run in runs}
    assert status == {"0.001": "FINISHED", "10000.0": "FAILED"}


@pytest.fixture
def mlflow_server(tmp_path):
    with serve_mlflow(f"sqlite:///{tmp_path}/server.db", tmp_path / "artifacts", tmp_path / "server.log") as uri:
        yield uri


@pytest.mark.slow
def test_a_job_tracked_by_a_real_server(workdir, mlflow_server):
    (workdir / "mlflow.db").unlink()  # the workdir's empty store: the job must not make one beside the server
    train_in_process(
        workdir, f"tracking.uri={mlflow_server}", "training.epochs=1", "model.hidden=[32]", "eval.samples=200",
        "eval.iwae_k=5",
    )  # fmt: skip
    assert not (workdir / "mlflow.db").exists()
    client, runs = experiment_runs(mlflow_server)
    assert len(runs) == 1
    check_complete_run(client, runs[0], epochs=1)
    assert runs[0].data.params["model.latent"] == "2"


def test_null_tracker_stands_in_for_every_method_a_job_calls():
    called = {name for name in vars(MlflowTracker) if not name.startswith("_")} - {"start", "reopen", "end"}
    assert called <= set(dir(NullTracker))


def test_a_job_in_process_is_one_complete_run(workdir):
    final = train_in_process(
        workdir, "training.epochs=3", "model.hidden=[16]", "eval.enabled=false", "tracking.image_every=2",
        "tracking.system_metrics_s=0.2",
    )  # fmt: skip
    client, (run,) = experiment_runs(f"sqlite:///{workdir}/mlflow.db")
    check_complete_run(client, run, epochs=3)
    assert run.info.run_name == "epochs=3 hidden=[16] enabled=false"
    note = run.data.tags["mlflow.note.content"]
    assert f"Test loss {final['loss/test']:.2f} nats" in note and "/artifactPath/figures/losses.png" in note
    frames = [a.path.split("+") for a in client.list_artifacts(run.info.run_id, "images") if a.path.endswith(".png")]
    assert sorted((key, int(step)) for key, _, step, *_ in frames) == [
        ("images/reconstructions", 1), ("images/reconstructions", 2), ("images/reconstructions", 3),
        ("images/samples", 1), ("images/samples", 2), ("images/samples", 3),
    ]  # fmt: skip
    inputs = {(i.dataset.name, i.tags[0].value) for i in client.get_run(run.info.run_id).inputs.dataset_inputs}
    assert inputs == {("mnist-train", "train"), ("mnist-test", "test")}
    assert any(key.startswith("system/cpu") for key in run.data.metrics)
    assert final["loss/test"] == run.data.metrics["loss/test"]
    assert {"model.latent", "training.epochs", "data.name"} <= set(run.data.params)
    placement = ("paths.", "tracking.", "data.root", "eval.classifier_dir", "training.progress", "training.threads")
    assert not [key for key in run.data.params if key.startswith(placement)]
    assert {"sys.pid", "sys.host", "sys.heartbeat"} <= set(run.data.tags)
    assert not {"pid", "host", "heartbeat"} & set(run.data.tags)
    assert (workdir / "outputs" / "in-process" / "history.csv").is_file()


def test_unreachable_tracking_uri_stops_before_training(workdir, cli_in_process):
    uri = f"http://127.0.0.1:{free_port()}"
    result = cli_in_process(f"tracking.uri={uri}", "training.epochs=1", cwd=workdir)
    assert result.returncode == 1
    assert result.stderr.startswith(f"error: tracking.uri={uri} is unreachable")
    assert not list(workdir.glob("outputs/*/*/history.csv"))


def test_only_a_binarized_job_calls_its_bound_an_nll(workdir):
    settings = ("training.epochs=1", "model.hidden=[16]", "eval.sample_quality=false", "eval.iwae_k=3")
    binarized = train_in_process(workdir, *settings, "data.binarize=dynamic", "tracking.enabled=false")
    assert binarized["quality/iwae_nll"] == -binarized["quality/iwae_bound"]
    assert "quality/iwae_grey_bound_nats" not in binarized and binarized["quality/iwae_k"] == 3


def test_a_dataset_another_job_inserted_at_the_same_moment_is_linked_on_the_next_try(tmp_path):
    """Parallel jobs on a PostgreSQL-backed server race to insert the same dataset row (seen in a submitit sweep)."""
    from mlflow.exceptions import MlflowException

    from vae_sweep.tracking.runs import DataSplit

    class RacingClient:
        calls = 0

        def log_inputs(self, run_id, datasets):
            RacingClient.calls += 1
            if RacingClient.calls == 1:
                raise MlflowException('duplicate key value violates unique constraint "dataset_pk"')

    split = DataSplit("mnist", "train", {"train-images-idx3-ubyte": "abc"}, tmp_path, 600)
    MlflowTracker(RacingClient(), "run", "0").log_datasets([split])
    assert RacingClient.calls == 2


def test_other_store_errors_while_logging_datasets_are_not_retried(tmp_path):
    from mlflow.exceptions import MlflowException

    from vae_sweep.tracking.runs import DataSplit

    class BrokenClient:
        def log_inputs(self, run_id, datasets):
            raise MlflowException("permission denied")

    split = DataSplit("mnist", "test", {}, tmp_path, 200)
    with pytest.raises(MlflowException, match="permission denied"):
        MlflowTracker(BrokenClient(), "run", "0").log_datasets([split])
