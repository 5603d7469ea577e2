from tests.test_config import compose_config
from vae_sweep import names
from vae_sweep.jobs.identity import job_identity, run_name


def test_a_run_is_named_by_the_overrides_that_change_its_result():
    assert run_name([]) == "defaults"
    assert run_name(["model.latent=100", "training.threads=1", "training.epochs=100"]) == "latent=100 epochs=100"
    assert run_name(["hydra/launcher=joblib", "search=latent", "+model.hidden=[16]"]) == "hidden=[16]"


def test_a_presets_run_is_named_after_it_first():
    name, tags = job_identity(compose_config("experiment=burda_vae", "training.threads=1", "model.latent=20"))
    assert name == "burda_vae latent=20" and tags[names.TAG_PRESET] == "burda_vae"
    name, tags = job_identity(compose_config("training.threads=1"))
    assert name == "defaults" and tags[names.TAG_PRESET] == ""
