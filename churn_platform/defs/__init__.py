"""Dagster definitions, one folder per concern; `churn_platform.definitions` loads them all."""
