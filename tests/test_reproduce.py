import json

import pytest

from tests.conftest import experiment_runs, run_cli
from vae_sweep.analysis.reproduce import compare_finals, compare_histories, provenance_differences

TRAIN = ("model.hidden=[32]", "model.latent=3", "training.epochs=2", "eval.samples=200", "eval.iwae_k=5")


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


def test_final_comparison_and_provenance_differences():
    assert not compare_finals({"loss/test": 1.0}, {"loss/test": 2.0}, 0)[1]
    assert compare_finals({"loss/test": 1.0, "time/train_s": 3.0}, {"loss/test": 1.0, "time/train_s": 4.0}, 0)[1]
    differences = provenance_differences(
        {"git.commit": "a", "host": "x", "data.md5.f": "1"}, {"git.commit": "b", "host": "y", "data.md5.f": "1"}
    )
    assert differences == ["git.commit: recorded a, now b"]


@pytest.fixture
def finished_job(workdir):
    result = run_cli("vae_sweep", *TRAIN, cwd=workdir)
    assert result.returncode == 0, result.stderr
    (job,) = [p.parent.parent for p in workdir.glob("outputs/*/*/.hydra/config.yaml")]
    return job


@pytest.mark.slow
def test_reproducing_from_the_run_id_gives_identical_histories(workdir, finished_job):
    uri = f"sqlite:///{workdir}/mlflow.db"
    client, (original,) = experiment_runs(uri)
    result = run_cli("vae_sweep.reproduce", original.info.run_id, cwd=workdir)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "MATCH (atol 0)" in result.stdout and "MISMATCH" not in result.stdout
    assert "loss/test" in result.stdout
    runs = client.search_runs([original.info.experiment_id], f"tags.reproduces = '{original.info.run_id}'")
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"
    for key in ("loss/train", "loss/test", "loss/kl/test"):
        first = [m.value for m in sorted(client.get_metric_history(original.info.run_id, key), key=lambda m: m.step)]
        again = [m.value for m in sorted(client.get_metric_history(runs[0].info.run_id, key), key=lambda m: m.step)]
        assert first == again and len(first) == 2


@pytest.mark.slow
def test_reproducing_from_the_job_folder_and_detecting_a_changed_seed(workdir, finished_job):
    same = run_cli("vae_sweep.reproduce", str(finished_job), "tracking.enabled=false", cwd=workdir)
    assert same.returncode == 0, same.stdout + same.stderr
    assert "MATCH (atol 0)" in same.stdout
    changed = run_cli(
        "vae_sweep.reproduce", str(finished_job), "training.seed=1", "tracking.enabled=false", cwd=workdir
    )
    assert changed.returncode == 1
    assert "MISMATCH" in changed.stdout and "loss/test" in changed.stdout


@pytest.mark.slow
def test_a_tampered_stored_param_is_reported(workdir, finished_job):
    stored = finished_job / ".hydra" / "config.yaml"
    stored.write_text(stored.read_text().replace("lr: 0.001", "lr: 0.002"))
    result = run_cli("vae_sweep.reproduce", str(finished_job), "tracking.enabled=false", cwd=workdir)
    assert result.returncode == 1 and "MISMATCH" in result.stdout


@pytest.mark.slow
def test_a_shorter_reproduction_compares_the_common_epochs(workdir, finished_job):
    result = run_cli(
        "vae_sweep.reproduce", str(finished_job), "training.epochs=1", "tracking.enabled=false", cwd=workdir
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "epochs 1..1" in result.stdout and "final metrics not compared" in result.stdout


def test_unknown_run_and_missing_folder_are_one_clear_error(workdir, tmp_path):
    (workdir / "empty").mkdir()
    folder = run_cli("vae_sweep.reproduce", str(workdir / "empty"), cwd=workdir)
    assert folder.returncode == 1 and "holds no .hydra/config.yaml" in folder.stderr
    no_store = run_cli("vae_sweep.reproduce", "0123abcd", cwd=workdir)
    assert no_store.returncode == 1 and no_store.stderr.startswith("error: No MLflow store at")
    assert "Traceback" not in folder.stderr + no_store.stderr


@pytest.mark.slow
def test_unknown_run_id_in_an_existing_store(workdir, finished_job):
    result = run_cli("vae_sweep.reproduce", "0123abcd", cwd=workdir)
    assert result.returncode == 1 and "No run '0123abcd'" in result.stderr
    json.loads((finished_job / "provenance.json").read_text())
