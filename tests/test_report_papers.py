"""Ours against the papers: values, spread, differences and protocol notes from runs of the paper presets."""

import pandas as pd
from mlflow.entities import Metric, Param, RunTag
from mlflow.tracking import MlflowClient

from vae_sweep.analysis.report import papers
from vae_sweep.report import main as report_command


def run_rows(rows: list[dict]) -> pd.DataFrame:
    frame = pd.DataFrame(rows)
    frame["status"] = frame.get("status", "FINISHED")
    return frame


def test_examples_parity_against_its_reference_with_the_seed_spread():
    runs = run_rows(
        [
            {"preset": "examples_parity", "loss/test": 105.0, "training.epochs": 10, "model.latent": 20},
            {"preset": "examples_parity", "loss/test": 106.0, "training.epochs": 10, "model.latent": 20},
            {"preset": "seed", "loss/test": 140.0, "training.epochs": 50, "model.latent": 2},
        ]
    )
    (row,) = papers.comparison_rows(runs)
    assert row == ["examples_parity", "test loss (grey-level BCE + KL)", "105.50 ± 0.71 (2)", "105.56", "-0.06",
                   "as the paper"]  # fmt: skip


def test_a_shortened_burda_schedule_is_named_in_the_notes():
    runs = run_rows(
        [{"preset": "burda_vae", "quality/iwae_nll": 90.0, "quality/active_units": 17, "training.epochs": 40,
          "eval.iwae_k": 5000, "data.binarize": "dynamic", "training.batch_size": 20}]
    )  # fmt: skip
    nll, units = papers.comparison_rows(runs)
    assert nll[2:5] == ["90.00 (1)", "86.76", "+3.24"] and units[2:5] == ["17 (1)", "19", "-2"]
    assert nll[5] == "training.epochs 40 (paper: 3280)"


def test_failed_runs_and_other_presets_are_not_compared():
    runs = run_rows([{"preset": "burda_vae", "quality/iwae_nll": 1.0, "status": "FAILED"}, {"preset": ""}])
    assert papers.comparison_rows(runs) == []


def test_compare_paper_alone_selects_the_preset_runs_and_prints_the_table(tmp_path, capsys):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    client = MlflowClient(uri)
    experiment_id = client.create_experiment("vae_sweep", artifact_location=(tmp_path / "mlruns").as_uri())
    for preset, loss in (("examples_parity", 105.0), ("seed", 150.0)):
        run_id = client.create_run(experiment_id, tags={"preset": preset, "sweep.id": f"/m/{preset}"}).info.run_id
        params = {"model.latent": "20", "training.epochs": "10", "training.seed": "0"}
        client.log_batch(
            run_id,
            metrics=[Metric("final/test/loss", loss, 0, 10), Metric("test/loss", loss, 0, 1)],
            params=[Param(key, value) for key, value in params.items()],
            tags=[RunTag("mlflow.runName", preset)],
        )
        client.set_terminated(run_id)
    out = tmp_path / "report"
    assert report_command(["--tracking-uri", uri, "--compare-paper", "--no-log", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "examples_parity  test loss (grey-level BCE + KL)  105.00 (1)" in printed
    assert "150.00" not in (out / "report.md").read_text()  # the seed preset's run is not selected
    assert "## Ours against the papers" in (out / "report.md").read_text()


def test_compare_paper_without_preset_runs_is_one_error(tmp_path, capsys):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    client = MlflowClient(uri)
    experiment_id = client.create_experiment("vae_sweep", artifact_location=(tmp_path / "mlruns").as_uri())
    run_id = client.create_run(experiment_id, tags={"preset": "seed"}).info.run_id
    client.log_batch(run_id, params=[Param("model.latent", "2")])
    client.set_terminated(run_id)
    assert report_command(["--tracking-uri", uri, "--compare-paper", "--no-log"]) == 1
    assert (
        capsys.readouterr()
        .err.splitlines()[-1]
        .startswith("error: No runs of a paper preset in experiment 'vae_sweep'")
    )


def test_a_preset_sweeping_rows_compares_each_row_with_its_own_paper_value():
    base = {"preset": "burda_iwae", "training.epochs": 330, "eval.iwae_k": 5000, "data.binarize": "dynamic",
            "training.batch_size": 20}  # fmt: skip
    runs = run_rows(
        [
            {**base, "model.objective": "elbo", "model.samples": 1, "quality/iwae_nll": 88.0},
            {**base, "model.objective": "iwae", "model.samples": 5, "quality/iwae_nll": 87.0},
            {**base, "model.objective": "iwae", "model.samples": 5, "quality/iwae_nll": 87.5},
        ]
    )
    rows = {row[0]: row for row in papers.comparison_rows(runs)}
    assert set(rows) == {"burda_iwae objective=elbo samples=1", "burda_iwae objective=iwae samples=5"}
    assert rows["burda_iwae objective=iwae samples=5"][2:5] == ["87.25 ± 0.35 (2)", "85.54", "+1.71"]
    assert rows["burda_iwae objective=elbo samples=1"][3] == "86.76"
