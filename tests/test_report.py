import csv
import math
import os
import re
import shutil
import subprocess
from html.parser import HTMLParser
from importlib import resources
from pathlib import Path
from types import SimpleNamespace

import matplotlib
import pandas as pd
import pytest
from mlflow.entities import Metric, Param, RunTag
from mlflow.tracking import MlflowClient

from tests.conftest import run_cli
from vae_sweep import names
from vae_sweep.analysis.report import cli, document, findings, plots, select, table
from vae_sweep.report import main as report_command

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

# (latent, epochs, seed) -> final test loss. At 10 epochs the gain stops at latent 10 (150 -> 110 -> 109.5);
# at 5 epochs it is still 10 nats from 10 to 50. Latent 2 at 10 epochs has two seeds: mean 150, std sqrt(2).
TEST_LOSS = {
    (2, 5, 0): 160.0,
    (10, 5, 0): 130.0,
    (50, 5, 0): 120.0,
    (2, 10, 0): 149.0,
    (2, 10, 1): 151.0,
    (10, 10, 0): 110.0,
    (50, 10, 0): 109.5,
}
KL = {2: 6.0, 3: 8.0, 10: 20.0, 50: 25.0, 200: 30.0}
ACTIVE_UNITS = {(2, 5): 2, (10, 5): 7, (50, 5): 9, (2, 10): 2, (10, 10): 8, (50, 10): 12}
# Latent 50 at 5 epochs logged no sample-quality metrics: its cells must read "—".
FID = {(2, 5): 30.0, (10, 5): 20.0, (2, 10): 25.0, (10, 10): 12.0, (50, 10): 15.0}
INCEPTION = {(2, 5): 5.0, (10, 5): 6.5, (2, 10): 6.0, (10, 10): 8.5, (50, 10): 8.0}
FAILURE = "ValueError: Non-finite loss in epoch 4, batch 7"
EXPERIMENT = "vae_sweep"


