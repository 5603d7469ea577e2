"""The report of a search: a store with an older grid sweep, a search of 8 trials (2 pruned, 1 failed) under their
parent run, and a newer sweep's parent that has no job yet; beside it the search's Optuna study with the same trials.
No training: the runs are logged directly."""

from dataclasses import replace
from types import SimpleNamespace

import optuna
import pandas as pd
import pytest
from mlflow.entities import Metric, Param, RunTag
from mlflow.tracking import MlflowClient
from optuna.distributions import FloatDistribution, IntDistribution
from optuna.trial import TrialState

from tests.test_report import ReportPage
from vae_sweep import names
from vae_sweep.analysis.registry import choose_best
from vae_sweep.analysis.report import cli, document, plots, render, select, study, table
from vae_sweep.errors import UserError
from vae_sweep.report import main as report_command

EXPERIMENT = "vae_sweep"
EPOCHS = 4
SPACE = {"model.latent": "tag(log, int(interval(2, 256)))", "optimizer.lr": "tag(log, interval(1e-4, 3e-3))"}
DISTRIBUTIONS = {
    "model.latent": IntDistribution(2, 256, log=True),
    "optimizer.lr": FloatDistribution(1e-4, 3e-3, log=True),
}
# trial number -> (latent, lr, how it ended, epochs trained, its last test loss). Trial 3 is the best.
TRIALS = {
    0: (4, 1e-3, TrialState.COMPLETE, EPOCHS, 140.0),
    1: (64, 3e-4, TrialState.COMPLETE, EPOCHS, 112.0),
    2: (3, 2e-4, TrialState.PRUNED, 1, 190.0),
    3: (16, 2e-3, TrialState.COMPLETE, EPOCHS, 105.0),
    4: (200, 1e-4, TrialState.FAIL, 2, 150.0),
    5: (32, 8e-4, TrialState.COMPLETE, EPOCHS, 108.0),
    6: (2, 1.5e-4, TrialState.PRUNED, 2, 180.0),
    7: (128, 5e-4, TrialState.COMPLETE, EPOCHS, 110.0),
}
START = 1_900_000_000_000


def history(final: float, epochs: int) -> list[Metric]:
    """Test loss falling 5 nats an epoch to `final`, KL 20 throughout; train 2 nats under test."""
    metrics = []
    for step in range(1, epochs + 1):
        test = final + 5 * (epochs - step)
        values = {names.TEST_LOSS: test, names.TEST_KL: 20.0, names.TEST_RECON: test - 20.0}
        values |= {names.TRAIN_LOSS: test - 2, names.epoch_key("train", "kl"): 20.0}
        metrics += [Metric(key, value, 0, step) for key, value in values.items()]
    return metrics


def job_run(client, experiment_id, sweep, parent, job, start, latent, lr, epochs, final, status, tags=()):
    """A job of a sweep under its parent run; only a run that trained every epoch has end-of-run quality metrics."""
    run_tags = {names.TAG_SWEEP_ID: sweep, names.TAG_SWEEP_JOB: str(job), names.TAG_PARENT_RUN: parent, **dict(tags)}
    run_id = client.create_run(experiment_id, start_time=start, tags=run_tags, run_name=f"job {job}").info.run_id
    params = {"model.latent": latent, "optimizer.lr": lr, "training.epochs": EPOCHS, "training.seed": 0}
    metrics = history(final, epochs)
    if status == "FINISHED" and epochs == EPOCHS:
        metrics += [Metric(names.Q_IWAE_NLL, final - 4, 0, epochs), Metric(names.Q_ACTIVE_UNITS, min(latent, 9), 0, 4)]
    client.log_batch(run_id, metrics=metrics, params=[Param(key, str(value)) for key, value in params.items()])
    client.set_terminated(run_id, status=status, end_time=start + 60_000)
    return run_id


