"""pipelines: Ray sweeps, Parquet results, DuckDB analyses and the ``lee`` command line."""
