"""Loading one export of the landing folder: its raw rows by partition, then customer history.

Two transactions, each whole or nothing and each safe to run again, so a run killed anywhere
resumes on the next run of the partition without duplicating or losing a period:
1. the export's rows, as text exactly as staging reads them, replace its partition of
   `landing.export_rows` (DELETE its export_id, INSERT) — never another export's rows;
2. history applies the export (core/history.py), which does nothing when `history_exports`
   already has it; the typed rows come from that partition through the ELT's own transform.
Killed between the two, the rows are there without history: the next run loads them again (the
same bytes) and applies them once. The retention and monthly churn tables are then recomputed.
"""

from dataclasses import dataclass
from datetime import datetime, timezone

import duckdb

from churn_platform.core import history, tables
from churn_platform.core.errors import InputError
from churn_platform.core.landing import Export, require_stable_pseudonyms
from churn_platform.core.mapping import SourceMapping
from churn_platform.core.source import SourceFileError, staging_table
from churn_platform.core.tables import EXPORT_ROWS_TABLE
from churn_platform.core.transform import analytics_sql
from churn_platform.core.warehouse import (
    SqlTable,
    clean_duckdb_error,
    quote_ident,
    quote_literal,
    transaction,
    write_table,
)

# Columns the load adds beside staging's; a source column may not take their names.
EXPORT_COLUMNS = ("export_id", "export_date")
_CREATE_ROWS = f"""CREATE TABLE IF NOT EXISTS {EXPORT_ROWS_TABLE} (
    export_id VARCHAR, export_date DATE, load_timestamp TIMESTAMP, source_file VARCHAR,
    source_row BIGINT, source_mapping_sha256 VARCHAR)"""


@dataclass(frozen=True)
class Loaded:
    """What one load did: rows in the export's partition, and what history did with it."""

    rows: int
    history: str  # "appended" | "rebuilt" | "unchanged"
    customers: int
    repeated_rows: int


def load_rows(connection: duckdb.DuckDBPyConnection, export: Export, mapping_path: str) -> int:
    """Replace the export's partition of `landing.export_rows` with its file's rows, atomically.

    Columns are the union over exports (a column first seen later is added; older exports hold
    NULL there, an empty cell stays ''). The header is checked before anything is written.
    """
    staged = staging_table(export.path, mapping_path)
    if staged.metadata["source_sha256"] != export.sha256:
        raise SourceFileError(export.path, f"changed since it was registered as export"
                                           f" {export.partition_key}; it is registered again as a"
                                           " new export on the next scan")
    connection.execute("CREATE SCHEMA IF NOT EXISTS landing")
    connection.execute(_CREATE_ROWS)
    with transaction(connection, f"loading export {export.partition_key} ({export.path})",
                     InputError):
        connection.execute("SET SESSION preserve_insertion_order = true")
        try:
            connection.execute(staged.prepare[0], dict(staged.prepare[1]))
        except duckdb.Error as error:  # the CSV itself: unterminated quotes, ragged rows
            raise SourceFileError(export.path, f"cannot be read as CSV:"
                                               f" {clean_duckdb_error(error)}") from None
        # The file's order is in source_row now; an ordered insert is written again at
        # checkpoint (1M rows: about 2.5 CPU s per export).
        connection.execute("SET SESSION preserve_insertion_order = false")
        header = [row[0] for row in connection.execute("DESCRIBE _prepared").fetchall()]
        taken = [c for c in header if c.lower() in EXPORT_COLUMNS]
        if taken:
            raise SourceFileError(export.path, "columns named like those the landing load adds:"
                                               f" {', '.join(taken)}")
        existing = {row[0].lower() for row in
                    connection.execute(f"DESCRIBE {EXPORT_ROWS_TABLE}").fetchall()}
        for column in header:
            if column.lower() not in existing:
                connection.execute(
                    f"ALTER TABLE {EXPORT_ROWS_TABLE} ADD COLUMN {quote_ident(column)} VARCHAR"
                )
        connection.execute(f"DELETE FROM {EXPORT_ROWS_TABLE} WHERE export_id = $export_id",
                           {"export_id": export.partition_key})
        connection.execute(
            f"""INSERT INTO {EXPORT_ROWS_TABLE} BY NAME
                SELECT *, $export_id AS export_id, $export_date AS export_date
                FROM ({staged.sql})""",
            {**staged.params, "export_id": export.partition_key,
             "export_date": export.export_date},
        )
        rows = connection.execute(
            f"SELECT count(*) FROM {EXPORT_ROWS_TABLE} WHERE export_id = $export_id",
            {"export_id": export.partition_key},
        ).fetchone()[0]
        staged.verify(rows)
        connection.execute("DROP TABLE _prepared")
    return rows


def typed_rows(connection: duckdb.DuckDBPyConnection, key: bytes, mapping: SourceMapping,
               ref: history.ExportRef) -> str:
    """The export's accepted rows, typed and pseudonymized by the ELT's transform (analytics_sql),
    in a temporary table: the key is bound as a parameter, never pasted into SQL."""
    partition = (f"SELECT * FROM {EXPORT_ROWS_TABLE}"
                 f" WHERE export_id = {quote_literal(ref.key)}")
    if connection.execute(f"SELECT count(*) FROM ({partition})").fetchone()[0] == 0:
        raise InputError(f"export {ref.key} is in history but its rows are not in"
                         f" {EXPORT_ROWS_TABLE}: materialize its partition again")
    sql, params = analytics_sql(partition, key, datetime.now(timezone.utc).replace(tzinfo=None),
                                mapping.fields)
    columns = ", ".join(history.ROW_COLUMNS)
    connection.execute(f"CREATE OR REPLACE TEMP TABLE _history_rows AS SELECT {columns}"
                       f" FROM ({sql})", params)
    return "SELECT * FROM _history_rows"


def load_export(connection: duckdb.DuckDBPyConnection, export: Export, mapping: SourceMapping,
                key: bytes | None, missing_for_churn: int) -> Loaded:
    """Load one export end to end: its raw partition, history, then the cohort tables."""
    if not key:
        require_stable_pseudonyms()  # raises, saying why and how to set a key
    rows = load_rows(connection, export, mapping.path)
    ref = history.ExportRef(export.partition_key, export.export_date, export.arrived_at)
    outcome = history.apply_export(connection, ref, lambda r: typed_rows(connection, key,
                                                                          mapping, r),
                                   missing_for_churn)
    connection.execute("DROP TABLE IF EXISTS _history_rows")
    write_table(connection, "analytics", "retention_by_cohort",
                SqlTable(history.retention_by_cohort_sql()))
    write_table(connection, "analytics", "monthly_churn", SqlTable(history.monthly_churn_sql()))
    customers, repeated = connection.execute(
        f"SELECT customers, repeated_rows FROM {tables.EXPORTS_TABLE} WHERE export_key = ?",
        [export.partition_key],
    ).fetchone()
    return Loaded(rows, outcome, customers or 0, repeated or 0)