def parent_run(client, experiment_id, sweep, kind, start, tags=(), params=()):
    run_tags = {names.TAG_SWEEP_ID: sweep, names.TAG_SWEEP_KIND: kind, names.TAG_SWEEP_KEY: f"{kind}-{start}"}
    run_id = client.create_run(experiment_id, start_time=start, tags={**run_tags, **dict(tags)}).info.run_id
    client.log_batch(
        run_id,
        metrics=[Metric(names.SWEEP_JOBS, 8.0, 0, 8), Metric(names.SWEEP_FAILED, 1.0, 0, 8)],
        params=[Param(key, value) for key, value in dict(params).items()],
    )
    return run_id


def make_study(storage: str, name: str, trials: dict) -> None:
    created = optuna.create_study(storage=storage, study_name=name, direction="minimize")
    for latent, lr, state, epochs, final in trials.values():
        created.add_trial(
            optuna.trial.create_trial(
                params={"model.latent": latent, "optimizer.lr": lr},
                distributions=DISTRIBUTIONS,
                value=final if state == TrialState.COMPLETE else None,
                intermediate_values={step: final + 5 * (epochs - step) for step in range(1, epochs + 1)},
                state=state,
            )
        )


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    root = tmp_path_factory.mktemp("search-store")
    uri = f"sqlite:///{root}/mlflow.db"
    client = MlflowClient(uri)
    experiment_id = client.create_experiment(EXPERIMENT, artifact_location=(root / "mlruns").as_uri())

    grid_sweep = str(root / "multirun" / "grid")
    grid_parent = parent_run(client, experiment_id, grid_sweep, names.SWEEP_GRID, START - 10**6)
    for job, latent in enumerate((2, 8)):
        job_run(client, experiment_id, grid_sweep, grid_parent, job, START - 10**6 + job, latent, 1e-3, EPOCHS,
                150.0 - latent, "FINISHED")  # fmt: skip
    client.set_terminated(grid_parent)

    sweep, name, storage = str(root / "multirun" / "search"), "latent-lr", f"sqlite:///{root}/optuna.db"
    make_study(storage, name, TRIALS)
    search_tags = {
        names.TAG_STUDY: name, names.TAG_STORAGE: storage, names.TAG_OBJECTIVE: names.TEST_LOSS,
        names.TAG_DIRECTION: "minimize",
    }  # fmt: skip
    space = {names.SEARCH_SPACE_PARAM + key: value for key, value in SPACE.items()}
    space |= {"search.sampler": "tpe", "search.pruner": "hyperband", "search.trials": "8"}
    parent = parent_run(client, experiment_id, sweep, names.SWEEP_SEARCH, START, search_tags, space)
    ids = {}
    for number, (latent, lr, state, epochs, final) in TRIALS.items():
        tags = {names.TAG_STUDY: name, names.TAG_TRIAL: str(number)}
        if state != TrialState.FAIL:
            tags[names.TAG_TRIAL_STATE] = state.name
        if state == TrialState.PRUNED:
            tags[names.TAG_PRUNED_EPOCH] = str(epochs)
        status = "FAILED" if state == TrialState.FAIL else "FINISHED"
        ids[number] = job_run(client, experiment_id, sweep, parent, number, START + 1000 * (number + 1), latent, lr,
                              epochs, final, status, tags)  # fmt: skip
    client.log_batch(parent, tags=[RunTag(names.TAG_BEST_RUN, ids[3]), RunTag(names.TAG_BEST_TRIAL, "3")])
    client.set_terminated(parent)

    # A newer sweep whose parent run exists but none of its jobs has started yet.
    newest = parent_run(client, experiment_id, str(root / "multirun" / "newest"), names.SWEEP_GRID, START + 10**6)
    parents = {"grid": grid_parent, "search": parent, "newest": newest}
    return SimpleNamespace(uri=uri, root=root, client=client, sweep=sweep, grid_sweep=grid_sweep, ids=ids,
                           parents=parents, study=name, storage=storage)  # fmt: skip


def selected(store, sweep=None, every_run=False) -> pd.DataFrame:
    client, experiment = select.open_experiment(store.uri, EXPERIMENT)
    selection = select.choose_selection(client, experiment.experiment_id, sweep, None, every_run)
    return table.runs_table(select.search(store.uri, experiment.experiment_id, selection))


