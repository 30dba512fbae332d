"""PostgreSQL side of the export: connect without leaking the password, create tables, copy rows.

Rows go in with COPY (one round trip per table), never row by row; names are composed with
psycopg.sql, values are always bound.
"""

from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from importlib import resources

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict

from churn_platform.core.errors import InputError, TransientError

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


def parse_dsn(dsn: str) -> dict:
    """The DSN's parameters. libpq's parse error quotes the text around the fault, which may be
    the password, so it is replaced by advice; and it is bad input, never retried."""
    try:
        return conninfo_to_dict(dsn)
    except psycopg.ProgrammingError:
        pass
    raise InputError(
        "CHURN_METRICS_DSN is not a valid libpq connection string (its text is not shown: it"
        " holds the password). Quote a value with spaces or quotes as password='a b' (\\' and"
        " \\\\ inside), or use a postgresql:// URI with percent-encoded parts."
    )


def open_metrics_database(dsn: str) -> psycopg.Connection:
    """Open the metrics database; an unreachable server is a retryable, clearly worded failure."""
    params = parse_dsn(dsn)
    try:
        return psycopg.connect(dsn, connect_timeout=int(params.get("connect_timeout") or 10))
    except psycopg.OperationalError as error:
        message = str(error).strip()
        if password := params.get("password"):
            message = message.replace(str(password), "***")
    raise TransientError(f"metrics database ({describe_dsn(dsn)}) unavailable: {message}")


def ensure_schema(conn: psycopg.Connection) -> None:
    conn.execute(_sql_file("schema.sql"))


# Grafana's reader may hold none of these: a role that does is not the read-only one to manage.
_POWERS = {"rolsuper": "SUPERUSER", "rolcreaterole": "CREATEROLE", "rolcreatedb": "CREATEDB",
           "rolreplication": "REPLICATION", "rolbypassrls": "BYPASSRLS"}
_READER_NEEDS = ("CREATEROLE, and to own the database (to grant CONNECT on it): as a superuser,"
                 " CREATE ROLE <exporter> LOGIN CREATEROLE PASSWORD '...';"
                 " CREATE DATABASE <metrics> OWNER <exporter>")


@contextmanager
def privileges(what: str, needs: str) -> Iterator[None]:
    """A refusal for want of a privilege fails once, naming what is missing; never the statement
    (PostgreSQL's CONTEXT line quotes it) and never retried: waiting grants nothing."""
    try:
        yield
        return
    except psycopg.errors.InsufficientPrivilege as error:
        reason = error.diag.message_primary or "permission denied"
    raise InputError(f"metrics database: the exporter may not {what} ({reason}); it needs {needs}")


def grant_reader(conn: psycopg.Connection, role: str, password: str) -> None:
    """Create or update Grafana's read-only role: login, this password, SELECT on the schema.

    The password never enters SQL text: the role gets a SCRAM-SHA-256 verifier computed here, as
    psql's \\password does, so a refused statement, PostgreSQL's log or an error can show at most
    that salted hash. The exporter needs CREATEROLE and to own the database.
    """
    verifier = conn.pgconn.encrypt_password(password.encode(), role.encode(), b"scram-sha-256")
    name = sql.Identifier(role)
    with privileges(f"manage Grafana's role {role}", _READER_NEEDS):
        found = conn.execute(
            sql.SQL("SELECT {} FROM pg_roles WHERE rolname = %s").format(
                sql.SQL(", ").join(map(sql.Identifier, _POWERS))), [role]).fetchone()
        # Rights inherited from other roles (pg_write_all_data, a group) count as its own.
        member_of = conn.execute(
            "SELECT b.rolname FROM pg_auth_members m JOIN pg_roles r ON r.oid = m.member"
            " JOIN pg_roles b ON b.oid = m.roleid WHERE r.rolname = %s ORDER BY 1", [role]
        ).fetchall()
        if found and (any(found) or member_of):
            powers = ", ".join([power for power, held in zip(_POWERS.values(), found) if held]
                               + [f"membership in {r}" for (r,) in member_of])
            raise InputError(
                f"metrics database: role {role} (CHURN_GRAFANA_DB_USER) exists with {powers}: it"
                " is not a read-only role; name another role, or drop that one"
            )
        # CREATE ROLE's defaults are NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION; naming
        # them in ALTER ROLE would need a superuser on PostgreSQL 15.
        verb = ("ALTER ROLE {} WITH LOGIN PASSWORD {}" if found
                else "CREATE ROLE {} LOGIN PASSWORD {}")
        conn.execute(sql.SQL(verb).format(name, sql.Literal(verifier.decode())))
        for statement in (
            "ALTER ROLE {role} SET default_transaction_read_only = on",
            "GRANT CONNECT ON DATABASE {db} TO {role}",
            "GRANT USAGE ON SCHEMA {schema} TO {role}",
            "GRANT SELECT ON ALL TABLES IN SCHEMA {schema} TO {role}",
            "ALTER DEFAULT PRIVILEGES IN SCHEMA {schema} GRANT SELECT ON TABLES TO {role}",
        ):
            conn.execute(sql.SQL(statement).format(
                role=name, schema=sql.Identifier(SCHEMA),
                db=sql.Identifier(conn.info.dbname)))


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
