"""Ours against the papers: values, spread, differences and protocol notes from runs of the paper presets."""

import pandas as pd
from mlflow.entities import Metric, Param, RunTag
from mlflow.tracking import MlflowClient

from vae_sweep.analysis.report import papers
from vae_sweep.report import main as report_command


def run_rows(rows: list[dict]) -> pd.DataFrame:
    """Runs table rows of the preset each names, with the preset's settings (as params are typed: lists as text)
    but for what the row sets."""
    frame = []
    for number, row in enumerate(rows):
        settings = papers.preset_settings(row["preset"]) if row["preset"] in PRESETS else {}
        params = {key: str(value) if isinstance(value, list) else value for key, value in settings.items()}
        frame.append({"run_id": f"run{number}", "status": "FINISHED", "training.seed": number, **params, **row})
    return pd.DataFrame(frame)


PRESETS = {paper.preset for paper in papers.PAPERS}


def test_examples_parity_against_its_reference_with_the_seed_spread():
    runs = run_rows(
        [
            {"preset": "examples_parity", "loss/test": 105.0},
            {"preset": "examples_parity", "loss/test": 106.0},
            {"preset": "seed", "loss/test": 140.0, "training.epochs": 50, "model.latent": 2},
        ]
    )
    (row,), left_out = papers.comparison(runs)
    assert row == ["examples_parity", "test loss (grey-level BCE + KL)", "105.50 ± 0.71 (2)", "105.56", "-0.06",
                   "as the paper"]  # fmt: skip
    assert left_out == []


def test_a_shortened_burda_schedule_is_its_own_row_and_named_in_the_notes():
    runs = run_rows(
        [{"preset": "burda_vae", "quality/iwae_nll": 90.0, "quality/active_units": 17, "training.epochs": 328,
          "optimizer.schedule_pass_scale": 0.1},
         {"preset": "burda_vae", "quality/iwae_nll": 87.0, "quality/active_units": 19}]
    )  # fmt: skip
    (full_nll, full_units, nll, units), _ = papers.comparison(runs)
    assert full_nll[0] == "burda_vae" and full_nll[2:5] == ["87.00 (1)", "86.76", "+0.24"]
    assert full_nll[5] == "weights initialised as torch does (the paper: Glorot & Bengio's heuristic)"
    assert nll[0] == "burda_vae (schedule_pass_scale=0.1, epochs=328)"
    assert nll[2:5] == ["90.00 (1)", "86.76", "+3.24"] and units[2:5] == ["17 (1)", "19", "-2"]
    assert nll[5].startswith("optimizer.schedule_pass_scale 0.1 (paper: 1.0); training.epochs 328 (paper: 3280)")


def test_runs_with_other_settings_are_left_out_not_averaged_in():
    """A 53-pass run, another latent size and another dataset were averaged into one 'ours'."""
    runs = run_rows(
        [{"preset": "burda_vae", "quality/iwae_nll": 87.0},
         {"preset": "burda_vae", "quality/iwae_nll": 120.0, "model.latent": 10},
         {"preset": "burda_vae", "quality/iwae_nll": 95.0, "data.name": "fashion_mnist"},
         {"preset": "burda_vae", "quality/iwae_nll": 88.0, "optimizer.eps": 1e-8}]
    )  # fmt: skip
    rows, left_out = papers.comparison(runs)
    assert len(rows) == 2 and rows[0][2] == "87.00 (1)" and len(left_out) == 3
    assert "model.latent=10 (preset: 50)" in left_out[0] and "data.name=fashion_mnist (preset: mnist)" in left_out[1]
    assert "optimizer.eps=1e-08 (preset: 0.0001)" in left_out[2]


def test_a_run_that_predates_a_setting_counts_as_its_default():
    """Runs logged before optimizer.eps existed trained with torch's 1e-8: examples_parity's, but not the paper's."""
    runs = run_rows([{"preset": "examples_parity", "loss/test": 105.0}, {"preset": "burda_vae", "quality/iwae_nll": 9}])
    rows, left_out = papers.comparison(runs.drop(columns="optimizer.eps"))
    assert [row[0] for row in rows] == ["examples_parity"]
    assert len(left_out) == 1 and "optimizer.eps=1e-08 (preset: 0.0001)" in left_out[0]


def test_two_runs_of_one_seed_are_one_sample():
    runs = run_rows([{"preset": "examples_parity", "loss/test": 105.0}] * 2)
    runs["training.seed"] = 0
    (row,), _ = papers.comparison(runs)
    assert row[2] == "105.00 (1)"


def test_failed_runs_and_other_presets_are_not_compared():
    runs = run_rows([{"preset": "burda_vae", "quality/iwae_nll": 1.0, "status": "FAILED"}, {"preset": ""}])
    assert papers.comparison(runs) == ([], [])


def test_compare_paper_alone_selects_the_preset_runs_and_prints_the_table(tmp_path, capsys):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    client = MlflowClient(uri)
    experiment_id = client.create_experiment("vae_sweep", artifact_location=(tmp_path / "mlruns").as_uri())
    for preset, loss in (("examples_parity", 105.0), ("seed", 150.0)):
        run_id = client.create_run(experiment_id, tags={"preset": preset, "sweep.id": f"/m/{preset}"}).info.run_id
        params = {key: str(value) for key, value in papers.preset_settings(preset).items()}
        params["training.seed"] = "0"
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
    base = {"preset": "burda_iwae", **papers.BURDA_PROTOCOL}
    runs = run_rows(
        [
            {**base, "model.objective": "elbo", "model.samples": 1, "quality/iwae_nll": 88.0, "training.seed": 0},
            {**base, "model.objective": "iwae", "model.samples": 5, "quality/iwae_nll": 87.0, "training.seed": 0},
            {**base, "model.objective": "iwae", "model.samples": 5, "quality/iwae_nll": 87.5, "training.seed": 1},
        ]
    )
    compared, left_out = papers.comparison(runs)
    assert left_out == []
    rows = {row[0]: row for row in compared}
    assert set(rows) == {"burda_iwae objective=elbo samples=1", "burda_iwae objective=iwae samples=5"}
    assert rows["burda_iwae objective=iwae samples=5"][2:5] == ["87.25 ± 0.35 (2)", "85.54", "+1.71"]
    assert rows["burda_iwae objective=elbo samples=1"][3] == "86.76"