def test_the_latest_sweep_is_the_latest_jobs_not_a_parent_that_has_none(store):
    runs = selected(store)
    assert set(runs["sweep"]) == {store.sweep} and sorted(runs["run_id"]) == sorted(store.ids.values())


def test_parent_runs_are_never_among_the_runs_nor_their_params(store):
    everything = selected(store, every_run=True)
    assert len(everything) == 10 and not set(store.parents.values()) & set(everything["run_id"])
    # The parent's search space, sampler and counts would read as params and metrics of every job.
    assert not [column for column in everything if column.startswith(("space.", "search.", "sweep/"))]
    assert table.swept_params(table.finished(everything)) == ["model.latent", "optimizer.lr"]


def test_a_selection_of_a_parent_alone_is_an_error(store):
    client, experiment = select.open_experiment(store.uri, EXPERIMENT)
    only = select.Selection(f"attributes.run_id = '{store.parents['search']}'", "the parent")
    with pytest.raises(UserError, match="Only a sweep's parent run matches the parent"):
        select.search(store.uri, experiment.experiment_id, only)


def test_trials_carry_their_study_state_and_pruned_trials_are_not_compared(store):
    runs = selected(store)
    trials = runs.set_index("run_id").loc[[store.ids[number] for number in TRIALS]]
    assert trials["trial"].tolist() == list(TRIALS)
    assert trials["parent"].unique().tolist() == [store.parents["search"]]
    assert trials.loc[store.ids[6], "pruned_epoch"] == 2
    pruned = {store.ids[2], store.ids[6]}
    assert set(table.pruned(runs)["run_id"]) == pruned
    assert set(table.finished(runs)["run_id"]) == {store.ids[number] for number in (0, 1, 3, 5, 7)}
    assert not pruned & set(table.unfinished(runs)["run_id"])


def test_the_registry_picks_the_best_trial_never_a_parent_or_a_pruned_one(store):
    client, experiment = select.open_experiment(store.uri, EXPERIMENT)
    selection = select.choose_selection(client, experiment.experiment_id, store.sweep, None, False)
    choice = choose_best(select.search(store.uri, experiment.experiment_id, selection), names.TEST_LOSS, selection)
    assert choice.run_id == store.ids[3] and "of the 5 finished runs" in choice.reason


@pytest.fixture(scope="module")
def report(store, tmp_path_factory):
    """The bare command's report (the latest sweep: the search), logged."""
    out = tmp_path_factory.mktemp("search-report") / "report"
    assert report_command(["--tracking-uri", store.uri, "--out", str(out)]) == 0
    page = ReportPage()
    page.feed((out / names.REPORT_HTML).read_text())
    return SimpleNamespace(out=out, page=page, markdown=(out / names.REPORT_MD).read_text())


def test_the_search_section_names_the_best_trial_and_its_reproduce_command(store, report):
    command = f"python -m vae_sweep.reproduce {store.ids[3]}"
    assert f"## Search: study {store.study}" in report.markdown
    assert f"```\n{command}\n```" in report.markdown
    assert f"<pre><code>{command}</code></pre>" in (report.out / names.REPORT_HTML).read_text()
    assert "Best trial: #3 with loss/test 105.00 (lower is better) at latent=16, lr=0.002" in report.markdown
    assert "selected on the test set (loss/test): the test set chose it, so its test number is optimistic" in (
        report.markdown
    )
    assert "8 trials here (5 complete, 1 failed, 2 pruned)" in report.markdown
    assert "8 runs: 5 finished, 2 pruned by the search, 1 not." in report.markdown


def test_a_search_on_loss_val_says_its_best_trials_test_loss_is_not_chosen_by_the_test_set():
    search = study.Search("parent", "s", None, names.VAL_LOSS, "minimize", {"model.latent": "range(2, 5)"})
    trials = pd.DataFrame(
        {
            "run_id": ["a", "b"],
            "trial": [0, 1],
            "status": ["FINISHED"] * 2,
            "trial_state": ["COMPLETE"] * 2,
            "model.latent": [2, 4],
            "objective": [101.0, 100.0],
            names.TEST_LOSS: [100.5, 100.7],
        }
    )
    section = document.search_section(search, trials, study.best_trial(search, trials), "no importances", {})
    assert (
        "Best trial: #1 with loss/val 100.00 (lower is better) at latent=4, run b, test loss 100.70; selected on the "
        "validation split (loss/val), so its test number is an unbiased estimate." in section.blocks[1]
    )
    assert "optimistic" not in " ".join(block for block in section.blocks if isinstance(block, str))


