"""PostgreSQL goes away during an export and comes back: the export fails clearly, is retried by
its policy, and loses nothing. Driven through the real CLI against a real server that is stopped
and started again on the same port."""

import os
import subprocess
import sys
from pathlib import Path

import dagster as dg
import psycopg
import pytest

from churn_platform.core.settings import SAMPLE_CSV
from churn_platform_tests.postgres import PostgresCluster, pg_binaries

PASSWORD = "pw-never-logged"


@pytest.fixture
def cluster():
    server = PostgresCluster(pg_binaries()).start()
    try:
        yield server
    finally:
        server.remove()


def dagster(home: Path, env: dict, *args: str, **kwargs) -> subprocess.Popen:
    return subprocess.Popen(
        [str(Path(sys.executable).parent / "dagster"), "job", "execute",
         "-m", "churn_platform.definitions", *args],
        env={**os.environ, **env, "DAGSTER_HOME": str(home)},
        stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, start_new_session=True,
        **kwargs,
    )


def finish(process: subprocess.Popen, timeout: float = 120) -> str:
    try:
        _, err = process.communicate(timeout=timeout)
    finally:
        process.kill()
    return err


def snapshots(dsn: str) -> set[str]:
    with psycopg.connect(dsn) as conn:
        return {r[0] for r in conn.execute("SELECT source_run_id FROM churn_metrics.kpi_snapshots")}


def test_an_export_during_an_outage_retries_and_loses_nothing(tmp_path, cluster):
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    dsn = f"{cluster.dsn} password={PASSWORD}"
    env = {"CHURN_SOURCE_CSV": str(SAMPLE_CSV), "CHURN_DUCKDB_PATH": str(tmp_path / "w.duckdb"),
           "CHURN_METRICS_DSN": dsn, "CHURN_RETRY_DELAY_SECONDS": "4"}
    for _ in range(2):
        assert dagster(home, env, "-j", "churn_elt_job").wait(timeout=120) == 0
    assert dagster(home, env, "-j", "metrics_export_job").wait(timeout=120) == 0
    before = snapshots(dsn)
    assert len(before) == 2
    assert dagster(home, env, "-j", "churn_elt_job").wait(timeout=120) == 0  # a third snapshot

    cluster.stop()
    export = dagster(home, env, "-j", "metrics_export_job")
    seen = []
    for line in export.stderr:
        seen.append(line)
        if "STEP_UP_FOR_RETRY" in line:
            break  # the first attempt failed and waits for its retry
    cluster.start()  # the server is back before the retry
    log = "".join(seen) + finish(export)
    assert export.returncode == 0, log[-3000:]
    assert "STEP_UP_FOR_RETRY" in log
    assert PASSWORD not in log

    with dg.DagsterInstance.from_config(str(home)) as instance:
        elt_runs = {r.run_id for r in instance.get_runs(dg.RunsFilter(job_name="churn_elt_job"))}
        [export_run] = instance.get_runs(dg.RunsFilter(job_name="metrics_export_job"), limit=1)
        [retry] = instance.all_logs(export_run.run_id, of_type=dg.DagsterEventType.STEP_UP_FOR_RETRY)
    reason = str(retry.dagster_event.event_specific_data.error)
    assert f"port={cluster.port}" in reason and "unavailable" in reason  # says where it failed
    assert PASSWORD not in reason
    assert snapshots(dsn) == elt_runs and before < elt_runs  # the missed snapshot came over
