"""Landing mode's staging: the latest loaded export, copied from `landing.export_rows`.

The ELT (staging → analytics → checks → metrics) stays one table of one file's customers; in
landing mode that file is the latest export, by the documented order (export date, then arrival,
then file name). Only exports whose load finished count (their rows are in `landing.export_rows`
and history applied them: `analytics.history_exports`), so a failed or half-done load never
becomes the latest, and a late, older export never displaces a newer one. The rows are copied
from the warehouse, not read again from the file: a loaded export may have been moved away.
"""

from dataclasses import dataclass
from datetime import date

import duckdb

from churn_platform.core.errors import InputError
from churn_platform.core.landing_load import EXPORT_COLUMNS
from churn_platform.core.source import STAGING_COLUMNS
from churn_platform.core.tables import EXPORT_ROWS_TABLE, EXPORTS_TABLE
from churn_platform.core.warehouse import SqlTable, quote_ident, table_exists


@dataclass(frozen=True)
class LatestExport:
    key: str
    export_date: date
    source_file: str


_LATEST = f"""
    WITH files AS (
        SELECT export_id, any_value(source_file) AS source_file FROM {EXPORT_ROWS_TABLE}
        GROUP BY export_id)
    SELECT e.export_key, e.export_date, f.source_file
    FROM {EXPORTS_TABLE} e JOIN files f ON f.export_id = e.export_key
    ORDER BY e.export_date DESC, e.arrived_at DESC,
             regexp_extract(f.source_file, '[^/]*$') DESC, e.export_key DESC
    LIMIT 1
"""


def latest_export(connection: duckdb.DuckDBPyConnection) -> LatestExport | None:
    """The latest fully loaded export, or None when none is."""
    if not (table_exists(connection, EXPORT_ROWS_TABLE)
            and table_exists(connection, EXPORTS_TABLE)):
        return None
    row = connection.execute(_LATEST).fetchone()
    return None if row is None else LatestExport(*row)


def staging_from_export(connection: duckdb.DuckDBPyConnection, export: LatestExport) -> SqlTable:
    """Staging's SELECT for one export: its own columns (those its file had: a column another
    export added is NULL in every row of this one), as text, then staging's four columns."""
    fixed = {c.lower() for c in (*EXPORT_COLUMNS, *STAGING_COLUMNS)}
    columns = [row[0] for row in connection.execute(f"DESCRIBE {EXPORT_ROWS_TABLE}").fetchall()
               if row[0].lower() not in fixed]
    where = f"FROM {EXPORT_ROWS_TABLE} WHERE export_id = $export_id"
    counts = connection.execute(
        f"SELECT {', '.join(f'count({quote_ident(c)})' for c in columns)} {where}",
        {"export_id": export.key}).fetchone()
    own = [c for c, n in zip(columns, counts) if n > 0]
    selected = ", ".join(quote_ident(c) for c in [*own, *STAGING_COLUMNS])

    def verify(row_count: int) -> None:
        if row_count == 0:
            raise InputError(f"export {export.key} ({export.source_file}) has no rows in"
                             f" {EXPORT_ROWS_TABLE}: materialize its partition again")

    return SqlTable(
        f"SELECT {selected} {where}",
        {"export_id": export.key},
        verify=verify,
        error_context=f"staging export {export.key}",
        metadata={
            "export": export.key,
            "export_date": export.export_date.isoformat(),
            "source_file": export.source_file,
            "source_columns": len(own),
        },
    )
