"""vae-sweep: sweep variational autoencoders over a grid, track every run in MLflow, compare them."""

__version__ = "0.1.0"


def load_model(source, tracking_uri=None):
    """A trained VAE and its resolved config, from a checkpoint file, an MLflow run id or "models:/NAME@best"."""
    from vae_sweep.jobs.checkpoint import load_model as load

    return load(source, tracking_uri)
