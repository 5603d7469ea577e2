import json
import shutil
import subprocess

import pytest

from tests.conftest import experiment_runs, run_cli
from vae_sweep import names
from vae_sweep.analysis.reproduce import (
    CROSS_ENVIRONMENT_RTOL,
    Tolerance,
    chosen_tolerance,
    compare_finals,
    compare_histories,
    provenance_differences,
    runtime_settings,
)
from vae_sweep.reproduce import main as reproduce_main

TRAIN = (
    "model.hidden=[32]", "model.latent=3", "training.epochs=2", "eval.samples=200", "eval.iwae_k=5",
    "tracking.figures=false",
)  # fmt: skip


def test_history_comparison_flags_any_difference_beyond_atol():
    original = [
        {"epoch": 1, "loss/test": 10.0, "time/epoch_s": 1.0},
        {"epoch": 2, "loss/test": 9.0, "time/epoch_s": 1.0},
    ]
    same = [{**row, "time/epoch_s": 5.0} for row in original]
    assert compare_histories(original, same, atol=0)[1]
    off = [original[0], {**original[1], "loss/test": 9.001}]
    lines, agree = compare_histories(original, off, atol=0)
    assert not agree and any("loss/test" in line and "MISMATCH" in line for line in lines)
    assert compare_histories(original, off, atol=0.01)[1]
    assert compare_histories(original, original[:1], atol=0)[0][0] == "per-epoch histories, epochs 1..1:"


def test_a_shorter_or_longer_reproduction_is_a_mismatch_with_its_largest_differences():
    """A 1-epoch reproduction of a 3-epoch run agreed on its one epoch and was called a MATCH."""
    original = [{"epoch": e, "loss/test": 10.0 - e, "loss/kl/test": 1.0} for e in (1, 2, 3)]
    lines, agree = compare_histories(original, original[:1], atol=0)
    assert not agree and "  MISMATCH: the original has 3 epochs, the reproduction 1" in lines
    lines, agree = compare_histories(original[:1], original, atol=0)
    assert not agree
    off = [original[0], {**original[1], "loss/test": 8.5}, {**original[2], "loss/test": 7.2}]
    lines, agree = compare_histories(original, off, atol=0)
    (row,) = [line for line in lines if line.lstrip().startswith("loss/test")]
    assert row.split() == ["loss/test", "0.5", "0.062", "2", "MISMATCH"]  # largest at epoch 2: 0.5 nats, 6.2%


def test_a_metric_missing_from_the_reproduction_is_a_mismatch():
    original = [{"epoch": 1, "loss/test": 9.0, "active_units": 2.0}]
    lines, agree = compare_histories(original, [{"epoch": 1, "loss/test": 9.0}], atol=0)
    assert not agree and any("active_units" in line and "missing" in line and "MISMATCH" in line for line in lines)
    final_lines, finals_agree = compare_finals({"loss/test": 1.0, "quality/fid": 3.0}, {"loss/test": 1.0}, 0)
    assert not finals_agree and any("quality/fid" in line and "missing" in line for line in final_lines)


def test_a_run_from_before_a_metric_was_logged_is_compared_on_what_it_logged():
    # quality/prior_dims is newer than many runs: a reproduction that logs it still matches one that did not.
    lines, agree = compare_finals({"loss/test": 1.0}, {"loss/test": 1.0, names.Q_PRIOR_DIMS: 3.0}, 0)
    assert agree and not any(names.Q_PRIOR_DIMS in line for line in lines)


def test_final_comparison_and_provenance_differences():
    assert not compare_finals({"loss/test": 1.0}, {"loss/test": 2.0}, 0)[1]
    assert compare_finals({"loss/test": 1.0, "time/train_s": 3.0}, {"loss/test": 1.0, "time/train_s": 4.0}, 0)[1]
    differences = provenance_differences(
        {"git.commit": "a", "host": "x", "data.md5.f": "1"}, {"git.commit": "b", "host": "y", "data.md5.f": "1"}
    )
    assert differences == ["git.commit: recorded a, now b"]


