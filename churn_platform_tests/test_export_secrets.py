"""No error path of the export carries a password: not the events, not the logs, not the error,
not PostgreSQL's server log. On a private PostgreSQL 15 that asks every role but the superuser
for its password over SCRAM and logs every statement, with the exporter set up exactly as
docs/metrics-export-and-grafana.md says."""

import re
import uuid
from pathlib import Path

import dagster as dg
import psycopg
import pytest

from churn_platform.core import settings
from churn_platform.core.settings import PROJECT_ROOT, SAMPLE_CSV
from churn_platform.defs.elt.assets import ELT_ASSETS
from churn_platform.defs.export.assets import postgres_metrics
from churn_platform.defs.resources import build_resources
from churn_platform_tests.postgres import PostgresCluster, pg_binaries

READER_PASSWORD = "Gr4fana-reader-pw-NEVER-SHOWN"
DOCS = PROJECT_ROOT / "docs" / "metrics-export-and-grafana.md"


def documented_setup() -> tuple[str, str]:
    """The docs' setup block, as written, and the exporter password it sets."""
    block = re.search(r"```sql\n(.*?)```", DOCS.read_text(), re.S).group(1)
    return block, re.search(r"PASSWORD '([^']+)'", block).group(1)


@pytest.fixture(scope="module")
def cluster():
    server = PostgresCluster(pg_binaries())
    # The superuser (the tests' admin) on trust; every other role must give its password.
    (server.data / "pg_hba.conf").write_text(
        "local all postgres trust\n"
        "host all postgres 127.0.0.1/32 trust\n"
        "host all all 127.0.0.1/32 scram-sha-256\n"
    )
    server.start("log_statement=all", "log_min_error_statement=debug5")
    try:
        yield server
    finally:
        server.remove()


def admin(cluster, sql: str) -> None:
    with psycopg.connect(cluster.dsn, autocommit=True) as conn:
        conn.execute(sql)


def dsn(cluster, database: str, user: str, password: str) -> str:
    return f"host=127.0.0.1 port={cluster.port} dbname={database} user={user} password={password}"


def log_size(cluster) -> int:
    return cluster.log_file.stat().st_size


def leaks(secret: str, instance: dg.DagsterInstance, capfd, cluster, log_from: int,
          error=None) -> list[str]:
    """Where the secret shows: the runs' events, Dagster's files (event log, compute logs), the
    captured output, the error, PostgreSQL's server log since `log_from` (the test's own setup
    wrote passwords there before). Each word of six characters or more counts too."""
    texts = {
        "events": "\n".join(repr(e) for run in instance.get_runs()
                            for e in instance.all_logs(run.run_id)),
        "instance files": "\n".join(p.read_bytes().decode(errors="replace")
                                    for p in Path(instance.root_directory).rglob("*")
                                    if p.is_file()),
        "captured output": "".join(capfd.readouterr()),
        "error": repr(error) + str(getattr(error, "description", "")),
        "server log": cluster.log_file.read_bytes()[log_from:].decode(errors="replace"),
    }
    parts = {secret, *(word for word in secret.split() if len(word) >= 6)}
    return [f"{where}: {part!r}" for where, text in texts.items() for part in parts
            if part in text]


@pytest.fixture(scope="module")
def documented_exporter(cluster) -> str:
    """The docs' setup block run as written by the superuser; the exporter's DSN."""
    setup, exporter_password = documented_setup()
    for statement in filter(str.strip, setup.split(";")):
        admin(cluster, statement)
    return dsn(cluster, "churn_metrics", "exporter", exporter_password)


def test_the_documented_setup_works_and_no_password_shows(
    cluster, documented_exporter, tmp_path, monkeypatch, capfd
):
    monkeypatch.setenv(settings.METRICS_DSN_ENV, documented_exporter)
    monkeypatch.setenv(settings.GRAFANA_DB_PASSWORD_ENV, READER_PASSWORD)
    monkeypatch.delenv(settings.GRAFANA_DB_USER_ENV, raising=False)
    database = tmp_path / "warehouse.duckdb"
    with dg.instance_for_test() as instance:
        assert dg.materialize(ELT_ASSETS, instance=instance,
                              resources=build_resources(str(database), str(SAMPLE_CSV))).success
        log_from = log_size(cluster)
        for _ in range(2):  # creates the role, then updates it
            result = dg.materialize([postgres_metrics], instance=instance,
                                    resources=build_resources(str(database), str(SAMPLE_CSV)))
            assert result.success
        assert leaks(READER_PASSWORD, instance, capfd, cluster, log_from) == []
    reader = dsn(cluster, "churn_metrics", "grafana_reader", READER_PASSWORD)
    with psycopg.connect(reader) as conn:  # over SCRAM, with the password the export set
        assert conn.execute("SELECT count(*) FROM churn_metrics.kpi_snapshots").fetchone() == (1,)
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        psycopg.connect(dsn(cluster, "churn_metrics", "grafana_reader", "wrong"))


