"""Write-audit-publish: a run's tables appear together, and only after their blocking checks.

A run writes each table as a candidate beside the published one, in the same schema
(`staging._candidate_<run>_customer_churn`), reads and checks the candidates, and publishes them
in one transaction: the published table is dropped and the candidate renamed in its place
(DuckDB cannot move a table between schemas, and a rename moves no data). A history table's
candidate holds only the run's snapshot, merged into the history in that same transaction.
Readers of the published names see the last published set until COMMIT, then the whole new one.
A dead or held-back run's candidates stay until the next publishing run drops them.
"""

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import duckdb

from churn_platform.core.errors import PlatformError
from churn_platform.core.tables import (
    ANALYTICS_TABLE,
    METRICS_TABLE,
    REJECTED_TABLE,
    SEGMENT_TABLE,
    STAGING_TABLE,
)
from churn_platform.core.warehouse import (
    SqlTable,
    merge_history,
    quote_ident,
    table_exists,
    transaction,
)

CANDIDATE_PREFIX = "_candidate_"
# The tables published together, in order, with the key a history merges its snapshots on.
ELT_TABLES = (
    (STAGING_TABLE, None),
    (ANALYTICS_TABLE, None),
    (REJECTED_TABLE, None),
    (SEGMENT_TABLE, "snapshot_id"),
    (METRICS_TABLE, "snapshot_id"),
)


def run_tag(run_key: str) -> str:
    """The part of a candidate's name that says which run wrote it."""
    return run_key.replace("-", "")[:12]


def candidate_name(table: str, run_key: str) -> str:
    return f"{CANDIDATE_PREFIX}{run_tag(run_key)}_{table}"


def _qualified(schema: str, table: str) -> str:
    return f"{quote_ident(schema)}.{quote_ident(table)}"


def _split(qualified: str) -> tuple[str, str]:
    schema, table = qualified.split(".")
    return schema, table


def candidates(conn: duckdb.DuckDBPyConnection) -> list[tuple[str, str]]:
    """Every candidate table in the warehouse, as (schema, table)."""
    return conn.execute(
        "SELECT schema_name, table_name FROM duckdb_tables()"
        " WHERE starts_with(table_name, ?) ORDER BY ALL",
        [CANDIDATE_PREFIX],
    ).fetchall()


def drop_leftovers(conn: duckdb.DuckDBPyConnection, run_key: str) -> list[str]:
    """Drop the candidates other runs left (killed, failed or held back); keep this run's, which
    a retry or a re-execution of this run reads."""
    mine = f"{CANDIDATE_PREFIX}{run_tag(run_key)}_"
    dropped = []
    for schema, table in candidates(conn):
        if not table.startswith(mine):
            conn.execute(f"DROP TABLE IF EXISTS {_qualified(schema, table)}")
            dropped.append(f"{schema}.{table}")
    return dropped


def reading(conn: duckdb.DuckDBPyConnection, qualified: str, run_key: str | None) -> str:
    """The table a run reads for `schema.table`: its own candidate if it wrote one, else the
    published table (a run that refreshes only part of the graph reads the rest published)."""
    schema, table = _split(qualified)
    if run_key and table_exists(conn, f"{schema}.{candidate_name(table, run_key)}"):
        return _qualified(schema, candidate_name(table, run_key))
    return _qualified(schema, table)


def history_reading(conn: duckdb.DuckDBPyConnection, qualified: str, key: str,
                    run_key: str | None) -> str:
    """A history as it will read once this run publishes: the published snapshots, this run's
    candidate snapshot in place of its own earlier one."""
    table = reading(conn, qualified, run_key)
    published = _qualified(*_split(qualified))
    if table == published:
        return f"SELECT * FROM {published}"
    if not table_exists(conn, qualified):
        return f"SELECT * FROM {table}"
    k = quote_ident(key)
    return (f"SELECT * FROM {published} WHERE {k} NOT IN (SELECT {k} FROM {table})"
            f" UNION ALL BY NAME SELECT * FROM {table}")


class Tables(dict):
    """Published name → the name to read; a name not in it reads as itself."""

    def __missing__(self, key: str) -> str:
        return key


@dataclass(frozen=True)
class Published:
    """A table as published: its row count and columns."""

    table: str
    row_count: int
    columns: list[tuple[str, str]]


