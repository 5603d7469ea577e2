"""A user's own images: folders (data=images) and .npz arrays (data=arrays), their bad inputs, cache and jobs."""

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tests.conftest import compose_job, experiment_runs, train_in_process
from vae_sweep import names
from vae_sweep.config import OWN_DATA, OWN_DATA_KEYS, Dataset, to_container, validate
from vae_sweep.core import data as core_data
from vae_sweep.core.sources import Pixels, cache, folder, load_source
from vae_sweep.errors import ConfigError, UserError
from vae_sweep.tracking.resume import fingerprint

JOB = ("training.epochs=1", "model.hidden=[16]", "eval.samples=100", "eval.iwae_k=2", "tracking.image_every=0")


@pytest.fixture(autouse=True)
def user_cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path_factory.mktemp("cache")))


def write_images(folder: Path, count: int, size=(8, 6), mode="L", seed=0, start=0) -> list[Path]:
    """`count` random PNGs of `size` (width, height) in `mode` under `folder`."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    shape = (size[1], size[0]) + ((3,) if mode == "RGB" else ())
    paths = []
    for i in range(start, start + count):
        paths.append(folder / f"{i:03}.png")
        Image.fromarray((rng.random(shape) * 255).astype(np.uint8), mode).save(paths[-1])
    return paths


def images(path: Path, size=None, channels=None, test_fraction=0.25):
    return load_source("images", str(path), Pixels(size, channels), test_fraction)


def test_train_and_test_class_folders_give_labels_in_class_order(tmp_path):
    for split, count in (("train", 4), ("test", 2)):
        for label, name in enumerate(("cat", "dog")):
            write_images(tmp_path / split / name, count, seed=label)
    loaded = images(tmp_path)
    assert loaded.shape == (1, 6, 8)
    train_images, train_labels = loaded.train
    assert train_images.shape == (8, 48) and train_images.dtype == torch.uint8
    assert train_labels.tolist() == [0] * 4 + [1] * 4
    assert loaded.test[1].tolist() == [0, 0, 1, 1]
    first = np.array(Image.open(tmp_path / "train" / "cat" / "000.png"))
    assert torch.equal(train_images[0], torch.from_numpy(first.reshape(-1)))


def test_a_single_folder_draws_its_test_split_once_whatever_the_seed(tmp_path):
    write_images(tmp_path, 20, mode="RGB")
    (tmp_path / "README.txt").write_text("not an image")
    first, again = images(tmp_path), images(tmp_path)
    assert first.shape == (3, 6, 8) and first.train[1] is None and first.skipped == 1
    assert len(first.test[0]) == 5 and len(first.train[0]) == 15
    assert torch.equal(first.test[0], again.test[0])
    # The RGB channels of a pixel lie in separate planes: (C, H, W) rows, as a conv layer reads them.
    decoded, _ = folder.decode(tmp_path / "000.png", Pixels())
    assert decoded.shape == (3, 6, 8)


def test_mixed_sizes_and_channels_need_data_size_and_channels(tmp_path):
    write_images(tmp_path, 3, size=(8, 8))
    write_images(tmp_path, 3, size=(5, 7), start=3)
    with pytest.raises(UserError, match=r"003.png is 5x7 grey but .*png is 8x8 grey.*data.size=N"):
        images(tmp_path)
    assert images(tmp_path, size=4).shape == (1, 4, 4)
    write_images(tmp_path, 3, size=(8, 8), mode="RGB", start=6)
    with pytest.raises(UserError, match=r"006.png is 4x4 RGB.*data.channels=1 or 3"):
        images(tmp_path, size=4)
    assert images(tmp_path, size=4, channels=3).shape == (3, 4, 4)


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda root: None, r"data.path=.*missing does not exist"),
        (lambda root: root.mkdir(), r"holds no image files; allowed: .jpg"),
        (lambda root: (root.mkdir(), (root / "a.txt").write_text("x")), r"holds no image files"),
        (
            lambda root: (write_images(root, 3), (root / "bad.png").write_bytes(b"not a png")),
            r"bad.png is not a readable",
        ),
        (lambda root: (write_images(root, 2), write_images(root / "sub", 2)), r"holds both image files .* subfolders"),
        (lambda root: write_images(root / "train", 3), r"has train/ but no test/"),
        (
            lambda root: (write_images(root / "train" / "a", 2), write_images(root / "test" / "b", 2)),
            r"test/b is a class the training images lack; allowed: a",
        ),
        (
            lambda root: (write_images(root / "train" / "a", 2), write_images(root / "test", 2)),
            r"one of train/ and test/ has class subfolders",
        ),
        (lambda root: write_images(root, 1), r"leaves 0 for testing"),
    ],
)
def test_each_bad_folder_is_one_user_error_naming_it(tmp_path, make, message):
    root = tmp_path / "missing"
    make(root)
    with pytest.raises(UserError, match=message):
        images(root)


def test_the_second_load_reads_the_cached_copy_until_a_file_changes(tmp_path, monkeypatch):
    files = write_images(tmp_path / "data", 8)
    first = images(tmp_path / "data")
    assert len(list(cache.folder().glob("*.pt"))) == 1

    decode = folder.decode

    def no_decoding(*args):
        raise AssertionError("decoded again")

    monkeypatch.setattr(folder, "decode", no_decoding)
    cached = images(tmp_path / "data")
    assert torch.equal(cached.train[0], first.train[0]) and cached.digest == first.digest
    monkeypatch.setattr(folder, "decode", decode)
    Image.fromarray(np.zeros((6, 8), np.uint8)).save(files[0])
    changed = images(tmp_path / "data")
    assert changed.digest != first.digest


def write_npz(path: Path, **arrays_) -> Path:
    np.savez(path, **arrays_)
    return path


def grey(count, dtype=np.uint8, seed=0):
    values = np.random.default_rng(seed).random((count, 5, 4))
    return (values * 255).astype(np.uint8) if dtype == np.uint8 else values.astype(dtype)


def test_arrays_of_grey_levels_and_of_float_rgb(tmp_path):
    labels = np.arange(6) % 3
    path = write_npz(tmp_path / "a.npz", x_train=grey(6), x_test=grey(2), y_train=labels, y_test=labels[:2])
    loaded = load_source("arrays", str(path), Pixels(), None)
    assert loaded.shape == (1, 5, 4) and loaded.train[0].dtype == torch.uint8
    assert torch.equal(loaded.train[0], torch.from_numpy(grey(6).reshape(6, -1)))
    assert loaded.train[1].tolist() == labels.tolist()
    rgb = np.random.default_rng(1).random((4, 5, 4, 3))
    path = write_npz(tmp_path / "b.npz", x_train=rgb, x_test=rgb[:1])
    loaded = load_source("arrays", str(path), Pixels(), None)
    assert loaded.shape == (3, 5, 4) and loaded.train[0].dtype == torch.float32 and loaded.train[1] is None
    assert torch.allclose(loaded.train[0][0], torch.from_numpy(rgb[0].transpose(2, 0, 1).reshape(-1)).float())
    converted = load_source("arrays", str(path), Pixels(size=2, channels=1), None)
    assert converted.shape == (1, 2, 2) and converted.train[0].shape == (4, 4)


@pytest.mark.parametrize(
    "contents, message",
    [
        (dict(x_train=grey(3)), r"lacks x_test \(it holds x_train\)"),
        (dict(x_train=grey(3).astype(np.int64), x_test=grey(2)), r"x_train has dtype int64; allowed: uint8"),
        (dict(x_train=grey(3, np.float32) * 2, x_test=grey(2)), r"x_train holds floats outside \[0, 1\]"),
        (dict(x_train=grey(3)[..., None].repeat(2, -1), x_test=grey(2)), r"x_train has shape \(3, 5, 4, 2\)"),
        (dict(x_train=grey(3), x_test=grey(2)[:, :3]), r"x_train's images are \(1, 5, 4\) but x_test's \(1, 3, 4\)"),
        (dict(x_train=grey(3), x_test=grey(2), y_train=np.zeros(3, int)), r"only one of y_train and y_test"),
        (dict(x_train=grey(3), x_test=grey(2), y_train=np.zeros(2, int), y_test=np.zeros(2, int)), r"3 integer labels"),
    ],
)
def test_each_bad_npz_is_one_user_error_naming_the_array(tmp_path, contents, message):
    path = write_npz(tmp_path / "bad.npz", **contents)
    with pytest.raises(UserError, match=message):
        load_source("arrays", str(path), Pixels(), None)


def test_a_file_that_is_no_npz_is_named(tmp_path):
    (tmp_path / "x.npz").write_text("hello")
    with pytest.raises(UserError, match=r"x.npz is not a readable .npz"):
        load_source("arrays", str(tmp_path / "x.npz"), Pixels(), None)
    with pytest.raises(UserError, match=r"nothing.npz does not exist"):
        load_source("arrays", str(tmp_path / "nothing.npz"), Pixels(), None)


def test_every_dataset_option_has_a_loader():
    assert {d.value for d in Dataset} == set(core_data.DATASETS) | {d.value for d in OWN_DATA}


@pytest.mark.parametrize(
    "overrides, message",
    [
        (("data=images",), r"Missing data.path for data=images"),
        (("data=arrays",), r"Missing data.path for data=arrays; allowed: an .npz"),
        (("data.size=32",), r"data.size applies to data=images and data=arrays, not data=mnist"),
        (("data=images", "data.path=x", "data.channels=2"), r"data.channels: 2; allowed: 1 \(grey\) or 3"),
        (("data=images", "data.path=x", "data.test_fraction=1.0"), r"data.test_fraction: 1.0; allowed"),
    ],
)
def test_data_keys_are_checked_before_any_job(tmp_path, overrides, message):
    with pytest.raises(ConfigError, match=message):
        validate(compose_job(tmp_path, *overrides))


def test_mnist_fingerprints_are_those_of_before_own_data(tmp_path):
    """The keys data=images added are unset for MNIST and leave its runs' fingerprints, so their resume, as it was."""
    config = to_container(compose_job(tmp_path, "data=fashion_mnist", "model.latent=20"))
    without = {**config, "data": {k: v for k, v in config["data"].items() if k not in OWN_DATA_KEYS}}
    assert fingerprint(config) == fingerprint(without)
    assert fingerprint(config, "a digest") != fingerprint(config)


