import pytest
from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig

from tests.conftest import REPO
from vae_sweep.config import flatten, register_configs, to_container, validate
from vae_sweep.core.models import schemas
from vae_sweep.errors import ConfigError


def compose_config(*overrides: str):
    register_configs(schemas())
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=list(overrides), return_hydra_config=True)
    HydraConfig.instance().set_config(cfg)
    return cfg


def test_defaults_are_the_study_first_run():
    cfg = compose_config()
    assert cfg.model.latent == 2 and list(cfg.model.hidden) == [512, 256]
    assert cfg.optimizer.name.value == "adam" and cfg.optimizer.lr == 1e-3
    assert cfg.training.batch_size == 128 and cfg.training.epochs == 50
    assert cfg.data.name.value == "mnist"
    validate(cfg)


def test_data_root_follows_env_then_launch_dir(monkeypatch, tmp_path):
    monkeypatch.delenv("VAE_SWEEP_DATA_DIR", raising=False)
    monkeypatch.chdir(tmp_path)
    assert compose_config().data.root == f"{tmp_path}/data"
    monkeypatch.setenv("VAE_SWEEP_DATA_DIR", "/somewhere/else")
    assert compose_config().data.root == "/somewhere/else"


def test_seed_experiment_sweeps_three_study_points():
    cfg = compose_config("experiment=seed")
    assert dict(cfg.hydra.sweeper.params) == {"+study": "latent2_epochs50,latent100_epochs100,latent200_epochs100"}
    for point, (latent, epochs) in {"latent2_epochs50": (2, 50), "latent100_epochs100": (100, 100)}.items():
        composed = compose_config("experiment=seed", f"+study={point}")
        assert (composed.model.latent, composed.training.epochs) == (latent, epochs)


@pytest.mark.parametrize(
    "override, key",
    [
        ("model.latent=0", "model.latent"),
        ("model.hidden=[512,0]", "model.hidden"),
        ("training.epochs=-1", "training.epochs"),
        ("training.batch_size=0", "training.batch_size"),
        ("optimizer.lr=0", "optimizer.lr"),
        ("training.beta=-0.5", "training.beta"),
        ("training.device=tpu", "training.device"),
        ("optimizer.momentum=1.5", "optimizer.momentum"),
        ("model.samples=0", "model.samples"),
        ("model.prior_components=0", "model.prior_components"),
        ("model.name=conv", "model.name"),  # the family is the group's option, not a name to rewrite
    ],
)
def test_out_of_range_values_name_the_key_and_what_is_allowed(override, key):
    with pytest.raises(ConfigError, match=rf"{key}: .*allowed: "):
        validate(compose_config(override))


def test_flatten_gives_dotted_keys_of_the_resolved_config():
    flat = flatten(to_container(compose_config("model.latent=5", "paths.output_dir=/tmp/job")))
    assert flat["model.latent"] == 5
    assert flat["model.activation"] == "relu"
    assert flat["model.hidden"] == [512, 256]
    assert not any(key.startswith("hydra.") for key in flat)
    assert flat["paths.output_dir"] == "/tmp/job"


NUMERIC_SETTINGS = [
    "model.latent", "training.epochs", "training.batch_size", "training.eval_batch_size", "training.seed",
    "training.eval_seed", "training.threads", "training.beta", "training.kl_warmup_epochs", "training.grad_clip",
    "training.checkpoint_every", "training.heartbeat_timeout_s", "optimizer.lr", "optimizer.weight_decay",
    "optimizer.momentum", "optimizer.schedule_pass_scale", "tracking.image_every", "tracking.system_metrics_s",
]  # fmt: skip


@pytest.mark.parametrize("key", NUMERIC_SETTINGS)
def test_every_numeric_setting_rejects_text(key):
    with pytest.raises(Exception, match=f"{key}|could not be converted"):
        compose_config(f"{key}=abc")


