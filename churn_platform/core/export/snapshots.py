"""Which snapshots PostgreSQL lacks, read from DuckDB's history in one brief read-only connection.

A snapshot is identified by the run that wrote it: a re-executed run replaces its snapshot in
DuckDB under the same snapshot_id with a new run id, so "lacking" means "this run id is not there".
"""

from dataclasses import dataclass
from datetime import datetime, timezone

import duckdb

from churn_platform.core.fields import FIELDS
from churn_platform.core.tables import (
    EVALUATIONS_TABLE,
    METRICS_TABLE,
    SCORE_SUMMARY_TABLE,
    SEGMENT_TABLE,
)
from churn_platform.core.warehouse import table_exists


@dataclass(frozen=True)
class HistoryTable:
    """A PostgreSQL history table and the DuckDB SELECT that feeds it (columns in table order)."""

    name: str
    columns: tuple[str, ...]
    source_sql: str
    source_table: str


_SNAPSHOT = "snapshot_id, run_id AS source_run_id, snapshot_at"
# A field the source lacks (source mapping) has NULL there: no cell of it is missing.
_MISSING_CELLS = " + ".join(f"coalesce(missing_{f.name}, 0)" for f in FIELDS)

HISTORY_TABLES = (
    HistoryTable(
        "kpi_snapshots",
        ("snapshot_id", "source_run_id", "snapshot_at", "total_records", "analytics_records",
         "rejected_rows", "churn_rate_percent", "avg_monthly_charges", "avg_tenure_months"),
        f"SELECT {_SNAPSHOT}, total_records, analytics_records, rejected_rows, churn_rate_percent,"
        f" avg_monthly_charges, avg_tenure_months FROM {METRICS_TABLE}",
        METRICS_TABLE,
    ),
    HistoryTable(
        "data_quality_snapshots",
        ("snapshot_id", "source_run_id", "snapshot_at", "source_file", "total_records",
         "analytics_records", "rejected_rows", "duplicate_customer_ids", "missing_cells"),
        f"SELECT {_SNAPSHOT}, source_file, total_records, analytics_records, rejected_rows,"
        f" duplicate_customer_ids, {_MISSING_CELLS} AS missing_cells"
        f" FROM {METRICS_TABLE}",
        METRICS_TABLE,
    ),
    HistoryTable(
        "missing_values",
        ("snapshot_id", "source_run_id", "snapshot_at", "column_name", "missing_count"),
        f"SELECT snapshot_id, source_run_id, snapshot_at, replace(column_name, 'missing_', '')"
        f" AS column_name, missing_count FROM (UNPIVOT (SELECT {_SNAPSHOT}, COLUMNS('^missing_')"
        f" FROM {METRICS_TABLE}) ON COLUMNS('^missing_')"
        f" INTO NAME column_name VALUE missing_count)",
        METRICS_TABLE,
    ),
    HistoryTable(
        "churn_by_segment",
        ("snapshot_id", "source_run_id", "snapshot_at", "dimension", "segment", "customers",
         "churned", "churn_rate_percent"),
        f"SELECT {_SNAPSHOT}, dimension, segment, customers, churned, churn_rate_percent"
        f" FROM {SEGMENT_TABLE}",
        SEGMENT_TABLE,
    ),
    HistoryTable(
        "churn_model_evaluations",
        ("snapshot_id", "source_run_id", "snapshot_at", "model_version", "n_train",
         "positive_rate", "roc_auc", "pr_auc", "brier", "promoted", "reason"),
        f"SELECT snapshot_id, run_id AS source_run_id, trained_at AS snapshot_at, model_version,"
        f" n_train, positive_rate, roc_auc, pr_auc, brier, promoted, reason"
        f" FROM {EVALUATIONS_TABLE}",
        EVALUATIONS_TABLE,
    ),
    HistoryTable(
        "churn_score_summary",
        ("snapshot_id", "source_run_id", "snapshot_at", "model_version", "dimension", "segment",
         "customers", "high_risk", "medium_risk", "avg_churn_probability"),
        f"SELECT {_SNAPSHOT}, model_version, dimension, segment, customers, high_risk,"
        f" medium_risk, avg_churn_probability FROM {SCORE_SUMMARY_TABLE}",
        SCORE_SUMMARY_TABLE,
    ),
)


def missing_rows(conn: duckdb.DuckDBPyConnection, spec: HistoryTable,
                 known_run_ids: set[str], since: datetime) -> list[tuple]:
    """The rows of every snapshot since `since` (naive UTC) whose run id PostgreSQL does not
    hold, oldest first; older ones are past the retention and stay out."""
    if not table_exists(conn, spec.source_table):
        return []
    rows = conn.execute(
        f"SELECT {', '.join(spec.columns)} FROM ({spec.source_sql})"
        " WHERE NOT list_contains($known::VARCHAR[], source_run_id) AND snapshot_at >= $since"
        " ORDER BY ALL",
        {"known": sorted(known_run_ids), "since": since},
    ).fetchall()
    at = spec.columns.index("snapshot_at")
    # DuckDB keeps UTC as naive timestamps; PostgreSQL gets them as explicit UTC.
    return [(*r[:at], r[at].replace(tzinfo=timezone.utc), *r[at + 1:]) for r in rows]


@dataclass(frozen=True)
class WholeTable:
    """A PostgreSQL table replaced whole on every export by a DuckDB table: an aggregate that
    a new export may change in every row (landing mode's cohort tables)."""

    name: str
    columns: tuple[str, ...]
    source_table: str


WHOLE_TABLES = (
    WholeTable("retention_by_cohort",
               ("cohort_month", "month", "measured_on", "months_since_start", "customers",
                "retained", "retention_percent"),
               "analytics.retention_by_cohort"),
    WholeTable("monthly_churn", ("month", "rule", "churn_events"), "analytics.monthly_churn"),
)


def whole_rows(conn: duckdb.DuckDBPyConnection, spec: WholeTable) -> list[tuple] | None:
    """The table's rows; None when DuckDB has no such table (single-file mode): PostgreSQL's
    copy is then left as it is."""
    if not table_exists(conn, spec.source_table):
        return None
    return conn.execute(
        f"SELECT {', '.join(spec.columns)} FROM {spec.source_table} ORDER BY ALL"
    ).fetchall()
