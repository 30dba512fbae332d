"""PostgreSQL side of the export: connect without leaking the password, create tables, copy rows.

Rows go in with COPY (one round trip per table), never row by row; names are composed with
psycopg.sql, values are always bound.
"""

from collections.abc import Iterable, Sequence
from importlib import resources

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict

from churn_platform.core.errors import TransientError

SCHEMA = "churn_metrics"
# Serializes exports that overlap despite the run queue (a manual run against another instance).
EXPORT_LOCK_ID = 7_311_042


def _sql_file(name: str) -> str:
    return resources.files("churn_platform.core.export").joinpath(name).read_text()


def describe_dsn(dsn: str) -> str:
    """Where the DSN points, for logs and errors: host, port, database, user; never the password."""
    try:
        params = conninfo_to_dict(dsn)
    except psycopg.ProgrammingError:
        return "<unparsable connection string>"
    return " ".join(f"{k}={params[k]}" for k in ("host", "port", "dbname", "user") if params.get(k))


def connect(dsn: str) -> psycopg.Connection:
    """Open the metrics database; an unreachable server is a retryable, clearly worded failure."""
    params = conninfo_to_dict(dsn)
    try:
        return psycopg.connect(dsn, connect_timeout=int(params.get("connect_timeout") or 10))
    except psycopg.OperationalError as error:
        message = str(error).strip()
        if password := params.get("password"):
            message = message.replace(str(password), "***")
        raise TransientError(
            f"metrics database ({describe_dsn(dsn)}) unavailable: {message}"
        ) from None


def ensure_schema(conn: psycopg.Connection) -> None:
    conn.execute(_sql_file("schema.sql"))


def grant_reader(conn: psycopg.Connection, role: str, password: str) -> None:
    """Create or update Grafana's read-only role (reader_role.sql) with bound name and password."""
    conn.execute(
        "SELECT set_config('churn.reader_role', %s, true),"
        " set_config('churn.reader_password', %s, true)",
        [role, password],
    )
    conn.execute(_sql_file("reader_role.sql"))
    conn.execute("SELECT set_config('churn.reader_password', '', true)")


def table(name: str) -> sql.Composed:
    return sql.SQL("{}.{}").format(sql.Identifier(SCHEMA), sql.Identifier(name))


def copy_rows(conn: psycopg.Connection, name: str | sql.Composable, columns: Sequence[str],
              rows: Iterable[Sequence]) -> int:
    """COPY rows into churn_metrics.<name> (or the table given); returns how many."""
    target = table(name) if isinstance(name, str) else name
    statement = sql.SQL("COPY {} ({}) FROM STDIN").format(
        target, sql.SQL(", ").join(map(sql.Identifier, columns))
    )
    count = 0
    with conn.cursor().copy(statement) as copy:
        for row in rows:
            copy.write_row(row)
            count += 1
    return count


def replace_snapshots(conn: psycopg.Connection, name: str, columns: Sequence[str],
                      rows: Sequence[Sequence]) -> int:
    """Copy snapshot rows (snapshot_id first), after removing every row of their snapshots: a
    re-executed run replaced its snapshot in DuckDB, so it replaces it here, whole, too."""
    conn.execute(
        sql.SQL("DELETE FROM {} WHERE snapshot_id = ANY(%s)").format(table(name)),
        [sorted({row[0] for row in rows})],
    )
    return copy_rows(conn, name, columns, rows)


def upsert_rows(conn: psycopg.Connection, name: str, columns: Sequence[str], key: str,
                rows: Sequence[Sequence]) -> int:
    """COPY into a temporary table, then insert or update by key: bulk, and idempotent."""
    staging = f"_incoming_{name}"
    conn.execute(
        sql.SQL("CREATE TEMP TABLE {} (LIKE {} INCLUDING DEFAULTS) ON COMMIT DROP").format(
            sql.Identifier(staging), table(name)
        )
    )
    copy_rows(conn, sql.Identifier(staging), columns, rows)
    names = sql.SQL(", ").join(map(sql.Identifier, columns))
    conn.execute(
        sql.SQL("INSERT INTO {} ({}) SELECT {} FROM {} ON CONFLICT ({}) DO UPDATE SET {}").format(
            table(name), names, names, sql.Identifier(staging), sql.Identifier(key),
            sql.SQL(", ").join(
                sql.SQL("{} = EXCLUDED.{}").format(sql.Identifier(c), sql.Identifier(c))
                for c in [*columns, "exported_at"] if c != key
            ),
        )
    )
    return len(rows)
