"""The platform's logic, without Dagster: SQL builders and helpers that know DuckDB, PostgreSQL
and files. Each module can be read, run and tested on its own; `churn_platform.defs` wraps them
in assets, checks, jobs and sensors."""