@pytest.mark.parametrize("key", [k for k in NUMERIC_SETTINGS if k not in ("training.seed", "training.eval_seed")])
def test_every_bounded_numeric_setting_rejects_out_of_range(key):
    with pytest.raises(ConfigError, match=rf"Invalid value for {key}: "):
        validate(compose_config(f"{key}=-5"))


def test_examples_parity_is_pytorch_examples_vae():
    cfg = compose_config("experiment=examples_parity")
    validate(cfg)
    assert (list(cfg.model.hidden), cfg.model.latent, cfg.model.activation.value) == ([400], 20, "relu")
    assert (cfg.optimizer.name.value, cfg.optimizer.lr, cfg.optimizer.schedule.value) == ("adam", 1e-3, "constant")
    assert (cfg.training.batch_size, cfg.training.epochs, cfg.data.binarize.value) == (128, 10, "none")


def test_burda_vae_is_the_papers_baseline():
    cfg = compose_config("experiment=burda_vae")
    validate(cfg)
    assert (list(cfg.model.hidden), cfg.model.latent, cfg.model.activation.value) == ([200, 200], 50, "tanh")
    assert (cfg.data.binarize.value, cfg.training.batch_size, cfg.eval.iwae_k) == ("dynamic", 20, 5000)
    assert (cfg.optimizer.schedule.value, cfg.optimizer.lr, cfg.training.epochs) == ("burda", 1e-3, 3280)


def test_a_shortened_burda_schedule_is_allowed_and_recorded():
    overrides = ("experiment=burda_vae", "optimizer.schedule_pass_scale=0.1", "training.epochs=330")
    cfg = compose_config(*overrides, "paths.output_dir=/tmp/job")
    validate(cfg)
    assert flatten(to_container(cfg))["optimizer.schedule_pass_scale"] == 0.1


@pytest.mark.parametrize("overrides", [("training.epochs=100",), ("optimizer.schedule_pass_scale=0.1",)])
def test_a_schedule_and_an_epoch_count_that_disagree_name_both(overrides):
    with pytest.raises(ConfigError, match=r"training.epochs: .*allowed: (330|3280), the passes of optimizer.schedule"):
        validate(compose_config("experiment=burda_vae", *overrides))


def test_each_family_has_its_own_keys_and_rules():
    conv = compose_config("model=conv", "model.objective=iwae", "model.samples=5", "model.prior=vamp")
    assert (conv.model.name, list(conv.model.channels), conv.model.objective.value) == ("conv", [16, 32], "iwae")
    assert "hidden" not in conv.model
    validate(conv)
    with pytest.raises(ConfigError, match=r"model.kernel: 9; allowed: an integer in \[2, 7\]"):
        validate(compose_config("model=conv", "model.kernel=9"))


@pytest.mark.parametrize(
    "overrides, words",
    [
        (["model=foo"], "available options in 'model': conv, mlp"),
        (["model=conv", "model.hidden=[32]"], "model=conv has the keys name, latent,"),
        (["model.objective=bogus"], "expected one of [elbo, iwae]"),
    ],
)
def test_an_unknown_family_or_a_foreign_key_is_one_error_naming_what_is_allowed(overrides, words):
    from vae_sweep.cli import _user_message

    with pytest.raises(Exception) as caught:
        compose_config(*overrides)
    assert words in _user_message(caught.value)


def test_an_old_style_mlp_config_keeps_its_fingerprint():
    """The fingerprints main gave these configs before model families: FINISHED runs are still skipped, not redone."""
    from vae_sweep.tracking.resume import fingerprint

    # burda_vae's is the one it has had since it set the paper's Adam eps (1e-4), which changed how it trains.
    before = {(): "cd647f6bfbf30c5f", ("experiment=burda_vae",): "3d9336c82137e504"}
    for overrides, key in before.items():
        config = to_container(compose_config(*overrides, "paths.output_dir=/tmp/job"))
        assert fingerprint(config) == key
        assert fingerprint({**config, "model": {**config["model"], "samples": 5}}) != key