@pytest.mark.parametrize("missing", ["CREATEROLE", "CREATE on the database"])
def test_a_missing_privilege_fails_once_naming_it_and_never_the_password(
    cluster, tmp_path, monkeypatch, capfd, missing
):
    suffix = uuid.uuid4().hex[:8]
    exporter, database = f"exporter_{suffix}", f"metrics_{suffix}"
    if missing == "CREATEROLE":  # the documented setup without CREATEROLE
        admin(cluster, f"CREATE ROLE {exporter} LOGIN PASSWORD 'pw-{suffix}'")
        admin(cluster, f"CREATE DATABASE {database} OWNER {exporter}")
    else:  # may create roles, but the database is another's: no schema of its own there
        admin(cluster, f"CREATE ROLE {exporter} LOGIN CREATEROLE PASSWORD 'pw-{suffix}'")
        admin(cluster, f"CREATE DATABASE {database}")
    monkeypatch.setenv(settings.METRICS_DSN_ENV, dsn(cluster, database, exporter, f"pw-{suffix}"))
    monkeypatch.setenv(settings.GRAFANA_DB_USER_ENV, f"reader_{suffix}")
    monkeypatch.setenv(settings.GRAFANA_DB_PASSWORD_ENV, READER_PASSWORD)
    log_from = log_size(cluster)
    with dg.instance_for_test() as instance:
        with pytest.raises(dg.Failure) as raised:
            dg.materialize([postgres_metrics], instance=instance,
                           resources=build_resources(str(tmp_path / "w.duckdb"), str(SAMPLE_CSV)))
        failure = raised.value
        assert failure.allow_retries is False, "waiting grants no privilege: not retried"
        assert f"it needs {missing}" in failure.description
        assert "OWNER <exporter>" in failure.description  # the documented way to get it
        if missing == "CREATEROLE":
            assert f"Grafana's role reader_{suffix}" in failure.description
        assert leaks(READER_PASSWORD, instance, capfd, cluster, log_from, failure) == []
        assert leaks(f"pw-{suffix}", instance, capfd, cluster, log_from, failure) == []


@pytest.mark.parametrize("power, grant", [
    ("CREATEDB", "CREATE ROLE {name} LOGIN CREATEDB"),
    ("membership in pg_write_all_data", "GRANT pg_write_all_data TO {name}"),
])
def test_a_role_with_powers_is_not_taken_as_grafanas_reader(
    cluster, documented_exporter, tmp_path, monkeypatch, power, grant
):
    name = f"powerful_{uuid.uuid4().hex[:8]}"
    admin(cluster, f"CREATE ROLE {name} LOGIN" if "GRANT" in grant else grant.format(name=name))
    if "GRANT" in grant:
        admin(cluster, grant.format(name=name))
    monkeypatch.setenv(settings.METRICS_DSN_ENV, documented_exporter)
    monkeypatch.setenv(settings.GRAFANA_DB_USER_ENV, name)
    monkeypatch.setenv(settings.GRAFANA_DB_PASSWORD_ENV, READER_PASSWORD)
    with dg.instance_for_test() as instance, pytest.raises(dg.Failure) as raised:
        dg.materialize([postgres_metrics], instance=instance,
                       resources=build_resources(str(tmp_path / "w.duckdb"), str(SAMPLE_CSV)))
    assert raised.value.allow_retries is False
    assert f"role {name}" in raised.value.description and power in raised.value.description
    with psycopg.connect(cluster.dsn) as conn:  # refused, not changed
        assert conn.execute("SELECT rolpassword FROM pg_authid WHERE rolname = %s",
                            [name]).fetchone() == (None,)


def test_a_dsn_that_does_not_parse_fails_once_without_quoting_it(
    cluster, tmp_path, monkeypatch, capfd
):
    password = "TOP SECRET pw"
    suffix = uuid.uuid4().hex[:8]
    admin(cluster, f"CREATE ROLE spaced_{suffix} LOGIN PASSWORD '{password}'")
    admin(cluster, f"CREATE DATABASE spaced_{suffix} OWNER spaced_{suffix}")
    unquoted = dsn(cluster, f"spaced_{suffix}", f"spaced_{suffix}", password)
    monkeypatch.setenv(settings.METRICS_DSN_ENV, unquoted)
    monkeypatch.delenv(settings.GRAFANA_DB_PASSWORD_ENV, raising=False)
    log_from = log_size(cluster)
    with dg.instance_for_test() as instance:
        with pytest.raises(dg.Failure) as raised:
            dg.materialize([postgres_metrics], instance=instance,
                           resources=build_resources(str(tmp_path / "w.duckdb"), str(SAMPLE_CSV)))
        assert raised.value.allow_retries is False
        assert "CHURN_METRICS_DSN is not a valid libpq connection string" in (
            raised.value.description)
        assert leaks(password, instance, capfd, cluster, log_from, raised.value) == []
    # The other side: quoted as the message says, the same password connects and exports.
    quoted = unquoted.replace(f"password={password}", f"password='{password}'")
    monkeypatch.setenv(settings.METRICS_DSN_ENV, quoted)
    with dg.instance_for_test() as instance:
        assert dg.materialize([postgres_metrics], instance=instance, resources=build_resources(
            str(tmp_path / "w.duckdb"), str(SAMPLE_CSV))).success
