"""The stack as its users drive it, without Docker: the code server, webserver and daemon started
from the compose file's own commands, on loopback, with the stack's dagster.yaml against a real
PostgreSQL; a run launched and followed through GraphQL, the sensor's export landing in the
metrics database, the hourly schedule's next tick turned into a run (the schedule itself stopped
first: the test owns its ticks, whatever the hour), and nothing left running.
"""

import os
import shutil
from datetime import datetime, timezone
from pathlib import Path

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict

from churn_platform.core.export.postgres import (
    SCHEMA as METRICS_SCHEMA,  # made by the init script
)
from churn_platform.core.settings import PROJECT_ROOT, SAMPLE_CSV
from churn_platform.defs.runs import WAREHOUSE_TAG as WAREHOUSE_TAGS
from churn_platform_tests.location import defs
from churn_platform_tests.postgres import free_port
from churn_platform_tests.stack import (
    DONE,
    LAUNCH,
    LOCATION,
    SCHEDULE,
    STACK_INSTANCE,
    GraphQL,
    ProcessGroups,
    command_succeeds,
    compose_services,
    dockerfile_env,
    finished,
    group_alive,
    latest_check_executions,
    launch_run,
    list_runs,
    on_loopback,
    own_the_schedule,
    processes_with_env,
    venv_path,
    wait_until,
)

[WAREHOUSE_TAG] = WAREHOUSE_TAGS
EXPORT_JOB = "metrics_export_job"
BACKUP_JOB = "warehouse_backup_job"

DRY_RUN = """
mutation DryRun($selector: ScheduleSelector!, $timestamp: Float) {
  scheduleDryRun(selectorData: $selector, timestamp: $timestamp) {
    __typename
    ... on DryRunInstigationTick {
      evaluationResult {
        runRequests { runKey runConfigYaml tags { key value } }
        skipReason
        error { message }
      }
    }
    ... on PythonError { message }
  }
}"""

DAEMONS = """
{ instance { daemonHealth { allDaemonStatuses { daemonType healthy required } } } }
"""

DEFAULT_TIMEOUT = 180
EVALUATED = ("SUCCEEDED", "FAILED")  # passed, or evaluated and not passed (not skipped or errored)
SAMPLE_ROWS = len(SAMPLE_CSV.read_text().splitlines()) - 1  # one line per record, after the header


@pytest.fixture
def stack_env(tmp_path, dagster_database, metrics_database) -> dict[str, str]:
    """The environment the image and compose give the Dagster containers: the image's paths under
    tmp_path (the project's own files where the image copies them), loopback for service names,
    Dagster's own role and database as deploy/postgres/init-dagster.sh makes them."""

    def here(path: str) -> str:
        path = path.replace("/opt/dagster/app", str(PROJECT_ROOT))
        return path.replace("/opt/dagster", str(tmp_path))

    image = {name: here(value) for name, value in dockerfile_env().items()}
    # What the image creates: DAGSTER_HOME with the stack's dagster.yaml, the volume mount points.
    home = Path(image["DAGSTER_HOME"])
    home.mkdir()
    shutil.copy(STACK_INSTANCE, home / "dagster.yaml")
    Path(image["CHURN_DUCKDB_PATH"]).parent.mkdir()
    Path(image["CHURN_BACKUP_DIR"]).mkdir()
    pg = conninfo_to_dict(dagster_database.dsn)
    return {
        **os.environ,
        **image,
        "PATH": venv_path(),
        "DAGSTER_PG_HOST": str(pg["host"]),
        "DAGSTER_PG_PORT": str(pg["port"]),
        "DAGSTER_PG_USER": str(pg["user"]),
        "DAGSTER_PG_PASSWORD": "unused-with-trust-auth",
        "DAGSTER_PG_DB": str(pg["dbname"]),
        "DAGSTER_CODE_SERVER_HOST": "127.0.0.1",
        "DAGSTER_CODE_SERVER_PORT": str(free_port()),
        "CHURN_METRICS_DSN": metrics_database.writer_dsn,
        "CHURN_PSEUDONYMIZATION_KEY": "",
        "CHURN_SOURCE_CSV": "",  # as compose passes them unset: the shipped sample
        "CHURN_SOURCE_MAPPING": "",
    }


