"""The test PostgreSQL server is real: it answers, and each test gets its own database."""

import psycopg


def test_pg_dsn_is_a_fresh_database_on_a_real_server(pg_dsn):
    with psycopg.connect(pg_dsn) as conn:
        version = conn.execute("SHOW server_version").fetchone()[0]
        tables = conn.execute(
            "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'public'"
        ).fetchone()[0]
    assert version.split(".")[0].isdigit()
    assert tables == 0
