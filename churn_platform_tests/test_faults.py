"""Injected faults: a run killed with SIGKILL at every step boundary, while it writes each table
and inside the publish transaction, and a full disk.

Afterwards every table reads, all published tables come from one run (the last good one, or the
whole new set once it was published), parity holds on them, and the next run succeeds.
"""

import json
import os
import signal
import subprocess
import sys
import threading

import dagster as dg
import pytest

from churn_platform import launch, sample_data
from churn_platform.core.settings import PROJECT_ROOT
from churn_platform.core.tables import (
    ANALYTICS_TABLE,
    METRICS_TABLE,
    REJECTED_TABLE,
    SEGMENT_TABLE,
    STAGING_TABLE,
)
from churn_platform.defs.failures import TERMINATED
from churn_platform.defs.warehouse_io import WarehouseResource
from churn_platform_tests.conftest import published_set_of, query, run_elt

BIG_ROWS = 200_000

RUN_IN_CHILD = """
import os, sys, time, dagster as dg
if os.environ.get("PAUSE_IN_PUBLISH"):  # inside the transaction: the split renamed, one merge done
    from churn_platform.core import publish
    merge = publish.merge_history
    def paused(*args, **kwargs):
        result = merge(*args, **kwargs)
        print("PAUSED inside the publish transaction", file=sys.stderr, flush=True)
        time.sleep(600)
        return result
    publish.merge_history = paused
from churn_platform.defs.elt.assets import ELT_ASSETS
from churn_platform.defs.elt.checks import ELT_CHECKS
from churn_platform.defs.resources import build_resources
dg.materialize([*ELT_ASSETS, *ELT_CHECKS], resources=build_resources(sys.argv[1], sys.argv[2]))
"""


# churn_elt_job as deployed (its retry policy; no delay between attempts), reporting as JSON.
# With PAUSE_IN_WRITE=<schema.table>, the write of that table (this run's candidate of it) says
# so and then runs short DuckDB statements inside its transaction for up to a minute: a signal
# sent on that line lands in the write, in a statement or between two. (DuckDB 2.0 misses a
# signal now and then while a statement runs; the interrupt is then raised when it ends.)
RUN_JOB_IN_CHILD = """
import contextlib, json, os, sys, time, dagster as dg
from churn_platform.core import warehouse
from churn_platform.defs import warehouse_io
from churn_platform_tests.location import platform_defs
write_table, transaction = warehouse.write_table, warehouse.transaction
@contextlib.contextmanager
def paused(connection, *args, **kwargs):
    with transaction(connection, *args, **kwargs):
        print("PAUSED inside the write", file=sys.stderr, flush=True)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            connection.execute("SELECT count(*) FROM range(10000000)").fetchone()
        yield connection
def write(connection, schema, name, *args, **kwargs):
    target = os.environ["PAUSE_IN_WRITE"].split(".")
    writing = schema == target[0] and (name == target[1] or name.endswith("_" + target[1]))
    warehouse.transaction = paused if writing else transaction
    try:
        return write_table(connection, schema, name, *args, **kwargs)
    finally:
        warehouse.transaction = transaction
warehouse_io.write_table = write
job = platform_defs(sys.argv[1], sys.argv[2]).resolve_job_def("churn_elt_job")
with dg.instance_for_test() as instance:
    result = job.execute_in_process(instance=instance, raise_on_error=False)
    failures = [e.step_failure_data for e in result.all_events
                if e.event_type_value == "STEP_FAILURE"]
    print(json.dumps({"success": result.success,
                      "events": [e.event_type_value for e in result.all_events],
                      "failures": [f.user_failure_data.description if f.user_failure_data
                                   else f.error.cls_name for f in failures]}))
"""


@pytest.fixture(scope="module")
def big_csv(tmp_path_factory):
    return sample_data.write_sample(tmp_path_factory.mktemp("big") / "big.csv", BIG_ROWS, seed=3)