def _launch_next_tick(gql: GraphQL, schedule_name: str) -> str:
    """The schedule's next tick as a run, the way the UI's "Test schedule" makes one: the code
    server evaluates the tick, the run is launched with the tick's config and tags."""
    selector = {**LOCATION, "scheduleName": schedule_name}
    schedule = gql(SCHEDULE, selector=selector)["scheduleOrError"]
    assert schedule["__typename"] == "Schedule", schedule
    next_tick = schedule["futureTicks"]["results"][0]["timestamp"]
    tick_time = datetime.fromtimestamp(next_tick, tz=timezone.utc)
    assert (tick_time.minute, tick_time.second) == (0, 0), "hourly, at the top of the hour"
    dry_run = gql(DRY_RUN, selector=selector, timestamp=next_tick)["scheduleDryRun"]
    assert dry_run["__typename"] == "DryRunInstigationTick", dry_run
    [request] = dry_run["evaluationResult"]["runRequests"]
    tags = {t["key"]: t["value"] for t in request["tags"]}
    assert tags["dagster/schedule_name"] == schedule_name
    return launch_run(gql, "churn_elt_job", tags, request["runConfigYaml"])


def test_stack_runs_the_platform_end_to_end(stack_env, metrics_database, tmp_path):
    services = compose_services()
    for name in ("code-server", "webserver", "webserver-readonly", "daemon"):
        missing = set(services[name]["environment"]) - set(stack_env)
        assert not missing, f"{name}: the test environment lacks {missing} that compose sets"

    code_port = int(stack_env["DAGSTER_CODE_SERVER_PORT"])
    web_port, viewer_port = free_port(), free_port()
    (tmp_path / "logs").mkdir()
    procs = ProcessGroups(tmp_path / "logs", stack_env, PROJECT_ROOT)

    def logs() -> str:
        return "\n".join(f"--- {name}\n{procs.log(name)}" for name in procs.started)

    def healthy(service: str, container_port: int | None = None, port: int | None = None) -> bool:
        """The service's compose health check, run here (["CMD", ...] without "CMD")."""
        check = services[service]["healthcheck"]["test"][1:]
        if container_port is not None:
            check = on_loopback(check, container_port, port)
        return command_succeeds(check, stack_env, PROJECT_ROOT)

    home = stack_env["DAGSTER_HOME"]
    try:
        # The order compose's depends_on gives: the code server healthy first, then the others.
        procs.start("code-server", on_loopback(services["code-server"]["command"], 4000, code_port))
        wait_until("the code server's health check",
                   lambda: healthy("code-server", 4000, code_port),
                   DEFAULT_TIMEOUT, on_timeout=logs)
        procs.start("webserver", on_loopback(services["webserver"]["command"], 3000, web_port))
        wait_until("the webserver's health check", lambda: healthy("webserver", 3000, web_port),
                   DEFAULT_TIMEOUT, on_timeout=logs)
        procs.start("webserver-readonly", on_loopback(services["webserver-readonly"]["command"],
                                                      3000, viewer_port))
        wait_until("the read-only webserver's health check",
                   lambda: healthy("webserver-readonly", 3000, viewer_port),
                   DEFAULT_TIMEOUT, on_timeout=logs)
        gql = GraphQL(f"http://127.0.0.1:{web_port}")
        viewer = GraphQL(f"http://127.0.0.1:{viewer_port}/viewer")

        # The Launchpad's own validation refuses run config that would redirect the load.
        redirected = gql(LAUNCH, params={
            "selector": {**LOCATION, "jobName": "churn_elt_job"},
            "runConfigData": '{"resources": {"churn_source": {"config": {"csv_path": "/etc/passwd"}}}}',
        })["launchRun"]
        assert redirected["__typename"] == "RunConfigValidationInvalid", redirected
        # The viewers' UI launches nothing.
        refused = viewer(LAUNCH, params={"selector": {**LOCATION, "jobName": "churn_elt_job"},
                                         "runConfigData": "{}"})["launchRun"]
        assert refused["__typename"] == "UnauthorizedError", refused
        assert list_runs(gql, pipelineName="churn_elt_job") == [], "neither attempt started a run"
        own_the_schedule(gql, "hourly_churn_elt")
        procs.start("daemon", services["daemon"]["command"])

        # A manual run, right behind it the hourly schedule's next tick turned into a run, and a
        # manual export: started together, as soon as the daemon is started, they queue, and none
        # fails for DuckDB's lock.
        manual_run = launch_run(gql, "churn_elt_job")
        scheduled_run = _launch_next_tick(gql, "hourly_churn_elt")
        manual_export = launch_run(gql, EXPORT_JOB)
        for run_id in (manual_run, scheduled_run, manual_export):
            run = wait_until(f"run {run_id}", lambda: finished(gql, run_id), DEFAULT_TIMEOUT,
                             on_timeout=logs)
            assert run["status"] == "SUCCESS", logs()
        # The daemon dequeued them; its compose health check says so too. (Checked after the
        # runs, not before launching them: the runs wait in the queue meanwhile.)
        wait_until("the daemon's health check", lambda: healthy("daemon"),
                   DEFAULT_TIMEOUT, on_timeout=logs)

        # Every asset check, read back as the UI reads it: each one evaluated after the latest
        # materialization of its asset, and none of ERROR severity failed.
        checks = latest_check_executions(gql)
        asset_graph = defs.get_repository_def().asset_graph
        defined = {(tuple(k.asset_key.path), k.name) for k in asset_graph.asset_check_keys}
        assert set(checks) == defined
        parity = checks[(("analytics", "rejected_rows"), "row_count_parity")]
        assert parity["runId"] in (manual_run, scheduled_run)
        # No churn model is trained here (churn_model_job runs daily): its checks, and the scores'
        # check the ELT skips until a model is promoted, have nothing to evaluate yet.
        untrained = {k: checks.pop(k) for k in list(checks)
                     if k[0] in (("models", "churn_risk"), ("analytics", "churn_scores"))}
        assert len(untrained) == 3
        assert all(e is None or e["status"] not in EVALUATED for e in untrained.values()), untrained
        unevaluated = {k: e for k, e in checks.items() if e is None or e["status"] not in EVALUATED}
        assert not unevaluated, unevaluated
        errors = {k: e for k, e in checks.items()
                  if e["status"] == "FAILED" and e["evaluation"]["severity"] == "ERROR"}
        assert not errors, errors

        # The daemon's sensor notices the new metrics snapshot and the queue runs the export.
        exports = wait_until(
            "the sensor's export run",
            lambda: [r for r in list_runs(gql, pipelineName=EXPORT_JOB) if r["status"] in DONE],
            DEFAULT_TIMEOUT, on_timeout=logs,
        )
        assert {r["status"] for r in exports} == {"SUCCESS"}, logs()
        # Viewers see the same runs as operators.
        assert {manual_run, scheduled_run, manual_export} <= {r["runId"] for r in list_runs(viewer)}
        # The snapshot, read as Grafana reads it: through the read-only role.
        with psycopg.connect(metrics_database.reader_dsn) as conn:
            exported = dict(conn.execute(
                f"SELECT source_run_id, total_records FROM {METRICS_SCHEMA}.kpi_snapshots"
            ).fetchall())
        assert exported[manual_run] == SAMPLE_ROWS
        # Every table the export created is readable by Grafana's role (the init script's grants).
        with psycopg.connect(metrics_database.reader_dsn) as conn:
            tables = [row[0] for row in conn.execute(
                "SELECT tablename FROM pg_tables WHERE schemaname = %s", [METRICS_SCHEMA]
            ).fetchall()]
            assert "kpi_snapshots" in tables
            for table in tables:
                conn.execute(f'SELECT count(*) FROM {METRICS_SCHEMA}."{table}"')

        daemons = gql(DAEMONS)["instance"]["daemonHealth"]["allDaemonStatuses"]
        assert all(d["healthy"] for d in daemons if d["required"]), daemons

        # The backup sensor follows each successful ELT run.
        wait_until(
            "the backups after the ELT runs",
            lambda: len([r for r in list_runs(gql, pipelineName=BACKUP_JOB) if r["status"] in DONE]) >= 2,
            DEFAULT_TIMEOUT, on_timeout=logs,
        )
        # Stop when idle, as an operator would: no run left queued or in flight.
        wait_until("the run queue to drain",
                   lambda: not list_runs(gql, statuses=["QUEUED", "STARTING", "STARTED"]),
                   DEFAULT_TIMEOUT, on_timeout=logs)

        # One warehouse run at a time, whoever started it (manual, schedule, sensor): the queue
        # never let two of them overlap.
        runs = list_runs(gql, tags=[{"key": WAREHOUSE_TAG, "value": WAREHOUSE_TAGS[WAREHOUSE_TAG]}])
        assert {r["jobName"] for r in runs} == {"churn_elt_job", EXPORT_JOB, BACKUP_JOB}
        # The ELT runs are the two the test started: the stopped schedule added none.
        assert {r["runId"] for r in runs if r["jobName"] == "churn_elt_job"} == {
            manual_run, scheduled_run}
        assert {r["status"] for r in runs} == {"SUCCESS"}
        spans = sorted((r["startTime"], r["endTime"]) for r in runs)
        assert all(end <= next_start for (_, end), (next_start, _) in zip(spans, spans[1:])), spans
    finally:
        procs.stop_all()

    assert procs.killed == []  # every service stopped on SIGTERM, none needed SIGKILL
    for proc in procs.started.values():
        assert not group_alive(proc.pid)
    assert processes_with_env("DAGSTER_HOME", home) == []
    # The backups landed on what is the backup volume in the stack.
    assert list(Path(stack_env["CHURN_BACKUP_DIR"]).iterdir())
