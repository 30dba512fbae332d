"""The docker compose stack without Docker: its files, its PostgreSQL init script and its Dagster
processes, run directly on loopback as their containers would run them.

Fixture `metrics_database`: the init script run against the test server, with unique names (roles
are cluster-wide and other tests share the cluster), dropped afterwards.
"""

import os
import re
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest
import requests
import yaml
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from churn_platform import launch
from churn_platform.core.settings import PROJECT_ROOT
from churn_platform.launch import group_alive  # noqa: F401 (the stack tests' check)
from churn_platform_tests.postgres import _pg_bin, free_port

COMPOSE_FILE = PROJECT_ROOT / "docker-compose.yml"
DOCKERFILE = PROJECT_ROOT / "Dockerfile"
ENV_EXAMPLE = PROJECT_ROOT / ".env.example"
STACK_INSTANCE = PROJECT_ROOT / "deploy" / "dagster.yaml"
STACK_WORKSPACE = PROJECT_ROOT / "deploy" / "workspace.yaml"
INIT_SCRIPT = PROJECT_ROOT / "deploy" / "postgres" / "init-metrics.sh"
DAGSTER_INIT_SCRIPT = PROJECT_ROOT / "deploy" / "postgres" / "init-dagster.sh"


def compose_services() -> dict:
    """The services as written (YAML anchors resolved, ${...} left as they are)."""
    return yaml.safe_load(COMPOSE_FILE.read_text())["services"]


