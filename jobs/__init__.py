"""Stage steps: each `run(unit, cfg)` is a plain function over paths and config that does not
know whether Dask, SLURM or a test called it. A rerun skips units whose done-marker exists."""