@pytest.fixture
def labelled_rgb(tmp_path) -> Path:
    root = tmp_path / "glyphs"
    for label in range(3):
        write_images(root / f"class{label}", 20, size=(8, 8), mode="RGB", seed=label)
    return root


def test_an_mlp_job_on_a_labelled_rgb_folder_is_tracked_and_scored(workdir, labelled_rgb):
    final = train_in_process(workdir, "data=images", f"data.path={labelled_rgb}", *JOB)
    assert names.Q_FID in final and final[names.TEST_LOSS] > 0
    _, (run,) = experiment_runs(f"sqlite:///{workdir / 'mlflow.db'}")
    datasets = {item.dataset.name: item.dataset for item in run.inputs.dataset_inputs}
    assert set(datasets) == {"glyphs-train", "glyphs-test"}
    assert '"num_rows": 54' in datasets["glyphs-train"].profile
    assert run.data.tags[f"{names.TAG_DATA_MD5}train"] != run.data.tags[f"{names.TAG_DATA_MD5}test"]
    assert run.data.params["data.name"] == "images" and "data.path" not in run.data.params
    assert "data.channels" not in run.data.params  # unset: no parameter that MNIST runs would lack


def test_resume_never_mixes_data_that_changed(workdir, labelled_rgb):
    overrides = ("data=images", f"data.path={labelled_rgb}", "eval.enabled=false", *JOB)
    train_in_process(workdir, *overrides)
    train_in_process(workdir, *overrides)  # the same data: skipped
    uri = f"sqlite:///{workdir / 'mlflow.db'}"
    assert len(experiment_runs(uri)[1]) == 1
    write_images(labelled_rgb / "class0", 1, size=(8, 8), mode="RGB", seed=9)  # 000.png changes
    train_in_process(workdir, *overrides)
    runs = experiment_runs(uri)[1]
    assert len(runs) == 2 and len({run.data.tags[names.TAG_FINGERPRINT] for run in runs}) == 2