def dockerfile_lines() -> list[str]:
    """Dockerfile instructions, continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    return [
        line.strip()
        for line in text.splitlines()
        if line.strip() and not line.strip().startswith("#")
    ]


def dockerfile_env() -> dict[str, str]:
    """The environment the image sets (ENV)."""
    env = {}
    for line in dockerfile_lines():
        if line.startswith("ENV "):
            env.update(dict(re.findall(r"(\w+)=(\S+)", line)))
    return env


def on_loopback(argv: list[str], container_port: int, port: int) -> list[str]:
    """A compose command as it runs here: bound to 127.0.0.1 and to a free port."""
    out = []
    for arg in argv:
        if arg == "0.0.0.0":
            arg = "127.0.0.1"
        elif arg == str(container_port):
            arg = str(port)
        else:
            arg = re.sub(rf":{container_port}\b", f":{port}", arg)
        out.append(arg)
    return out


# --- the metrics database, made by the stack's own init script -----------------------------------


@dataclass(frozen=True)
class MetricsDatabase:
    name: str
    writer: str
    reader: str
    admin_dsn: str  # superuser, connected to the metrics database
    writer_dsn: str  # what CHURN_METRICS_DSN holds in the stack
    reader_dsn: str  # what Grafana connects as


def run_init_script(admin_dsn: str, env: dict[str, str], script: Path = INIT_SCRIPT
                    ) -> subprocess.CompletedProcess:
    """Run an init script of deploy/postgres as the postgres image would: psql as the superuser."""
    admin = conninfo_to_dict(admin_dsn)
    bin_dir = _pg_bin()
    path = f"{bin_dir}{os.pathsep}{os.environ['PATH']}" if bin_dir else os.environ["PATH"]
    script_env = {
        **os.environ,
        **env,
        "PATH": path,
        "PGHOST": str(admin["host"]),
        "PGPORT": str(admin["port"]),
        "POSTGRES_USER": str(admin["user"]),
        "POSTGRES_DB": str(admin["dbname"]),
    }
    return subprocess.run(
        ["bash", str(script)], env=script_env, capture_output=True, text=True, timeout=60
    )


@pytest.fixture
def metrics_database(pg_server: str) -> Iterator[MetricsDatabase]:
    suffix = uuid.uuid4().hex[:10]
    name, writer, reader = f"churn_metrics_{suffix}", f"exporter_{suffix}", f"grafana_{suffix}"
    result = run_init_script(
        pg_server,
        {
            "CHURN_METRICS_DB": name,
            "CHURN_METRICS_USER": writer,
            "CHURN_METRICS_PASSWORD": f"pw-{suffix}",
            "CHURN_GRAFANA_DB_USER": reader,
            "CHURN_GRAFANA_DB_PASSWORD": f"pw-r-{suffix}",
        },
    )
    assert result.returncode == 0, result.stderr
    try:
        yield MetricsDatabase(
            name=name,
            writer=writer,
            reader=reader,
            admin_dsn=make_conninfo(pg_server, dbname=name),
            writer_dsn=make_conninfo(pg_server, dbname=name, user=writer),
            reader_dsn=make_conninfo(pg_server, dbname=name, user=reader),
        )
    finally:
        with psycopg.connect(pg_server, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            conn.execute(f'DROP ROLE IF EXISTS "{writer}"')
            conn.execute(f'DROP ROLE IF EXISTS "{reader}"')


@dataclass(frozen=True)
class DagsterDatabase:
    name: str
    role: str
    dsn: str  # what the Dagster services connect with (DAGSTER_PG_*)


@pytest.fixture
def dagster_database(pg_server: str) -> Iterator[DagsterDatabase]:
    """Dagster's role and database, made by deploy/postgres/init-dagster.sh; dropped afterwards."""
    suffix = uuid.uuid4().hex[:10]
    name, role = f"dagster_{suffix}", f"dagster_role_{suffix}"
    result = run_init_script(
        pg_server,
        {"DAGSTER_PG_DB": name, "DAGSTER_PG_USER": role, "DAGSTER_PG_PASSWORD": f"pw-{suffix}"},
        DAGSTER_INIT_SCRIPT,
    )
    assert result.returncode == 0, result.stderr
    try:
        yield DagsterDatabase(name, role, make_conninfo(pg_server, dbname=name, user=role))
    finally:
        with psycopg.connect(pg_server, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            conn.execute(f'DROP ROLE IF EXISTS "{role}"')


# --- processes --------------------------------------------------------------------------------


def processes_with_env(name: str, value: str) -> list[int]:
    """Pids of live processes whose environment holds name=value: what stack processes spawned."""
    needle = f"{name}={value}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if needle in (entry / "environ").read_bytes().split(b"\0"):
                found.append(int(entry.name))
        except OSError:  # gone meanwhile, or not ours to read
            continue
    return found


class ProcessGroups:
    """Each service started as `make run` starts `dagster dev` (churn_platform.launch): a process
    group of its own, SIGINT and SIGTERM at their defaults whatever this test process inherited;
    stopping the group also stops what it spawned (the code server's gRPC child, run workers)."""

    def __init__(self, log_dir: Path, env: dict[str, str], cwd: Path):
        self.log_dir, self.env, self.cwd = log_dir, env, cwd
        self.started: dict[str, subprocess.Popen] = {}
        self.killed: list[str] = []  # groups that outlived SIGTERM

    def start(self, name: str, argv: list[str]) -> subprocess.Popen:
        with open(self.log_dir / f"{name}.log", "wb") as log:
            proc = launch.start(argv, env=self.env, cwd=self.cwd, stdout=log,
                                stderr=subprocess.STDOUT)
        self.started[name] = proc
        return proc

    def start_ui(self, name: str = "dev") -> "GraphQL":
        """`dagster dev` as `make run` starts it, on a free loopback port; its GraphQL API once
        the UI answers."""
        port = free_port()
        self.start(name, [str(Path(sys.executable).parent / "dagster"), "dev", "-w",
                          "workspace.yaml", "-h", "127.0.0.1", "-p", str(port)])
        base = f"http://127.0.0.1:{port}"
        wait_until("the UI", lambda: answers(f"{base}/server_info"), 180,
                   on_timeout=lambda: self.log(name))
        return GraphQL(base)

    def log(self, name: str) -> str:
        return (self.log_dir / f"{name}.log").read_text(errors="replace")[-4000:]

    def stop_all(self, grace_seconds: float = 30) -> None:
        """SIGTERM to each group at once, as `docker compose stop` stops the containers together;
        whatever of a group is still there after the grace period is killed."""
        for proc in self.started.values():
            launch.signal_group(proc, signal.SIGTERM)
        deadline = time.monotonic() + grace_seconds
        for proc in self.started.values():
            if not launch.wait_group(proc, deadline):
                self.killed.append(proc.args[0])
                launch.signal_group(proc, signal.SIGKILL)
            proc.wait(timeout=10)


def wait_until(what: str, probe, timeout: float, interval: float = 1.0, on_timeout=lambda: ""):
    """Poll probe() until it returns something truthy; fail naming what was awaited."""
    deadline = time.monotonic() + timeout
    while True:
        result = probe()
        if result:
            return result
        if time.monotonic() > deadline:
            pytest.fail(f"gave up waiting for {what} after {timeout:.0f} s\n{on_timeout()}")
        time.sleep(interval)


def answers(url: str) -> bool:
    """True once the server at `url` answers with a success."""
    try:
        return requests.get(url, timeout=5).ok
    except requests.RequestException:
        return False


def command_succeeds(argv: list[str], env: dict[str, str], cwd: Path) -> bool:
    try:
        return (
            subprocess.run(argv, env=env, cwd=cwd, capture_output=True, timeout=60).returncode == 0
        )
    except subprocess.TimeoutExpired:
        return False


def venv_path() -> str:
    """PATH with this interpreter's scripts first, so `dagster` is the project's own."""
    return f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"


# --- GraphQL --------------------------------------------------------------------------------------


class GraphQL:
    """The webserver's GraphQL API, as the UI and scripts use it: plain HTTP POSTs."""

    def __init__(self, base_url: str):
        self.url = f"{base_url}/graphql"

    def __call__(self, query: str, **variables) -> dict:
        response = requests.post(
            self.url, json={"query": query, "variables": variables}, timeout=60
        )
        assert response.ok, f"HTTP {response.status_code}: {response.text[:2000]}"
        body = response.json()
        assert not body.get("errors"), body["errors"]
        return body["data"]


# The GraphQL the UI sends, for tests that drive a running webserver as a user would.
LOCATION = {"repositoryLocationName": "churn_platform", "repositoryName": "__repository__"}
LAUNCH = """
mutation Launch($params: ExecutionParams!) {
  launchRun(executionParams: $params) {
    __typename
    ... on LaunchRunSuccess { run { runId status } }
    ... on PythonError { message stack }
    ... on RunConfigValidationInvalid { errors { message } }
    ... on InvalidSubsetError { message }
  }
}"""

RUN = """
query Run($runId: ID!) {
  runOrError(runId: $runId) {
    __typename
    ... on Run { runId jobName status startTime endTime tags { key value } }
  }
}"""

RUNS = """
query Runs($filter: RunsFilter) {
  runsOrError(filter: $filter) {
    ... on Runs { results { runId jobName status startTime endTime tags { key value } } }
  }
}"""

SCHEDULE = """
query Schedule($selector: ScheduleSelector!) {
  scheduleOrError(scheduleSelector: $selector) {
    __typename
    ... on Schedule {
      cronSchedule
      scheduleState { id status }
      futureTicks(limit: 1) { results { timestamp } }
    }
  }
}"""

STOP_SCHEDULE = """
mutation Stop($id: String!) {
  stopRunningSchedule(id: $id) {
    __typename
    ... on ScheduleStateResult { scheduleState { status } }
    ... on PythonError { message }
  }
}"""

CHECKS = """
query Checks {
  assetNodes {
    assetKey { path }
    assetChecksOrError {
      ... on AssetChecks {
        checks {
          name
          blocking
          executionForLatestMaterialization {
            runId
            status
            evaluation {
              success
              severity
              metadataEntries { label ... on TextMetadataEntry { text } }
            }
          }
        }
      }
    }
  }
}"""

DONE = ("SUCCESS", "FAILURE", "CANCELED")


def finished(gql: GraphQL, run_id: str) -> dict | None:
    run = gql(RUN, runId=run_id)["runOrError"]
    assert run["__typename"] == "Run", run
    return run if run["status"] in DONE else None


def list_runs(gql: GraphQL, **run_filter) -> list[dict]:
    return gql(RUNS, filter=run_filter)["runsOrError"]["results"]


def launch_run(gql: GraphQL, job: str, tags: dict[str, str] | None = None, run_config: str = "{}",
               assets: list[list[str]] | None = None):
    """Launch as the UI does: a job, or (job "__ASSET_JOB") the assets selected in the graph."""
    selector = {**LOCATION, "jobName": job}
    if assets:
        selector["assetSelection"] = [{"path": key} for key in assets]
    params = {
        "selector": selector,
        "runConfigData": run_config,
        "executionMetadata": {"tags": [{"key": k, "value": v} for k, v in (tags or {}).items()]},
    }
    result = gql(LAUNCH, params=params)["launchRun"]
    assert result["__typename"] == "LaunchRunSuccess", result
    return result["run"]["runId"]


def own_the_schedule(gql: GraphQL, schedule_name: str) -> None:
    """Stop the schedule, RUNNING by default, before the daemon starts: the real top-of-the-hour
    tick would otherwise add a run whenever the test crosses an hour. The test drives its ticks."""
    selector = {**LOCATION, "scheduleName": schedule_name}
    state = gql(SCHEDULE, selector=selector)["scheduleOrError"]["scheduleState"]
    assert state["status"] == "RUNNING"  # what a user gets
    stopped = gql(STOP_SCHEDULE, id=state["id"])["stopRunningSchedule"]
    assert stopped["__typename"] == "ScheduleStateResult", stopped
    assert stopped["scheduleState"]["status"] == "STOPPED"


def latest_check_executions(gql: GraphQL) -> dict[tuple, dict | None]:
    """(asset path, check name) -> its execution after its asset's latest materialization."""
    return {
        (tuple(node["assetKey"]["path"]), check["name"]): check["executionForLatestMaterialization"]
        for node in gql(CHECKS)["assetNodes"]
        for check in node["assetChecksOrError"].get("checks", [])
    }