def test_what_the_config_leaves_open_is_pinned_to_what_the_run_recorded():
    recorded = {"torch.threads": "1", "torch.device": "cpu"}
    plain = runtime_settings(recorded, ["training.epochs=5"])
    assert plain.pinned == ["training.threads=1", "training.device=cpu"] and not plain.overridden
    forced = runtime_settings(recorded, ["training.threads=2", "training.device=cpu"])
    assert forced.pinned == [] and forced.overridden == ["training.threads=2 (the run recorded 1)"]
    assert runtime_settings({}, []).unrecorded == ["training.threads", "training.device"]


def test_exact_on_the_runs_machine_and_a_stated_tolerance_elsewhere(capsys):
    assert chosen_tolerance(None, []) == Tolerance(0, 0)
    assert capsys.readouterr().err == ""
    assert chosen_tolerance(None, ["host: recorded a, now b"]) == Tolerance(0, CROSS_ENVIRONMENT_RTOL)
    assert f"comparing within atol 0, rtol {CROSS_ENVIRONMENT_RTOL:g}" in capsys.readouterr().err
    assert chosen_tolerance(Tolerance(0.5), ["host: recorded a, now b"]) == Tolerance(0.5)
    within = [{"epoch": 1, "test/loss": 100.0}], [{"epoch": 1, "test/loss": 101.0}]
    assert compare_histories(*within, atol=0, rtol=0.011)[1] and not compare_histories(*within, atol=0, rtol=0.009)[1]


@pytest.fixture(scope="module")
def trained_folder(tmp_path_factory, tiny_data):
    """A job of TRAIN trained once for the module: its outputs, MLflow store and FID classifier cache."""
    folder = tmp_path_factory.mktemp("trained")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("VAE_SWEEP_DATA_DIR", str(tiny_data))
        patch.setenv("XDG_CACHE_HOME", str(folder / "cache"))  # where the workdir fixture points a test's cache
        patch.delenv("MLFLOW_TRACKING_URI", raising=False)
        result = run_cli("vae_sweep", *TRAIN, cwd=folder)
    assert result.returncode == 0, result.stderr
    return folder


@pytest.fixture
def finished_job(workdir, trained_folder, monkeypatch):
    """That job, copied into this test's workdir: tests change its folder and add runs to its store. Its FID
    classifier comes with it: one trained elsewhere (another thread count) would score its samples differently."""
    shutil.copytree(trained_folder, workdir, dirs_exist_ok=True)
    monkeypatch.setenv("XDG_CACHE_HOME", str(workdir / "cache"))
    (job,) = [p.parent.parent for p in workdir.glob("outputs/*/*/.hydra/config.yaml")]
    return job


@pytest.mark.slow
def test_reproducing_from_the_run_id_gives_identical_histories(workdir, finished_job, reproduce):
    uri = f"sqlite:///{workdir}/mlflow.db"
    client, (original,) = experiment_runs(uri)
    result = reproduce(original.info.run_id, cwd=workdir)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "MATCH (atol 0)" in result.stdout and "MISMATCH" not in result.stdout
    assert "loss/test" in result.stdout
    runs = client.search_runs([original.info.experiment_id], f"tags.reproduces = '{original.info.run_id}'")
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"
    for key in ("loss/train", "loss/test", "loss/kl/test"):
        first = [m.value for m in sorted(client.get_metric_history(original.info.run_id, key), key=lambda m: m.step)]
        again = [m.value for m in sorted(client.get_metric_history(runs[0].info.run_id, key), key=lambda m: m.step)]
        assert first == again and len(first) == 2