def test_pruned_trials_have_their_own_table_and_no_place_in_the_comparisons(store, report):
    cells = report.page.cells
    assert report.page.rows["pruned"] == 3
    for number, epoch, value in ((2, f"1 of {EPOCHS}", "190.00"), (6, f"2 of {EPOCHS}", "180.00")):
        row = cells["pruned"][cells["pruned"].index(store.ids[number]) - 5 :]
        assert row[:6] == [str(number), str(TRIALS[number][0]), f"{TRIALS[number][1]:.4g}", epoch, value, row[5]]
        for compared in ("results", "gallery", "unfinished"):
            assert not [cell for cell in cells[compared] if store.ids[number][:8] in cell], compared
    assert report.page.rows["results"] == 1 + 5 and store.ids[4] in cells["unfinished"]
    assert set(pd.read_csv(report.out / names.REPORT_RUNS)["run_id"]) == set(store.ids.values())


def test_the_parent_is_never_a_compared_run(store, report):
    parent = store.parents["search"]
    for cells in report.page.cells.values():
        assert not [cell for cell in cells if parent[:8] in cell]


def test_importances_are_optunas_for_each_searched_key(report):
    cells = report.page.cells["importances"]
    assert report.page.rows["importances"] == 3
    for key, dimension in SPACE.items():
        assert key in cells and dimension in cells
    importances = [float(cell) for cell in cells if cell.replace(".", "").isdigit()]
    assert len(importances) == 2 and sum(importances) == pytest.approx(1.0, abs=0.02)


def test_the_figures_are_written_and_shown(store, report):
    search = report.out / names.REPORT_SEARCH / store.parents["search"]
    for path in (search / names.FIG_SEARCH_HISTORY, search / names.FIG_SEARCH_PARALLEL,
                 report.out / names.FIG_QUALITY_VS_X, report.out / names.FIG_ACTIVE_UNITS):  # fmt: skip
        assert path.stat().st_size > 0, path
    assert f"]({names.REPORT_SEARCH}/{store.parents['search']}/{names.FIG_SEARCH_HISTORY})" in report.markdown


def test_the_report_of_the_search_is_also_on_its_parent_run(store, report):
    logged = {item.path for item in store.client.list_artifacts(store.parents["search"], names.ARTIFACT_REPORT)}
    assert (
        f"{names.ARTIFACT_REPORT}/{names.REPORT_HTML}" in logged
        and f"{names.ARTIFACT_REPORT}/{names.REPORT_MD}" in logged
    )


def test_a_grid_sweeps_report_goes_to_its_parent_unless_no_log(store, tmp_path):
    parent = store.parents["grid"]
    arguments = ["--tracking-uri", store.uri, "--sweep", store.grid_sweep, "--x", "model.latent"]
    assert report_command([*arguments, "--out", str(tmp_path / "quiet"), "--no-log"]) == 0
    assert not store.client.list_artifacts(parent, names.ARTIFACT_REPORT)
    assert "## Search" not in (tmp_path / "quiet" / names.REPORT_MD).read_text()
    assert report_command([*arguments, "--out", str(tmp_path / "logged")]) == 0
    logged = {item.path for item in store.client.list_artifacts(parent, names.ARTIFACT_REPORT)}
    assert f"{names.ARTIFACT_REPORT}/{names.REPORT_HTML}" in logged


def test_a_filtered_sweep_or_runs_of_several_parents_leave_the_parents_alone(store, report, tmp_path):
    assert cli.sweep_parent(selected(store)) == store.parents["search"]
    assert cli.sweep_parent(selected(store, every_run=True)) is None
    part = "params.model.latent != '2'"
    assert report_command(["--tracking-uri", store.uri, "--out", str(tmp_path / "part"), "--sweep", store.sweep,
                           "--filter", part]) == 0  # fmt: skip
    assert part in (tmp_path / "part" / names.REPORT_MD).read_text()
    # The parent still holds the whole sweep's report (the module's), not this part of it.
    on_parent = store.client.download_artifacts(store.parents["search"], f"{names.ARTIFACT_REPORT}/{names.REPORT_MD}")
    assert part not in open(on_parent).read()


