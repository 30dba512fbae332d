"""The stack's PostgreSQL init script, run as the postgres image runs it, against a real server:
the metrics database and its two roles; Grafana's role reads what the exporter writes, and no more.
"""

import shutil

import dagster as dg
import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from churn_platform.core.export.postgres import (
    SCHEMA as METRICS_SCHEMA,  # made by the init script
)
from churn_platform_tests.stack import STACK_INSTANCE, run_init_script


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


def test_dagsters_role_owns_its_database_and_holds_no_power(dagster_database, pg_server):
    with psycopg.connect(pg_server) as conn:
        powers = conn.execute(
            "SELECT rolsuper, rolcreaterole, rolcreatedb, rolreplication, rolbypassrls"
            " FROM pg_roles WHERE rolname = %s", [dagster_database.role]).fetchone()
        owner = conn.execute("SELECT datdba::regrole::text FROM pg_database WHERE datname = %s",
                             [dagster_database.name]).fetchone()[0]
    assert powers == (False, False, False, False, False)
    assert owner == dagster_database.role


def test_the_stack_instance_runs_as_dagsters_role(dagster_database, tmp_path, monkeypatch):
    """deploy/dagster.yaml, connected as the role the init script made: it creates its storage
    and records a run; the superuser is not needed."""
    pg = conninfo_to_dict(dagster_database.dsn)
    shutil.copy(STACK_INSTANCE, tmp_path / "dagster.yaml")
    for name, value in {"HOST": pg["host"], "PORT": pg["port"], "USER": dagster_database.role,
                        "PASSWORD": "unused-with-trust-auth", "DB": dagster_database.name}.items():
        monkeypatch.setenv(f"DAGSTER_PG_{name}", str(value))
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path))

    @dg.asset
    def probe() -> int:
        return 1

    with dg.DagsterInstance.get() as instance:
        result = dg.materialize([probe], instance=instance)
    assert result.success
    with psycopg.connect(dagster_database.dsn) as conn:
        assert conn.execute("SELECT status FROM runs").fetchall() == [("SUCCESS",)]
        assert conn.execute("SELECT current_user").fetchone()[0] == dagster_database.role


def test_dagsters_role_cannot_reach_the_metrics_database(dagster_database, metrics_database):
    with pytest.raises(psycopg.OperationalError, match="permission denied"):
        psycopg.connect(make_conninfo(metrics_database.admin_dsn, user=dagster_database.role))
    with pytest.raises(psycopg.OperationalError, match="permission denied"):
        psycopg.connect(make_conninfo(dagster_database.dsn, user=metrics_database.reader))
