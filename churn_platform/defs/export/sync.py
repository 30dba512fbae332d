"""One export: every snapshot PostgreSQL lacks, plus the instance's state, in one transaction.

Idempotent and lossless: history rows are keyed on the run that wrote them, so exporting twice
adds nothing, and an export after a failed one brings over everything the failure left behind.
A failure anywhere rolls the whole export back.
"""

import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

import dagster as dg
from dagster import DagsterInstance
from psycopg import sql

from churn_platform.core.export import postgres as pg
from churn_platform.core.export.snapshots import (
    HISTORY_TABLES,
    WHOLE_TABLES,
    missing_rows,
    whole_rows,
)
from churn_platform.defs.export import instance_state as dagster_state
from churn_platform.defs.warehouse_io import WarehouseResource


@dataclass(frozen=True)
class ExportSummary:
    snapshots_added: int
    rows_added: dict[str, int]
    check_results: int
    assets: int
    runs_synced: int
    warehouse_file_bytes: int | None
    rows_expired: int = 0
    # Landing mode's cohort tables, replaced whole: rows written per table (absent: untouched).
    tables_replaced: dict[str, int] = field(default_factory=dict)


def warehouse_file_bytes(database: str) -> int | None:
    """The DuckDB file plus its write-ahead log, as on disk; None before the first run."""
    sizes = [os.path.getsize(p) for p in (database, database + ".wal") if os.path.exists(p)]
    return sum(sizes) if sizes else None


def _replace(conn, name: str, columns: tuple[str, ...], rows: list[tuple]) -> int:
    conn.execute(sql.SQL("DELETE FROM {}").format(pg.table(name)))
    return pg.copy_rows(conn, name, columns, rows)


def export_metrics(
    instance: DagsterInstance,
    dsn: str,
    warehouse: WarehouseResource,
    check_keys: Iterable[dg.AssetCheckKey],
    asset_keys: Iterable[dg.AssetKey],
    export_run_id: str,
    reader: tuple[str, str] | None = None,
    retention: timedelta = timedelta(days=400),
) -> ExportSummary:
    rows_added = {}
    cutoff = datetime.now(timezone.utc) - retention
    with pg.open_metrics_database(dsn) as conn, conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", [pg.EXPORT_LOCK_ID])
        with pg.privileges(f"create the {pg.SCHEMA} schema and its tables",
                           "CREATE on the database: own it (CREATE DATABASE <metrics> OWNER"
                           " <exporter>) or own the schema"):
            pg.ensure_schema(conn)
        expired = _expire(conn, cutoff)
        known = {
            spec.name: {r[0] for r in conn.execute(
                sql.SQL("SELECT DISTINCT source_run_id FROM {}").format(pg.table(spec.name))
            )}
            for spec in HISTORY_TABLES
        }
        new_rows = {spec.name: [] for spec in HISTORY_TABLES}
        whole = {}
        if os.path.exists(warehouse.database):
            # Brief and read-only: the rows PostgreSQL lacks, then the warehouse is let go.
            with warehouse.get_connection(read_only=True) as duck:
                since = cutoff.replace(tzinfo=None)
                new_rows = {s.name: missing_rows(duck, s, known[s.name], since)
                            for s in HISTORY_TABLES}
                whole = {s.name: whole_rows(duck, s) for s in WHOLE_TABLES}
        for spec in HISTORY_TABLES:
            rows_added[spec.name] = pg.replace_snapshots(conn, spec.name, spec.columns,
                                                          new_rows[spec.name])

        replaced = {
            spec.name: _replace(conn, spec.name, spec.columns, whole[spec.name])
            for spec in WHOLE_TABLES if whole.get(spec.name) is not None
        }
        checks = _replace(conn, "asset_check_results", dagster_state.CHECK_COLUMNS,
                          dagster_state.check_rows(instance, check_keys))
        assets = _replace(conn, "asset_freshness", dagster_state.FRESHNESS_COLUMNS,
                          dagster_state.freshness_rows(instance, asset_keys))
        watermark = conn.execute(
            sql.SQL("SELECT max(updated_at) FROM {}").format(pg.table("pipeline_runs"))
        ).fetchone()[0]
        runs = pg.upsert_rows(conn, "pipeline_runs", dagster_state.RUN_COLUMNS, "source_run_id",
                              dagster_state.run_rows(instance, watermark))

        size = warehouse_file_bytes(warehouse.database)
        snapshots = rows_added["kpi_snapshots"]
        pg.upsert_rows(conn, "exports",
                       ("source_run_id", "snapshots_added", "runs_synced", "warehouse_file_bytes"),
                       "source_run_id", [(export_run_id, snapshots, runs, size)])
        if reader:
            pg.grant_reader(conn, *reader)
    return ExportSummary(snapshots, rows_added, checks, assets, runs, size, expired,
                         tables_replaced=replaced)


def _expire(conn, cutoff: datetime) -> int:
    """Drop history older than the retention: snapshots by their time, runs by their start."""
    removed = 0
    for spec in HISTORY_TABLES:
        removed += conn.execute(
            sql.SQL("DELETE FROM {} WHERE snapshot_at < %s").format(pg.table(spec.name)), [cutoff]
        ).rowcount
    conn.execute(
        sql.SQL("DELETE FROM {} WHERE started_at < %s").format(pg.table("pipeline_runs")), [cutoff]
    )
    return removed
