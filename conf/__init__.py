"""Hydra config groups; a package so that an installed vae_sweep finds them as pkg://vae_sweep.conf."""
