"""Searches: a space in Hydra's sweep grammar as Optuna distributions, and the study its workers share."""