@pytest.fixture
def reproduce(monkeypatch, capsys):
    """`python -m vae_sweep.reproduce ARGS` from `cwd`, run in this process: the job it reruns is a process of its own
    anyway, so a second process would only add seconds of imports. Returns what run_cli does."""
    from hydra.core.global_hydra import GlobalHydra

    def run(*args: str, cwd) -> subprocess.CompletedProcess:
        monkeypatch.chdir(cwd)
        GlobalHydra.instance().clear()
        capsys.readouterr()
        try:
            code = reproduce_main(list(args))
        finally:
            GlobalHydra.instance().clear()
        out = capsys.readouterr()
        return subprocess.CompletedProcess(["vae_sweep.reproduce", *args], code, out.out, out.err)

    return run


def run_ids(workdir):
    return experiment_runs(f"sqlite:///{workdir}/mlflow.db")


@pytest.mark.slow
def test_a_run_trained_at_1_thread_reproduces_exactly_from_a_process_whose_default_is_2(
    workdir, monkeypatch, reproduce
):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # torch's default thread count in the processes started below
    # Without evaluation: the thread count shows in the per-epoch losses, and its three jobs skip the figures and FID.
    trained = run_cli("vae_sweep", *TRAIN, "eval.enabled=false", cwd=workdir)
    assert trained.returncode == 0, trained.stderr
    _, (original,) = run_ids(workdir)
    assert original.data.tags["torch.threads"] == "1" and original.data.tags["torch.device"] == "cpu"

    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    result = reproduce(original.info.run_id, cwd=workdir)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "MATCH (atol 0)" in result.stdout and "MISMATCH" not in result.stdout
    assert "restored from the run: training.threads=1 training.device=cpu" in result.stderr

    forced = reproduce(original.info.run_id, "training.threads=2", cwd=workdir)
    assert forced.returncode == 1 and "MISMATCH (atol 0)" in forced.stdout
    assert "likely reason: training.threads=2 (the run recorded 1)" in forced.stdout


@pytest.mark.slow
def test_reproducing_from_the_job_folder_and_detecting_a_changed_seed(workdir, finished_job, reproduce):
    same = reproduce(str(finished_job), "tracking.enabled=false", cwd=workdir)
    assert same.returncode == 0, same.stdout + same.stderr
    assert "MATCH (atol 0)" in same.stdout
    changed = reproduce(str(finished_job), "training.seed=1", "tracking.enabled=false", cwd=workdir)
    assert changed.returncode == 1
    assert "MISMATCH" in changed.stdout and "loss/test" in changed.stdout


@pytest.mark.slow
def test_a_tampered_stored_param_is_reported(workdir, finished_job, reproduce):
    stored = finished_job / ".hydra" / "config.yaml"
    stored.write_text(stored.read_text().replace("lr: 0.001", "lr: 0.002"))
    result = reproduce(str(finished_job), "tracking.enabled=false", cwd=workdir)
    assert result.returncode == 1 and "MISMATCH" in result.stdout


@pytest.mark.slow
def test_a_shorter_reproduction_is_a_mismatch_that_prints_the_common_epochs(workdir, finished_job, reproduce):
    result = reproduce(str(finished_job), "training.epochs=1", "tracking.enabled=false", cwd=workdir)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "epochs 1..1" in result.stdout and "final metrics not compared" in result.stdout
    assert "the original has 2 epochs, the reproduction 1" in result.stdout and "MISMATCH (atol 0)" in result.stdout


@pytest.mark.fresh_workdir  # no store yet: the error says so
def test_unknown_run_and_missing_folder_are_one_clear_error(workdir, monkeypatch, capsys):
    (workdir / "empty").mkdir()
    monkeypatch.chdir(workdir)
    assert reproduce_main([str(workdir / "empty")]) == 1
    assert "holds no .hydra/config.yaml" in capsys.readouterr().err
    assert reproduce_main(["0123abcd"]) == 1
    assert capsys.readouterr().err.startswith("error: No MLflow store at")


@pytest.mark.slow
def test_unknown_run_id_in_an_existing_store(workdir, finished_job, reproduce):
    result = reproduce("0123abcd", cwd=workdir)
    assert result.returncode == 1 and "No run '0123abcd'" in result.stderr
    json.loads((finished_job / "provenance.json").read_text())