def small_pngs(folder: Path, names: list[str]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        fig, ax = plt.subplots(figsize=(1, 1))
        ax.plot([0, 1], [1, 0])
        ax.set_title(name, fontsize=4)
        fig.savefig(folder / name, dpi=20)
        plt.close(fig)
    return folder


def params_of(latent: int, epochs: int, seed: int, job: int) -> list[Param]:
    values = {
        "model.latent": latent, "model.hidden": "[32]", "model.activation": "relu", "training.epochs": epochs,
        "training.seed": seed, "training.beta": 1.0, "training.progress": False, "optimizer.lr": 0.001,
        "data.name": "mnist", "data.root": "/data", "paths.output_dir": f"/multirun/{job}",
    }  # fmt: skip
    return [Param(key, str(value)) for key, value in values.items()]


def history(loss: float, kl: float, epochs: int) -> list[Metric]:
    """Losses falling by 5 nats an epoch to the final values; train 2 nats under test."""
    metrics = []
    for step in range(1, epochs + 1):
        test = loss + 5 * (epochs - step)
        values = {"test/loss": test, "test/kl": kl, "test/recon": test - kl}
        values.update({"train/loss": test - 2, "train/kl": kl, "train/recon": test - 2 - kl})
        metrics += [Metric(key, value, 0, step) for key, value in values.items()]
    return metrics


def final_metrics(latent: int, epochs: int, loss: float) -> dict[str, float]:
    final = {"final/test/loss": loss, "final/test/kl": KL[latent], "final/test/recon": loss - KL[latent]}
    final.update({"final/train/loss": loss - 2, "quality/iwae_nll": loss - 4, "quality/train_test_gap": 2.0})
    if (latent, epochs) in ACTIVE_UNITS:
        final["quality/active_units"] = ACTIVE_UNITS[latent, epochs]
    if (latent, epochs) in FID:
        final.update({"quality/fid": FID[latent, epochs], "quality/inception_score": INCEPTION[latent, epochs]})
        final.update({"quality/fid_reference": 1.5, "quality/inception_score_reference": 9.6})
    return final


def seed_run(client, experiment_id, sweep, job, start, latent, epochs, seed, loss, status="FINISHED", pictures=None):
    name = f"latent={latent} epochs={epochs} seed={seed}"
    tags = {"sweep.id": sweep, "sweep.job": str(job)}
    run_id = client.create_run(experiment_id, start_time=start, tags=tags, run_name=name).info.run_id
    epochs_done = epochs if status == "FINISHED" else 3
    metrics = history(loss, KL[latent], epochs_done)
    if status == "FINISHED":
        metrics += [Metric(key, value, 0, epochs) for key, value in final_metrics(latent, epochs, loss).items()]
    client.log_batch(run_id, metrics=metrics, params=params_of(latent, epochs, seed, job))
    if status == "FAILED":
        client.log_batch(run_id, tags=[RunTag("error", FAILURE)])
    if pictures is not None:
        client.log_artifacts(run_id, str(pictures[latent == 2]), "figures")
    client.set_terminated(run_id, status=status, end_time=start + 60_000)
    return run_id


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """An older one-run sweep, then the sweep under study: 7 finished runs and a FAILED one."""
    root = tmp_path_factory.mktemp("store")
    uri = f"sqlite:///{root}/mlflow.db"
    client = MlflowClient(uri)
    experiment_id = client.create_experiment(EXPERIMENT, artifact_location=(root / "mlruns").as_uri())
    pictures = {
        False: small_pngs(root / "pictures", ["reconstructions.png", "samples.png", "latent_scatter.png"]),
        True: small_pngs(root / "pictures-2d", ["reconstructions.png", "samples.png", "latent_scatter.png",
                                                "manifold.png", "kl_per_dim.png"]),
    }  # fmt: skip
    start = 1_800_000_000_000
    old_sweep = str(root / "multirun" / "2026-01-01" / "09-00-00")
    seed_run(client, experiment_id, old_sweep, 0, start - 10**7, 3, 5, 0, 140.0)
    sweep = str(root / "multirun" / "2026-01-02" / "10-00-00")
    ids = {}
    for job, ((latent, epochs, seed), loss) in enumerate(TEST_LOSS.items()):
        ids[latent, epochs, seed] = seed_run(
            client, experiment_id, sweep, job, start + 1000 * job, latent, epochs, seed, loss, pictures=pictures
        )
    failed = seed_run(client, experiment_id, sweep, 7, start + 8000, 200, 10, 0, 0.0, status="FAILED")
    return SimpleNamespace(uri=uri, root=root, sweep=sweep, ids=ids, failed=failed, client=client)


def selected(store, sweep=None, filter_string=None, every_run=False) -> pd.DataFrame:
    client, experiment = select.open_experiment(store.uri, EXPERIMENT)
    selection = select.choose_selection(client, experiment.experiment_id, sweep, filter_string, every_run)
    return table.runs_table(select.search(store.uri, experiment.experiment_id, selection))


@pytest.fixture(scope="module")
def runs(store) -> pd.DataFrame:
    return selected(store)


@pytest.fixture(scope="module")
def points(runs) -> pd.DataFrame:
    return table.aggregate(table.finished(runs), ["model.latent", "training.epochs"])


def test_the_default_selection_is_the_latest_sweep_one_typed_row_per_run(runs, store):
    assert len(runs) == 8 and set(runs["sweep"]) == {store.sweep}
    assert runs["run_id"].is_unique
    assert pd.api.types.is_integer_dtype(runs["model.latent"]) and pd.api.types.is_integer_dtype(
        runs["training.epochs"]
    )
    assert runs["training.beta"].dtype == float and runs["optimizer.lr"].tolist() == [0.001] * 8
    assert runs["training.progress"].tolist() == [False] * 8
    assert runs["model.hidden"].tolist() == ["[32]"] * 8
    failed = runs[runs["status"] == "FAILED"]
    assert failed["run_id"].tolist() == [store.failed] and failed["error"].tolist() == [FAILURE]
    assert runs.loc[runs["status"] == "FINISHED", table.TIME.column].tolist() == [60.0] * 7


def test_selection_by_sweep_folder_filter_or_all(store, monkeypatch):
    monkeypatch.chdir(store.root)
    assert len(selected(store, sweep="multirun/2026-01-02/10-00-00")) == 8
    epochs5 = selected(store, sweep=store.sweep, filter_string="params.training.epochs = '5'")
    assert sorted(epochs5["model.latent"]) == [2, 10, 50]
    assert len(selected(store, every_run=True)) == 9


def test_swept_params_leave_out_seeds_and_paths(runs):
    assert table.swept_params(table.finished(runs)) == ["model.latent", "training.epochs"]


def test_only_params_that_define_the_result_are_swept():
    """The config's NOT_RESULT list decides: checkpointing and threads vary without making a new setting."""
    runs = pd.DataFrame(
        {
            "model.latent": [2, 2, 10, 10],
            "training.seed": [0, 1, 0, 1],
            "training.checkpoint_every": [1, 5, 1, 5],
            "training.threads": [1, 2, 3, 4],
            "final/test/loss": [1.0, 2.0, 3.0, 4.0],
        }
    )
    assert table.swept_params(runs) == ["model.latent"]


def test_time_is_the_training_time_where_logged_else_the_run_duration():
    start = pd.Timestamp("2026-01-01", tz="UTC")
    raw = pd.DataFrame(
        {
            "run_id": ["logged", "not logged"],
            "status": ["FINISHED", "FINISHED"],
            "start_time": [start, start],
            "end_time": [start + pd.Timedelta(seconds=90)] * 2,
            "params.model.latent": ["2", "2"],
            f"metrics.{names.TRAIN_TIME}": [42.0, None],
        }
    )
    runs = table.runs_table(raw)
    assert runs[table.TIME.column].tolist() == [42.0, 90.0]
    assert table.time_source(runs) == "training time (run duration where not logged)"
    assert table.time_source(runs.iloc[:1]) == "training time"
    assert table.time_source(runs.drop(columns=names.TRAIN_TIME)) == "run duration"


def test_aggregates_average_seeds_and_leave_out_the_failed_run(points, store):
    assert len(points) == 6 and 200 not in points["model.latent"].tolist()
    two_seeds = points[(points["model.latent"] == 2) & (points["training.epochs"] == 10)].iloc[0]
    assert two_seeds["seeds"] == 2
    assert two_seeds["loss/test"] == 150.0 and two_seeds["loss/test std"] == pytest.approx(math.sqrt(2))
    assert two_seeds["run_ids"] == [store.ids[2, 10, 0], store.ids[2, 10, 1]]
    assert points["seeds"].sum() == 7 and points["model.hidden"].tolist() == ["[32]"] * 6


def test_saturation_is_found_per_epoch_budget(points):
    saturation = findings.saturation_by_group(points, "model.latent", ["training.epochs"])
    assert saturation == {"epochs=5": None, "epochs=10": 10}


@pytest.mark.parametrize(
    "sizes, losses, threshold, expected",
    [
        ([2, 10, 50], [150, 110, 109.5], 1.0, 10),
        ([2, 10, 50], [150, 110, 109.5], 0.1, None),
        ([2, 10, 50], [150, 149.5, 120], 1.0, None),  # 10 gains little over 2, but 50 gains much over both
        ([2, 10, 50, 100], [150, 110, 112, 109.8], 1.0, 10),  # a worse point in between is no gain
        ([50, 2, 10], [109.5, 150, 110], 1.0, 10),  # the order of the rows does not matter
        ([2], [150], 1.0, None),
    ],
)
def test_find_saturation(sizes, losses, threshold, expected):
    frame = pd.DataFrame({"latent": sizes, "loss": losses})
    assert findings.find_saturation(frame, "latent", "loss", threshold) == expected


def test_best_settings_and_latent_usage(points):
    best = findings.best_setting(points, "loss/test")
    assert (best["model.latent"], best["training.epochs"]) == (50, 10)
    best_fid = findings.best_setting(points, "quality/fid")
    assert (best_fid["model.latent"], best_fid["training.epochs"]) == (10, 10)
    best_inception = findings.best_setting(points, "quality/inception_score", lower_is_better=False)
    assert best_inception["quality/inception_score"] == 8.5
    assert findings.best_setting(points, "quality/no_such_metric") is None
    assert findings.active_units_by_latent(points, ["training.epochs"]) == {
        "epochs=5": {2: 2.0, 10: 7.0, 50: 9.0},
        "epochs=10": {2: 2.0, 10: 8.0, 50: 12.0},
    }


def test_findings_state_the_numbers(points):
    lines = findings.findings(points, "model.latent", ["training.epochs"])
    text = "\n".join(lines)
    assert (
        "Lowest test loss: 109.50 at latent=50, epochs=10 (1 run); selected on the test set (loss/test): the test set "
        "chose it, so its test number is optimistic" in text
    )
    # The fixture's runs are grey-level ones (no data.binarize: the default): their IWAE number is no NLL.
    assert "Lowest IWAE bound, grey levels (not an NLL): 105.50 at latent=50, epochs=10" in text
    assert "IWAE NLL" not in text
    assert "Lowest FID: 12.00 at latent=10, epochs=10" in text
    assert "Highest inception score: 8.50 at latent=10, epochs=10" in text
    assert "Test loss (epochs=10) stops improving by ≥ 1 nat beyond model.latent = 10" in text
    assert "Test loss (epochs=5) still improves by ≥ 1 nat at the largest step of model.latent" in text
    assert "Active units (epochs=10), latent size → dimensions used: 2 → 2.0, 10 → 8.0, 50 → 12.0." in text


def test_learning_curves_of_many_runs_show_one_run_per_setting(store, runs, points, tmp_path, monkeypatch):
    monkeypatch.setattr(cli, "CURVE_RUN_LIMIT", 6)
    done = table.finished(runs)
    curves, which = cli.curve_runs(done, points)
    histories = table.fetch_histories(store.client, curves["run_id"].tolist(), plots.HISTORY_KEYS)
    assert histories["run_id"].nunique() == 6
    drawn = cli.draw_figures(done, points, "model.latent", ["training.epochs"], histories, tmp_path)
    assert all((tmp_path / path).stat().st_size > 0 for path in drawn.values())
    captions = [block.caption for block in document.figures_section(points, "model.latent", drawn, which).blocks]
    assert "Learning curves of one run per setting (its lowest seed) of 7: train dashed, test solid." in captions


class ReportPage(HTMLParser):
    """The <img> sources, references to other files and the rows of each table, by class."""

    def __init__(self):
        super().__init__()
        self.images, self.links, self.rows, self.cells = [], [], {}, {}
        self.table = None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "img":
            self.images.append(attrs["src"])
        if tag == "link" or (tag != "img" and "src" in attrs):
            self.links.append(tag)
        if tag == "table":
            self.table = attrs.get("class")
            self.rows[self.table], self.cells[self.table] = 0, []
        if tag == "tr":
            self.rows[self.table] += 1

    def handle_data(self, data):
        if self.table:
            self.cells[self.table].append(data)

    def handle_endtag(self, tag):
        if tag == "table":
            self.table = None


def test_the_report_folder_run_and_html(store, tmp_path, capsys):
    out = tmp_path / "report"
    assert report_command(["--tracking-uri", store.uri, "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert printed.splitlines()[-1] == str(out) and "Lowest test loss: 109.50" in printed
    figures = [names.FIG_QUALITY_VS_X, names.FIG_ACTIVE_UNITS, names.FIG_LEARNING_CURVES, names.FIG_RATE_DISTORTION]
    files = [names.REPORT_HTML, names.REPORT_MD, names.REPORT_RUNS]
    for name in [*files, *figures]:
        assert (out / name).stat().st_size > 0, name

    with open(out / names.REPORT_RUNS) as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 8 and sorted(row["status"] for row in rows) == ["FAILED"] + ["FINISHED"] * 7

    page = ReportPage()
    page.feed((out / names.REPORT_HTML).read_text())
    # 4 figures; 6 settings with reconstructions and samples, the two at latent 2 with scatter and manifold too.
    assert len(page.images) == 4 + 6 * 2 + 2 * 2
    assert all(src.startswith("data:image/png;base64,") for src in page.images) and not page.links
    assert page.rows == {"results": 7, "gallery": 7, "unfinished": 2}
    assert FAILURE in page.cells["unfinished"] and store.failed in page.cells["unfinished"]
    assert "150.00 ± 1.41" in page.cells["results"] and "—" in page.cells["results"]
    assert "FID (real data: 1.50)" in page.cells["results"]
    # The fixture's jobs logged no training time: the column says it holds each run's duration.
    assert "run duration (s)" in page.cells["results"]

    markdown = (out / names.REPORT_MD).read_text()
    assert "![" in markdown and "## Findings" in markdown and FAILURE in markdown
    # The fixture's test KL is flat and every latent size ran at both budgets: no rise, no confound.
    assert "## The study's questions" in markdown and "the test KL never rose after its low" in markdown
    assert "At epochs=5, latent 2 → 10: test loss 160.00 → 130.00 (-30.00 nats" in markdown
    assert "change together" not in markdown

    client = MlflowClient(store.uri)
    reports = client.search_runs([client.get_experiment_by_name(names.reports_experiment(EXPERIMENT)).experiment_id])
    assert len(reports) == 1 and reports[0].info.status == "FINISHED"
    assert reports[0].data.params["selection"] == f"sweep {store.sweep}"
    logged = {artifact.path for artifact in client.list_artifacts(reports[0].info.run_id)}
    assert {*files, *figures} <= logged
    assert reports[0].info.artifact_uri.startswith((store.root / "mlruns").as_uri())


@pytest.fixture(scope="module")
def html_report(store, tmp_path_factory) -> Path:
    """report.html of the fixture's sweep, not logged."""
    out = tmp_path_factory.mktemp("html") / "report"
    assert report_command(["--tracking-uri", store.uri, "--out", str(out), "--no-log"]) == 0
    return out / names.REPORT_HTML


VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}


class PageStructure(HTMLParser):
    """Each <table> and <img> with the chain of elements around it, the <meta> tags, <style> and <script> text."""

    def __init__(self):
        super().__init__()
        self.open, self.tables, self.images, self.metas, self.styles, self.scripts = [], [], [], [], [], []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        around = list(self.open)
        if tag == "table":
            self.tables.append(around)
        if tag == "img":
            self.images.append((attrs, around))
        if tag == "meta":
            self.metas.append(attrs)
        if tag not in VOID:
            self.open.append((tag, attrs))

    def handle_data(self, data):
        if self.open and self.open[-1][0] == "style":
            self.styles.append(data)
        if self.open and self.open[-1][0] == "script":
            self.scripts.append(data)

    def handle_endtag(self, tag):
        assert self.open and self.open[-1][0] == tag, f"</{tag}> closes {self.open[-1:]}"
        self.open.pop()


def has_class(element: tuple[str, dict], tag: str, name: str) -> bool:
    return element[0] == tag and name in (element[1].get("class") or "").split()


def test_the_html_scrolls_tables_zooms_images_and_inlines_its_stylesheet(html_report):
    page = PageStructure()
    page.feed(html_report.read_text())
    page.close()
    assert page.open == []
    assert len(page.tables) == 3
    assert all(any(has_class(element, "div", "scroll") for element in around) for around in page.tables)
    assert len(page.images) == 4 + 6 * 2 + 2 * 2
    for attrs, around in page.images:
        assert attrs.get("alt", "").strip(), attrs.get("alt")
        assert has_class(around[-1], "button", "zoom"), around[-1]
    # The overlay shows the clicked picture's own source: no picture is in the page twice.
    assert html_report.read_text().count("data:image/png;base64,") == len(page.images)
    assert any("button.zoom" in script and "overlay" in script for script in page.scripts)
    assert {"name": "viewport", "content": "width=device-width, initial-scale=1"} in page.metas
    stylesheet = (resources.files("vae_sweep.analysis.report") / "templates" / "style.css").read_text()
    assert len(page.styles) == 1 and page.styles[0].strip() == stylesheet.strip()


def chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


# Appended to a copy of the report: once the pictures are laid out, the page's width against the window's, and
# whether clicking the first picture opens it full size.
LAYOUT_PROBE = """<script>
window.addEventListener("load", () => {
  const root = document.documentElement, opener = document.querySelector("button.zoom");
  document.body.dataset.scrollWidth = root.scrollWidth;
  document.body.dataset.clientWidth = root.clientWidth;
  opener.click();
  const overlay = document.querySelector(".overlay"), shown = overlay.querySelector("img");
  document.body.dataset.zoomed = !overlay.hidden && shown.src === opener.querySelector("img").src;
});
</script>"""


@pytest.mark.slow
@pytest.mark.skipif(chromium() is None, reason="no chromium or chromium-browser binary")
@pytest.mark.parametrize("width", [800, 1440])
def test_the_html_fits_the_window_in_headless_chromium(html_report, tmp_path, width):
    probe = tmp_path / "probe.html"
    probe.write_text(html_report.read_text().replace("</body>", LAYOUT_PROBE + "</body>"))
    dom = subprocess.run(
        [chromium(), "--headless", "--no-sandbox", "--disable-gpu", f"--window-size={width},1000",
         "--virtual-time-budget=5000", "--dump-dom", probe.as_uri()],
        capture_output=True, text=True, timeout=120, check=True,
    ).stdout  # fmt: skip
    measured = dict(re.findall(r'data-(scroll-width|client-width|zoomed)="([^"]*)"', dom))
    assert measured.keys() == {"scroll-width", "client-width", "zoomed"}, dom[-500:]
    client_width = int(measured["client-width"])
    assert width - 30 <= client_width <= width  # the window was as wide as asked, less a scroll bar
    assert int(measured["scroll-width"]) <= client_width
    assert measured["zoomed"] == "true"


def report_runs(uri: str) -> int:
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name(names.reports_experiment(EXPERIMENT))
    return 0 if experiment is None else len(client.search_runs([experiment.experiment_id]))


def test_no_log_leaves_the_reports_experiment_alone(store, tmp_path):
    before = report_runs(store.uri)
    out = tmp_path / "all"
    assert (
        report_command(["--tracking-uri", store.uri, "--all", "--no-log", "--out", str(out), "--x", "training.epochs"])
        == 0
    )
    assert report_runs(store.uri) == before
    assert len(pd.read_csv(out / names.REPORT_RUNS)) == 9 and (out / names.REPORT_HTML).is_file()


@pytest.mark.parametrize(
    "arguments, message",
    [
        (["--experiment", "nope"], "error: No experiment 'nope'"),
        (["--x", "model.width"], "error: --x model.width is not a param of the selected runs"),
        (["--filter", "params.training.epochs = '7'"], "error: No runs match filter params.training.epochs = '7'."),
        (["--filter", "params.training.epochs =="], "error: MLflow rejected the selection"),
    ],
)
def test_user_errors_are_one_line(store, tmp_path, capsys, arguments, message):
    assert report_command(["--tracking-uri", store.uri, "--out", str(tmp_path / "r"), *arguments]) == 1
    error = capsys.readouterr().err
    assert error.startswith(message) and error.count("\n") == 1
    assert not (tmp_path / "r").exists()


def test_no_store_is_an_error_and_creates_none(tmp_path, capsys):
    assert report_command(["--tracking-uri", f"sqlite:///{tmp_path}/mlflow.db"]) == 1
    assert capsys.readouterr().err.startswith(f"error: No MLflow store at sqlite:///{tmp_path}/mlflow.db")
    assert not (tmp_path / "mlflow.db").exists()


def test_an_empty_selection_exits_1_with_one_line(store, tmp_path):
    result = run_cli("vae_sweep.report", "--tracking-uri", store.uri, "--sweep", "multirun/none", cwd=tmp_path)
    assert result.returncode == 1
    assert result.stderr == f"error: No runs match sweep {tmp_path / 'multirun' / 'none'}.\n"
    assert not (tmp_path / "reports").exists()


@pytest.mark.slow
def test_the_bare_command_reports_the_sweep_just_run(workdir, cli_in_process, capsys):
    # Both commands in this process: the sweep's basic launcher runs its jobs here too.
    sweep = cli_in_process(
        "-m", "model.latent=2,3", "training.epochs=1", "model.hidden=[32]", "eval.samples=200", "eval.iwae_k=5",
        cwd=workdir,
    )  # fmt: skip
    assert sweep.returncode == 0, sweep.stderr
    assert report_command([]) == 0
    folder = Path(capsys.readouterr().out.splitlines()[-1])
    assert folder.parent == workdir / "reports" and (folder / names.REPORT_HTML).is_file()
    runs = pd.read_csv(folder / names.REPORT_RUNS)
    assert sorted(runs["model.latent"]) == [2, 3] and set(runs["status"]) == {"FINISHED"}


def test_reporting_leaves_the_environment_as_it_found_it(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    with select.tracking_uri(f"sqlite:///{tmp_path}/x.db"):
        assert os.environ["MLFLOW_TRACKING_URI"] == f"sqlite:///{tmp_path}/x.db"
    assert "MLFLOW_TRACKING_URI" not in os.environ


def test_counts_are_stated_as_the_runs_logged_them():
    runs = pd.DataFrame({names.Q_IWAE_K: [100.0, 5000.0, 100.0], names.Q_SAMPLES: [None, None, None]})
    assert document.logged(runs, names.Q_IWAE_K) == "100 or 5000"
    assert document.logged(runs, names.Q_SAMPLES) == "an unrecorded number of"


def test_runs_of_one_seed_are_one_sample_not_a_spread_of_zero():
    """A reproduction beside its original: two runs of seed 0 are one sample; the seeds' spread is of seeds 0 and 1."""
    runs = pd.DataFrame(
        {
            "run_id": ["a", "a-again", "b", "c", "d"],
            "model.latent": [2, 2, 10, 10, 10],
            "training.seed": [0, 0, 0, 0, 1],
            names.TEST_LOSS: [150.0, 150.0, 110.0, 112.0, 116.0],
            table.TIME.column: [60.0] * 5,
        }
    )
    points = table.aggregate(runs, ["model.latent"]).set_index("model.latent")
    assert points["seeds"].to_dict() == {2: 1, 10: 2} and points["runs"].to_dict() == {2: 2, 10: 3}
    assert pd.isna(points.at[2, "loss/test std"])
    # Seed 0 of latent 10 is the mean of its two runs (111), seed 1 is 116.
    assert points.at[10, "loss/test"] == 113.5 and points.at[10, "loss/test std"] == pytest.approx(math.sqrt(12.5))
    assert findings.runs_and_seeds(points.loc[2]) == "2 runs of 1 seed"


def test_a_point_reused_from_an_earlier_run_belongs_to_the_sweep(tmp_path):
    """`python -m vae_sweep` (latent 2), then a sweep over latent 2 and 10: its first point is the earlier run."""
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    client = MlflowClient(uri)
    experiment_id = client.create_experiment(EXPERIMENT, artifact_location=(tmp_path / "mlruns").as_uri())
    start = 1_800_000_000_000
    earlier = seed_run(client, experiment_id, str(tmp_path / "outputs" / "single"), 0, start, 2, 5, 0, 160.0)
    sweep = str(tmp_path / "multirun" / "sweep")
    tags = {names.TAG_SWEEP_ID: sweep, names.TAG_SWEEP_KIND: names.SWEEP_GRID, f"{names.TAG_SWEEP_REUSED}0": earlier}
    parent = client.create_run(experiment_id, start_time=start + 1000, tags=tags).info.run_id
    new = seed_run(client, experiment_id, sweep, 1, start + 2000, 10, 5, 0, 130.0)
    client.set_tag(new, names.TAG_PARENT_RUN, parent)
    store = SimpleNamespace(uri=uri)
    runs = selected(store)  # the latest sweep
    assert sorted(runs["run_id"]) == sorted([earlier, new]) and runs.set_index("run_id")["reused"][earlier]
    assert cli.sweep_parent(runs) == parent
    narrowed = selected(store, sweep=sweep, filter_string="params.`model.latent` = '10'")
    assert narrowed["run_id"].tolist() == [new]
    # A sweep whose every point was reused started no job run: its parent makes it the latest sweep still.
    again = str(tmp_path / "multirun" / "again")
    tags = {names.TAG_SWEEP_ID: again, names.TAG_SWEEP_KIND: names.SWEEP_GRID, f"{names.TAG_SWEEP_REUSED}0": new}
    client.create_run(experiment_id, start_time=start + 3000, tags=tags)
    assert selected(store)["run_id"].tolist() == [new]
    text = document.overview(runs, uri, "model.latent", ["model.latent"]).blocks[0]
    assert text.startswith("2 runs (1 of them trained before, reused as this sweep's points): 2 finished")


def test_a_key_of_another_family_is_left_out_of_labels_and_marked_in_the_table():
    """A sweep over model=mlp,conv: conv runs have no hidden, mlp runs no channels; neither reads 'hidden=nan'."""
    points = pd.DataFrame(
        {"model.name": ["conv", "mlp"], "model.hidden": [float("nan"), "[200, 200]"], "model.channels": ["[16]", None]}
    )
    keys = ["model.name", "model.hidden", "model.channels"]
    assert findings.setting(points.iloc[0], keys) == "name=conv, channels=[16]"
    assert findings.setting(points.iloc[1], keys) == "name=mlp, hidden=[200, 200]"
    points = points.assign(seeds=1, run_ids=[["a" * 32], ["b" * 32]])
    rows = document.results_section(points, pd.DataFrame(), keys).blocks[1].rows
    assert [row[:3] for row in rows] == [["conv", document.NOT_ITS_KEY, "[16]"], ["mlp", "[200, 200]", "n/a"]]


def latent_step(seeds: int, std: float | None) -> pd.DataFrame:
    """Two latent sizes 0.12 nats apart, as aggregate() gives them."""
    return pd.DataFrame(
        {
            "model.latent": [100, 200],
            "seeds": [seeds, seeds],
            names.TEST_LOSS: [99.36, 99.24],
            f"{names.TEST_LOSS} std": [std, std],
            "run_ids": [["a"], ["b"]],
        }
    )


def test_a_difference_of_0_12_nats_is_not_drawn_across_the_whole_panel(tmp_path):
    figure, (narrow, wide) = plt.subplots(1, 2)
    step = latent_step(1, None)
    narrow.errorbar(step["model.latent"], step[names.TEST_LOSS], yerr=0.0)
    wide.plot([100, 200], [90.0, 110.0])
    plots.widen_y(narrow)
    plots.widen_y(wide)
    low, high = narrow.get_ylim()
    assert high - low >= plots.MIN_SPAN_NATS and low < 99.24 < 99.36 < high
    assert wide.get_ylim()[1] - wide.get_ylim()[0] < 25  # a wide axis is left as the data need it
    plt.close(figure)
    path = plots.plot_quality_vs_x(step, "model.latent", [], tmp_path / names.FIG_QUALITY_VS_X)
    assert path.stat().st_size > 0


def test_long_runs_get_a_log_epoch_axis_and_short_ones_a_linear_one(tmp_path):
    figure, (short, long) = plt.subplots(1, 2)
    plots.epoch_axis(short, 100)
    plots.epoch_axis(long, 3280)
    assert (short.get_xscale(), short.get_xlabel()) == ("linear", "epoch")
    assert (long.get_xscale(), long.get_xlabel()) == ("log", "epoch (log scale)")
    plt.close(figure)
    epochs = range(1, plots.LOG_EPOCHS_FROM + 1)
    histories = pd.DataFrame(
        [("r", names.epoch_key(split, term), epoch, 100.0 / epoch) for split in names.SPLITS
         for term in names.TERMS for epoch in epochs],
        columns=["run_id", "key", "step", "value"],
    )  # fmt: skip
    path = plots.plot_learning_curves(histories, {"r": "burda_vae"}, "one run", tmp_path / "curves.png")
    assert path.stat().st_size > 0


def test_the_caption_says_when_there_is_one_seed_per_point():
    figures = {names.FIG_QUALITY_VS_X: Path(names.FIG_QUALITY_VS_X)}
    (one,) = document.figures_section(latent_step(1, None), "model.latent", figures, "").blocks
    assert "one seed per point, so no error bars" in one.caption
    (several,) = document.figures_section(latent_step(3, 0.3), "model.latent", figures, "").blocks
    assert "error bars: one std over seeds" in several.caption and "one seed per point" not in several.caption


def test_the_best_setting_is_chosen_on_the_validation_split_where_every_setting_has_it():
    step = latent_step(1, None).assign(**{names.VAL_LOSS: [98.0, 99.0]})
    (line, *_) = findings.best_lines(step, ["model.latent"])
    assert line == (
        "Best setting: latent=100 (1 run), loss/val 98.00, test loss 99.36; selected on the validation split "
        "(loss/val), so its test number is an unbiased estimate"
    )
    step.loc[1, names.VAL_LOSS] = None  # one setting without a validation split: the test set chooses
    assert findings.best_lines(step, ["model.latent"])[0].startswith("Lowest test loss: 99.24 at latent=200")


def test_a_kl_answer_from_fewer_runs_than_the_setting_has_says_so():
    step = latent_step(3, 0.3).assign(run_ids=[["a", "b", "c"], ["d", "e", "f"]])
    assert cli.kl_settings(step, ["model.latent"], {"a", "b", "c", "d", "e", "f"}) == {
        "latent=100": ["a", "b", "c"],
        "latent=200": ["d", "e", "f"],
    }
    labels = cli.kl_settings(step, ["model.latent"], {"a", "d"})
    assert labels == {
        f"latent=100 (1 of its 3 runs: more than {cli.CURVE_RUN_LIMIT} runs were selected)": ["a"],
        f"latent=200 (1 of its 3 runs: more than {cli.CURVE_RUN_LIMIT} runs were selected)": ["d"],
    }