TABLES = (STAGING_TABLE, ANALYTICS_TABLE, REJECTED_TABLE, SEGMENT_TABLE, METRICS_TABLE)
HISTORY = (SEGMENT_TABLE, METRICS_TABLE)


def counts(database) -> dict[str, int]:
    return {t: query(database, f"SELECT count(*) FROM {t}")[0][0] for t in TABLES}


@pytest.fixture(scope="module")
def one_big_run(big_csv, tmp_path_factory) -> dict[str, int]:
    """Row counts of every table after one complete run on the big file."""
    database = tmp_path_factory.mktemp("complete") / "w.duckdb"
    run_elt(big_csv, database)
    return counts(database)


# Where the child is killed: right after a line of its log (a step yielding its table: the IO
# manager is writing it; a step starting: the previous one is done), or paused in the publish.
KILL_POINTS = [
    ("staging__customer_churn - STEP_OUTPUT", STAGING_TABLE),  # in the middle of each write
    ("analytics__customer_churn - STEP_OUTPUT", ANALYTICS_TABLE),
    ("analytics__rejected_rows - STEP_OUTPUT", REJECTED_TABLE),
    ("analytics__churn_by_segment - STEP_OUTPUT", SEGMENT_TABLE),
    ("analytics__data_quality_metrics - STEP_OUTPUT", METRICS_TABLE),
    ("analytics__rejected_rows - STEP_SUCCESS", None),  # step boundaries
    ("split_checks - STEP_SUCCESS", None),
    ("analytics__churn_by_segment - STEP_SUCCESS", None),
    ("analytics__data_quality_metrics - STEP_SUCCESS", None),
    ("analytics__published - STEP_START", None),  # between the last check and the publish
    ("PAUSED inside the publish transaction", None),
    ("analytics__published - STEP_SUCCESS", "published"),  # after the COMMIT
]


@pytest.mark.parametrize("line, table", KILL_POINTS, ids=[p[0] for p in KILL_POINTS])
def test_sigkill_at_any_point_leaves_one_runs_tables_and_the_next_run_succeeds(
    line, table, sample_csv, big_csv, one_big_run, warehouse
):
    run_elt(sample_csv, warehouse)
    before = published_set_of(warehouse)
    new = {t: before[t] + n if t in HISTORY else n for t, n in one_big_run.items()}
    env = {**os.environ, "PAUSE_IN_PUBLISH": "1" if line.startswith("PAUSED") else ""}
    child = subprocess.Popen(
        [sys.executable, "-c", RUN_IN_CHILD, str(warehouse), str(big_csv)],
        stderr=subprocess.PIPE, text=True, start_new_session=True, env=env,
    )
    try:
        for output in child.stderr:
            if line in output:
                break
        else:
            pytest.fail(f"the run never logged {line!r}")
        os.killpg(child.pid, signal.SIGKILL)
    finally:
        child.kill()
        child.wait()
    assert child.returncode == -signal.SIGKILL
    after_kill = published_set_of(warehouse)  # every table reads, all from one run, parity holds
    # Nothing of the killed run is visible until its publish committed; then all of it.
    assert after_kill == (new if table == "published" else before)
    assert run_elt(sample_csv, warehouse).success
    after = published_set_of(warehouse)
    assert after[STAGING_TABLE] == after[ANALYTICS_TABLE] + after[REJECTED_TABLE] == 1000
    assert not query(warehouse, "SELECT table_name FROM duckdb_tables()"
                                 " WHERE starts_with(table_name, '_candidate_')")


@pytest.fixture
def small_disk(tmp_path):
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=6m", "tmpfs", str(mount)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        message = f"cannot mount a small tmpfs here: {done.stderr.strip()}"
        if os.environ.get("CI") == "true":
            pytest.fail(message)  # CI runs as root, where it mounts: never skip there
        pytest.skip(message)
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=True)