def test_an_mlp_job_on_unlabelled_arrays_skips_the_classifier_scores(workdir, caplog):
    path = write_npz(workdir / "patches.npz", x_train=grey(64), x_test=grey(16, np.float32))
    with caplog.at_level("INFO"):
        final = train_in_process(workdir, "data=arrays", f"data.path={path}", *JOB)
    assert names.Q_FID not in final and names.Q_IWAE_GREY in final
    assert "no FID or inception score: the data has no labels" in caplog.text
    assert (workdir / "outputs" / "in-process" / names.FIGURES / names.FIG_LATENT_SCATTER).exists()


def test_a_bad_folder_from_the_command_line_is_one_error_and_no_run(workdir, cli_in_process):
    (workdir / "empty").mkdir()
    result = cli_in_process("data=images", f"data.path={workdir / 'empty'}", cwd=workdir)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1].startswith(f"error: {workdir / 'empty'} holds no image files")
    assert not (workdir / "mlflow.db").exists() or not experiment_runs(f"sqlite:///{workdir / 'mlflow.db'}")[1]


def test_checkpoints_of_own_data_rebuild_their_model(workdir):
    from vae_sweep.jobs.checkpoint import load

    path = write_npz(workdir / "p.npz", x_train=grey(32), x_test=grey(8))
    train_in_process(workdir, "data=arrays", f"data.path={path}", "eval.enabled=false", "tracking.enabled=false", *JOB)
    model, config = load(workdir / "outputs" / "in-process" / names.CHECKPOINT)
    assert model.decode(torch.zeros(1, model.latent)).shape == (1, 20) and config["data"]["name"] == "arrays"


