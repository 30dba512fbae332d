"""Shared fixtures: real CSV files, a real DuckDB file per test, real Dagster runs."""

import os
import subprocess
from datetime import datetime
from pathlib import Path

import dagster as dg
import duckdb
import pytest
from dagster._core.storage.db_io_manager import TableSlice

from churn_platform.core.settings import PROJECT_ROOT, SAMPLE_CSV
from churn_platform.core.source import staging_table
from churn_platform.core.transform import analytics_sql, rejected_sql
from churn_platform.core.warehouse import SqlTable
from churn_platform.defs.elt.assets import ELT_ASSETS
from churn_platform.defs.elt.checks import ELT_CHECKS
from churn_platform.defs.resources import build_resources
from churn_platform.defs.warehouse_io import SqlTableTypeHandler, WarehouseIOManager

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


@pytest.fixture(scope="session")
def real_csv() -> Path:
    candidates = [folder / REAL_CSV_NAME for folder in shared_folders()]
    found = [path for path in candidates if path.exists()]
    assert found, f"the shared dataset is expected at one of {', '.join(map(str, candidates))}"
    return found[0]


@pytest.fixture
def warehouse(tmp_path) -> Path:
    return tmp_path / "warehouse.duckdb"


def run_elt(csv: Path | str, database: Path | str, selection=None, raise_on_error=True):
    """Materialize the ELT assets and their checks in-process, as the job would."""
    return dg.materialize(
        [*ELT_ASSETS, *ELT_CHECKS],
        resources=build_resources(str(database), str(csv)),
        selection=selection,
        raise_on_error=raise_on_error,
    )


def write_table(database, key: dg.AssetKey, table: SqlTable, raise_on_error=True):
    """Write one SqlTable at `key` through the warehouse IO manager, in a real run."""

    @dg.asset(key=key)
    def one_table() -> SqlTable:
        return table

    return dg.materialize(
        [one_table], resources={"io_manager": WarehouseIOManager(database=str(database))},
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


# Modules whose every test runs the whole graph, a child process or a server: seconds each.
SLOW_MODULES = {
    "test_bench.py", "test_faults.py", "test_fuzz.py", "test_postgres_outage.py",
    "test_mapping_runs.py", "test_security.py", "test_metrics_export.py",
    "test_churn_model_runs.py",
}


def pytest_collection_modifyitems(items):
    """Mark each test by what it needs, so a subset can be chosen with -m."""
    for item in items:
        module = item.path.name
        if "pg_server" in item.fixturenames:
            item.add_marker(pytest.mark.postgres)
        if module.startswith("test_stack_") or module == "test_compose.py":
            item.add_marker(pytest.mark.stack)
        if item.get_closest_marker("postgres") or item.get_closest_marker("stack") \
                or module in SLOW_MODULES:
            item.add_marker(pytest.mark.slow)