def search_markdown(store, tmp_path, **changes) -> str:
    """The search's section alone, as Markdown, with its parent's record changed as given."""
    runs = selected(store)
    search = replace(study.read_search(store.client, store.parents["search"]), **changes)
    section = cli.search_section(search, runs, tmp_path)
    return render.to_markdown("search", [section])


def test_without_its_storage_the_section_says_why_and_still_shows_the_trials(store, tmp_path):
    gone = tmp_path / "moved" / "optuna.db"
    text = search_markdown(store, tmp_path, storage=f"sqlite:///{gone}")
    assert f"No parameter importances: the study's storage {gone} is gone." in text
    assert not gone.exists() and not gone.parent.exists()
    assert f"python -m vae_sweep.reproduce {store.ids[3]}" in text and store.ids[6] in text


@pytest.mark.parametrize(
    "trials, reason",
    [
        ({0: TRIALS[0], 1: TRIALS[2]}, "they take two complete trials or more, and the study has 1."),
        ({n: (latent, 1e-3, *rest) for n, (latent, _, *rest) in TRIALS.items()}, None),
    ],
)
def test_a_study_that_cannot_weigh_its_dimensions_says_why(tmp_path, trials, reason):
    storage = f"sqlite:///{tmp_path}/optuna.db"
    make_study(storage, "s", trials)
    search = study.Search("parent", "s", storage, names.TEST_LOSS, "minimize", SPACE)
    if reason is None:
        assert set(study.importances(search)) == set(SPACE)
        return
    with pytest.raises(study.Unavailable, match=reason):
        study.importances(search)


def test_a_single_searched_dimension_has_no_importance_to_weigh(tmp_path):
    storage = f"sqlite:///{tmp_path}/optuna.db"
    one = optuna.create_study(storage=storage, study_name="one")
    for latent in (2, 8, 32):
        one.add_trial(
            optuna.trial.create_trial(
                params={"model.latent": latent}, distributions={"model.latent": DISTRIBUTIONS["model.latent"]},
                value=100.0 + latent,
            )
        )  # fmt: skip
    search = study.Search(
        "parent", "one", storage, names.TEST_LOSS, "minimize", {"model.latent": SPACE["model.latent"]}
    )
    with pytest.raises(study.Unavailable, match="the study searched only model.latent"):
        study.importances(search)


def test_log_dimensions_are_read_from_the_sweep_grammar():
    search = study.Search("p", "s", None, names.TEST_LOSS, "maximize", {**SPACE, "model.hidden": "choice(a, b)"})
    assert [key for key in search.space if search.is_log(key)] == ["model.latent", "optimizer.lr"]
    assert not search.lower_is_better


def points_of(latents, others=None, seeds=1) -> pd.DataFrame:
    frame = pd.DataFrame({"model.latent": latents, "seeds": seeds})
    return frame.assign(**({"optimizer.lr": others} if others is not None else {}))


@pytest.mark.parametrize(
    "points, others, lines",
    [
        (points_of([2, 10, 50, 2, 10, 50], [1e-3] * 3 + [1e-4] * 3), ["optimizer.lr"], True),  # a grid
        (points_of([2, 10, 50], [1e-3, 2e-4, 7e-4]), ["optimizer.lr"], False),  # a search of two dimensions
        (points_of(list(range(2, 2 + plots.GRID_LIMIT + 1))), [], False),  # a search of latent alone
        (points_of(list(range(2, 2 + plots.GRID_LIMIT + 1)), seeds=2), [], True),  # a wide grid with seeds
        (points_of(list(range(2, 2 + plots.GRID_LIMIT))), [], True),  # a grid as wide as ticks allow
    ],
)
def test_points_are_joined_by_lines_only_on_a_grid(points, others, lines):
    assert plots.draws_lines(points, "model.latent", others) is lines
