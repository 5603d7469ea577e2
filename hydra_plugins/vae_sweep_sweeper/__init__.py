"""Hydra discovers plugins in the `hydra_plugins` namespace; this one is vae_sweep's sweeper."""
