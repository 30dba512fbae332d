"""Shared fixtures: real CSV files, a real DuckDB file per test, real Dagster runs."""

import os
import subprocess
from datetime import datetime
from pathlib import Path

import dagster as dg
import duckdb
import pytest
from dagster._core.storage.db_io_manager import TableSlice

from churn_platform.core import publish, settings
from churn_platform.core.settings import PROJECT_ROOT, SAMPLE_CSV
from churn_platform.core.source import staging_table
from churn_platform.core.transform import analytics_sql, rejected_sql
from churn_platform.core.warehouse import SqlTable
from churn_platform.defs.elt.assets import ELT_ASSETS, published_tables
from churn_platform.defs.elt.checks import ELT_CHECKS
from churn_platform.defs.resources import build_resources
from churn_platform.defs.warehouse_io import (
    PUBLISHED,
    SqlTableTypeHandler,
    WarehouseIOManager,
    WarehouseResource,
)

pytest_plugins = [
    "churn_platform_tests.postgres",
    "churn_platform_tests.export_support",
    "churn_platform_tests.stack",
]

REAL_CSV_NAME = Path("data") / "customer_churn_data.csv"


def shared_folders() -> list[Path]:
    """Where the team's shared folder may be: CHURN_SHARED_DIR, beside this checkout, or beside
    the checkout it was cloned from (a fresh clone elsewhere, as CI makes)."""
    folders = [Path(os.environ["CHURN_SHARED_DIR"])] if os.environ.get("CHURN_SHARED_DIR") else []
    folders.append(PROJECT_ROOT.parent / "shared")
    origin = subprocess.run(["git", "-C", str(PROJECT_ROOT), "remote", "get-url", "origin"],
                            capture_output=True, text=True).stdout.strip()
    if origin and Path(origin).is_dir():
        folders.append(Path(origin).resolve().parent / "shared")
    return folders


@pytest.fixture
def sample_csv() -> Path:
    return SAMPLE_CSV


REAL_DATASET = (
    "the real churn dataset customer_churn_data.csv (1,000 customers; public: github.com/"
    "euusiade/Data_Exploration_Projects, file customer_churn_data.csv, commit ed104350b4fb)"
)


def skip_unless_ci(message: str) -> None:
    """What a test needs is missing: skip here, and fail under CI=true (where it must run)."""
    if os.environ.get("CI") == "true":
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture(scope="session")
def real_csv() -> Path:
    """The real dataset, not shipped (its licence is unknown): from the team's shared folder."""
    candidates = [folder / REAL_CSV_NAME for folder in shared_folders()]
    found = [path for path in candidates if path.exists()]
    if not found:
        skip_unless_ci(
            f"needs {REAL_DATASET}, not shipped with the project: put it at data/"
            f"customer_churn_data.csv under a folder named by CHURN_SHARED_DIR (looked in"
            f" {', '.join(map(str, candidates))})"
        )
    return found[0]


@pytest.fixture
def warehouse(tmp_path) -> Path:
    return tmp_path / "warehouse.duckdb"


@pytest.fixture
def instance():
    """A throwaway Dagster instance with storage (not DagsterInstance.ephemeral(): resolving a
    partitioned run request needs an instance_ref)."""
    with dg.instance_for_test() as instance:
        yield instance


LANDING_KEY = "landing-load-test-key-0123456789abcdef"


@pytest.fixture
def landing_folder(tmp_path, monkeypatch) -> Path:
    """A landing folder as CHURN_LANDING_DIR, with the key landing mode needs; a customer missing
    from one export counts as churned (CHURN_MISSING_EXPORTS_FOR_CHURN=1: short test histories)."""
    path = tmp_path / "landing"
    path.mkdir()
    monkeypatch.setenv(settings.LANDING_DIR_ENV, str(path))
    monkeypatch.setenv(settings.PSEUDONYMIZATION_KEY_ENV, LANDING_KEY)
    monkeypatch.setenv(settings.MISSING_EXPORTS_ENV, "1")
    return path


def run_elt(csv: Path | str, database: Path | str, selection=None, raise_on_error=True):
    """Materialize the ELT assets and their checks in-process, as the job would. A selection
    includes analytics/published, so that what it writes is published (or refused) at its end."""
    return dg.materialize(
        [*ELT_ASSETS, *ELT_CHECKS],
        resources=build_resources(str(database), str(csv)),
        selection=None if selection is None else [*selection, PUBLISHED],
        raise_on_error=raise_on_error,
    )


