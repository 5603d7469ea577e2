"""Performance benchmarks of vae_sweep: `python -m benchmarks` writes benchmarks/RESULTS.md and results.json."""
