"""vae-sweep: sweep variational autoencoders over a grid, track every run in MLflow, compare them."""

__version__ = "0.1.0"