def test_a_full_disk_fails_clearly_and_keeps_the_last_good_tables(small_disk, sample_csv, big_csv):
    warehouse = small_disk / "warehouse.duckdb"
    assert run_elt(sample_csv, warehouse).success
    before = {t: query(warehouse, f"SELECT * FROM {t}") for t in TABLES}
    result = run_elt(big_csv, warehouse, raise_on_error=False)
    assert not result.success
    failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
    message = failure.step_failure_data.user_failure_data.description
    assert "No space left on device" in message and str(warehouse) in message
    for table, rows in before.items():
        # every table still reads, and holds the last good rows: nothing of the run was published
        assert query(warehouse, f"SELECT * FROM {table}") == rows, table
    subprocess.run(["mount", "-o", "remount,size=64m", str(small_disk)], check=True)
    assert run_elt(sample_csv, warehouse).success  # once there is room, the next run goes on


def test_a_reader_holding_the_file_fails_the_run_after_the_wait_naming_it(
    sample_csv, warehouse, monkeypatch
):
    """A notebook or BI tool with the warehouse open: bounded wait, a message saying who, no harm."""
    run_elt(sample_csv, warehouse)
    before = counts(warehouse)
    monkeypatch.setenv("CHURN_DUCKDB_LOCK_TIMEOUT", "1")
    holder = subprocess.Popen(
        [sys.executable, "-c", "import duckdb, sys; c = duckdb.connect(sys.argv[1], read_only=True);"
         " print('ready', flush=True); sys.stdin.read()", str(warehouse)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "ready"
        result = run_elt(sample_csv, warehouse, raise_on_error=False)
    finally:
        holder.kill()
        holder.wait()
    assert not result.success
    failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
    message = failure.step_failure_data.user_failure_data.description
    assert f"PID {holder.pid}" in message and "CHURN_DUCKDB_LOCK_TIMEOUT" in message
    assert counts(warehouse) == before


@pytest.mark.parametrize("table", [STAGING_TABLE, ANALYTICS_TABLE])
def test_sigterm_while_writing_ends_the_run_without_a_retry(table, sample_csv, big_csv, warehouse):
    """Terminate in the UI, or a container stop, sends SIGTERM: the run must not go on.

    Before, the interrupted statement ("Query interrupted") was retried and the run succeeded.
    """
    run_elt(sample_csv, warehouse)
    before = counts(warehouse)
    # SIGTERM at its default in the child, as in a run worker: an in-process run here may have
    # left this process ignoring it, and an ignored disposition is inherited.
    child = launch.start(
        [sys.executable, "-c", RUN_JOB_IN_CHILD, str(warehouse), str(big_csv)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=PROJECT_ROOT,
        env={**os.environ, "CHURN_RETRY_DELAY_SECONDS": "0", "PAUSE_IN_WRITE": table},
    )
    try:
        for line in child.stderr:
            if "PAUSED inside the write" in line:
                os.kill(child.pid, signal.SIGTERM)
                break
        else:
            pytest.fail(f"the write of {table} never started")
        out, _ = child.communicate(timeout=300)
    finally:
        child.kill()
        child.wait()
    assert child.returncode == 0  # the run ended on its own, reporting its outcome
    report = json.loads(out.strip().splitlines()[-1])
    assert not report["success"], report
    assert "STEP_UP_FOR_RETRY" not in report["events"]
    assert report["failures"] == [TERMINATED], report  # our words: it landed in a statement
    # Nothing of a terminated run is published: every table is the last good run's.
    assert counts(warehouse) == before


def test_a_statement_interrupted_in_a_checks_connection_is_not_retried(warehouse):
    """Checks and reads run their SQL on the warehouse resource's connection: an interrupted
    statement there (DuckDB's InterruptException) fails without a retry too."""
    resource = WarehouseResource(database=str(warehouse))
    with pytest.raises(dg.Failure) as error:
        with resource.get_connection() as conn:
            threading.Timer(0.5, conn.interrupt).start()
            conn.execute("SELECT sum(range) FROM range(100000000000)").fetchone()
    assert error.value.allow_retries is False and error.value.description == TERMINATED