def write_table(database, key: dg.AssetKey, table: SqlTable, raise_on_error=True):
    """Write one SqlTable at `key` through the warehouse IO manager, in a real run; an ELT table
    with the publish step, as the IO manager requires."""

    @dg.asset(key=key)
    def one_table() -> SqlTable:
        return table

    elt = ".".join(key.path) in {name for name, _ in publish.ELT_TABLES}
    return dg.materialize(
        [one_table, *([published_tables] if elt else [])],
        resources={"io_manager": WarehouseIOManager(database=str(database)),
                   "warehouse": WarehouseResource(database=str(database))},
        raise_on_error=raise_on_error,
    )


def write_with_handler(conn, schema: str, table: str, obj: SqlTable) -> None:
    """Write one SqlTable on `conn` with the IO manager's own handler, without a Dagster run."""
    conn.execute(f"CREATE SCHEMA IF NOT EXISTS {schema}")
    SqlTableTypeHandler().handle_output(None, TableSlice(table=table, schema=schema), obj, conn)


def load_and_transform(conn, csv: Path, key: bytes | None = None) -> None:
    """What the three first assets write, through the handler the IO manager uses."""
    write_with_handler(conn, "staging", "customer_churn", staging_table(csv))
    staging = "SELECT * FROM staging.customer_churn"
    analytics = "SELECT * FROM analytics.customer_churn"
    sql, params = analytics_sql(staging, key, datetime(2026, 1, 1))
    write_with_handler(conn, "analytics", "customer_churn", SqlTable(sql, params))
    write_with_handler(conn, "analytics", "rejected_rows", SqlTable(rejected_sql(staging, analytics)))


def query(database: Path | str, sql: str, params=None) -> list[tuple]:
    with duckdb.connect(str(database), read_only=True) as conn:
        return conn.execute(sql, params or []).fetchall()


def write_csv(path: Path, text: str) -> Path:
    path.write_text(text, newline="")
    return path


HEADER = "CustomerID,Age,Gender,Tenure,MonthlyCharges,ContractType,InternetService,TotalCharges,TechSupport,Churn"


ELT_TABLES = ("staging.customer_churn", "analytics.customer_churn", "analytics.rejected_rows",
              "analytics.churn_by_segment", "analytics.data_quality_metrics")


def published_set(conn) -> dict[str, int]:
    """Row counts of the published ELT tables, after asserting they come from one run: one load
    of one file across the split, parity, and the latest snapshots counting these very tables."""
    [(loads, files, staging, analytics, rejected)] = conn.execute("""
        SELECT (SELECT count(DISTINCT load_timestamp) FROM (
                    SELECT load_timestamp FROM staging.customer_churn UNION ALL
                    SELECT load_timestamp FROM analytics.customer_churn UNION ALL
                    SELECT load_timestamp FROM analytics.rejected_rows)),
               (SELECT count(DISTINCT source_file) FROM staging.customer_churn),
               (SELECT count(*) FROM staging.customer_churn),
               (SELECT count(*) FROM analytics.customer_churn),
               (SELECT count(*) FROM analytics.rejected_rows)""").fetchall()
    assert (loads, files) == (1, 1), "the split mixes loads"
    assert staging == analytics + rejected, "parity"
    [latest] = conn.execute("""
        SELECT m.total_records, m.analytics_records, m.rejected_rows,
               (SELECT sum(customers) FROM analytics.churn_by_segment s
                WHERE s.snapshot_id = m.snapshot_id AND dimension = 'contract_type')
        FROM analytics.data_quality_metrics m ORDER BY snapshot_at DESC LIMIT 1""").fetchall()
    assert latest == (staging, analytics, rejected, analytics), "the latest snapshot"
    return {t: conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in ELT_TABLES}


def published_set_of(database: Path | str) -> dict[str, int]:
    """`published_set` as a reader opening the file read-only sees it."""
    with duckdb.connect(str(database), read_only=True) as conn:
        return published_set(conn)


# Modules whose every test runs the whole graph, a child process or a server: seconds each.
SLOW_MODULES = {
    "test_bench.py", "test_faults.py", "test_fuzz.py", "test_postgres_outage.py",
    "test_mapping_runs.py", "test_security.py", "test_metrics_export.py", "test_publish.py",
    "test_churn_model_runs.py", "test_publish_ui.py",
}


def pytest_collection_modifyitems(items):
    """Mark each test by what it needs, so a subset can be chosen with -m."""
    for item in items:
        module = item.path.name
        if "pg_server" in item.fixturenames:
            item.add_marker(pytest.mark.postgres)
        if module.startswith("test_stack_") or module == "test_compose.py":
            item.add_marker(pytest.mark.stack)
        # A PostgreSQL test is slow for the server the session starts; with a server given
        # (CHURN_TEST_PG_DSN, as a mutation run sets it) it is as fast as the rest.
        needs_server = item.get_closest_marker("postgres") \
            and not os.environ.get("CHURN_TEST_PG_DSN")
        if needs_server or item.get_closest_marker("stack") or module in SLOW_MODULES:
            item.add_marker(pytest.mark.slow)
