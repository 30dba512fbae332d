"""The metrics export: DuckDB's snapshot history and the Dagster instance's state, to PostgreSQL.
"""
