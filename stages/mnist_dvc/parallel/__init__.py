"""Where a stage's parallel work runs: threads of its own process, or the workers of a Dask cluster."""
