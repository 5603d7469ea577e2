"""vae-sweep: sweep variational autoencoders over a grid, track every run in MLflow, compare them."""

__version__ = "0.1.0"


def load_model(run_id_or_path, tracking_uri=None):
    """A trained VAE and its resolved config, from an MLflow run id or a checkpoint file."""
    from vae_sweep.jobs.checkpoint import load_model as load

    return load(run_id_or_path, tracking_uri)
