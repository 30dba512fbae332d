"""The stack's PostgreSQL init script, run as the postgres image runs it, against a real server:
the metrics database and its two roles; Grafana's role reads what the exporter writes, and no more.
"""

import psycopg
import pytest

from churn_platform.core.export.postgres import (
    SCHEMA as METRICS_SCHEMA,  # made by the init script
)
from churn_platform_tests.stack import run_init_script


def test_the_exporter_owns_the_metrics_schema_and_creates_its_tables(metrics_database):
    with psycopg.connect(metrics_database.writer_dsn) as conn:
        conn.execute(
            f"CREATE TABLE {METRICS_SCHEMA}.kpi (source_run_id text, churn_rate double precision)"
        )
        conn.execute(f"INSERT INTO {METRICS_SCHEMA}.kpi VALUES ('run-1', 26.5)")
        owner = conn.execute(
            "SELECT nspowner::regrole::text FROM pg_namespace WHERE nspname = %s", [METRICS_SCHEMA]
        ).fetchone()[0]
    assert owner == metrics_database.writer


def test_grafanas_role_reads_tables_created_later_but_cannot_write(metrics_database):
    table = f"{METRICS_SCHEMA}.kpi"
    with psycopg.connect(metrics_database.writer_dsn) as conn:
        conn.execute(f"CREATE TABLE {table} (source_run_id text)")
        conn.execute(f"INSERT INTO {table} VALUES ('run-1')")

    with psycopg.connect(metrics_database.reader_dsn) as conn:
        assert conn.execute(f"SELECT source_run_id FROM {table}").fetchall() == [("run-1",)]
        assert conn.execute("SHOW default_transaction_read_only").fetchone()[0] == "on"
    for statement in (
        f"INSERT INTO {table} VALUES ('run-2')",
        f"DELETE FROM {table}",
        f"CREATE TABLE {METRICS_SCHEMA}.grafana_was_here (x int)",
        "CREATE TABLE public.grafana_was_here (x int)",
    ):
        with psycopg.connect(metrics_database.reader_dsn, autocommit=True) as conn:
            # Privileges refuse it even with the read-only default switched off.
            conn.execute("SET default_transaction_read_only = off")
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(statement)


def test_the_script_refuses_to_run_without_its_passwords(pg_server):
    result = run_init_script(
        pg_server,
        {
            "CHURN_METRICS_DB": "never_created",
            "CHURN_METRICS_USER": "never_created",
            "CHURN_METRICS_PASSWORD": "",
            "CHURN_GRAFANA_DB_USER": "never_created",
            "CHURN_GRAFANA_DB_PASSWORD": "x",
        },
    )
    assert result.returncode != 0
    assert "CHURN_METRICS_PASSWORD" in result.stderr
    with psycopg.connect(pg_server) as conn:
        assert (
            conn.execute(
                "SELECT count(*) FROM pg_roles WHERE rolname = 'never_created'"
            ).fetchone()[0]
            == 0
        )