def test_a_conv_job_on_a_resized_rgb_folder_trains_and_loads_back(workdir, labelled_rgb):
    from vae_sweep import load_model

    conv = ("model=conv", "model.channels=[4,8]", "model.latent=4", "data.size=12")
    final = train_in_process(workdir, "data=images", f"data.path={labelled_rgb}", *conv, *JOB[:1], *JOB[2:])
    assert names.Q_FID in final and final[names.TEST_LOSS] > 0
    model, config = load_model(workdir / "outputs" / "in-process" / names.CHECKPOINT)
    assert (model.shape, config["model"]["name"], config["data"]["size"]) == ((3, 12, 12), "conv", 12)
    assert model.sample(2, torch.Generator().manual_seed(0)).shape == (2, 3 * 12 * 12)
    assert (workdir / "outputs" / "in-process" / names.FIGURES / names.FIG_SAMPLES).exists()


def test_a_size_the_conv_family_cannot_take_is_refused_before_any_run(workdir, labelled_rgb):
    with pytest.raises(UserError, match=r"data.size: 3x3 images are too small .* at least 4\); set data.size >= 4"):
        train_in_process(workdir, "data=images", f"data.path={labelled_rgb}", "data.size=3", "model=conv", *JOB[:1])
    assert not (workdir / "mlflow.db").exists() or not experiment_runs(f"sqlite:///{workdir / 'mlflow.db'}")[1]
