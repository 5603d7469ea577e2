"""MLflow tracking: the store and experiment (store), a job's run (runs), resume decisions (resume), provenance."""