def publish(conn: duckdb.DuckDBPyConnection, tables: Sequence[tuple[str, str | None]],
            run_key: str, verify: Callable[[duckdb.DuckDBPyConnection, list[str]], None]
            ) -> list[Published]:
    """Publish this run's candidates of `tables` ((schema.table, history key or None)) in one
    transaction; `verify(conn, published)` sees the set as it will be and may raise to keep the
    previous one. Tables without a candidate of this run stay as they are."""
    with transaction(conn):
        done = []
        for qualified, history_key in tables:
            schema, table = _split(qualified)
            candidate = candidate_name(table, run_key)
            if not table_exists(conn, f"{schema}.{candidate}"):
                continue
            if history_key:
                merge_history(conn, _qualified(schema, table), SqlTable(
                    f"SELECT * FROM {_qualified(schema, candidate)}", history_key=history_key))
                conn.execute(f"DROP TABLE {_qualified(schema, candidate)}")
            else:
                conn.execute(f"DROP TABLE IF EXISTS {_qualified(schema, table)}")
                conn.execute(
                    f"ALTER TABLE {_qualified(schema, candidate)} RENAME TO {quote_ident(table)}"
                )
            done.append(qualified)
        verify(conn, done)
        published = [_described(conn, qualified) for qualified in done]
    return published


def _described(conn: duckdb.DuckDBPyConnection, qualified: str) -> Published:
    schema, table = _split(qualified)
    rows = conn.execute(f"SELECT count(*) FROM {_qualified(schema, table)}").fetchone()[0]
    columns = conn.execute(
        "SELECT column_name, data_type FROM information_schema.columns"
        " WHERE table_schema = ? AND table_name = ? ORDER BY ordinal_position",
        [schema, table],
    ).fetchall()
    return Published(qualified, rows, columns)


@dataclass(frozen=True)
class Parity:
    """Staging rows against analytics and rejected rows, and a few staging rows in neither."""

    staging: int
    analytics: int
    rejected: int
    unaccounted: list[int]

    @property
    def holds(self) -> bool:
        return self.staging == self.analytics + self.rejected and not self.unaccounted


def split_parity(conn: duckdb.DuckDBPyConnection, staging: str, analytics: str, rejected: str,
                 sample: int, counts_only: bool = False) -> Parity:
    """Every staging row in analytics or rejected rows, exactly once; `counts_only` compares
    the counts alone (what publishing a set whose rows were already checked costs)."""
    n_staging, n_analytics, n_rejected = conn.execute(
        f"SELECT (SELECT count(*) FROM {staging}), (SELECT count(*) FROM {analytics}),"
        f" (SELECT count(*) FROM {rejected})"
    ).fetchone()
    unaccounted = [] if counts_only else [r[0] for r in conn.execute(
        f"SELECT source_row FROM {staging} ANTI JOIN"
        f" (SELECT source_row FROM {analytics} UNION ALL"
        f"  SELECT source_row FROM {rejected}) USING (source_row)"
        f" ORDER BY source_row LIMIT {int(sample)}"
    ).fetchall()]
    return Parity(n_staging, n_analytics, n_rejected, unaccounted)


def verify_split(conn: duckdb.DuckDBPyConnection, published: list[str]) -> None:
    """The set about to be published keeps staging = analytics + rejected rows. A run that wrote
    all three had them checked on the candidates (the blocking row_count_parity): their counts
    are compared again; a run that wrote only some of them is checked row by row here."""
    split = [name for name, _ in ELT_TABLES[:3]]
    there = [name for name in split if table_exists(conn, name)]
    if not set(split) & set(published) or there == split[:1]:
        return  # the split untouched, or staging loaded alone into a warehouse without the rest
    if there != split:
        raise PlatformError(
            f"publishing {', '.join(published)} would leave"
            f" {', '.join(sorted(set(split) - set(there)))} missing beside the rest of the split."
            " Materialize staging, analytics and rejected rows together, or run churn_elt_job."
            " Nothing was published."
        )
    parity = split_parity(conn, *split, sample=5, counts_only=set(split) <= set(published))
    if not parity.holds:
        raise PlatformError(
            f"publishing {', '.join(published)} would break row_count_parity: staging"
            f" {parity.staging} rows, analytics {parity.analytics}, rejected {parity.rejected},"
            f" unaccounted source_rows {parity.unaccounted or 'none'}. Materialize staging,"
            " analytics and rejected rows together, or run churn_elt_job. Nothing was"
            " published; the previous tables stay."
        )
