"""The landing mode end to end: exports dropped in a real folder, registered by the real sensor,
loaded by real runs of landing_export_job (one per partition), against hand-computed tables.

Three monthly exports (ids C-A ... C-E, shortened to their letter below), with
CHURN_MISSING_EXPORTS_FOR_CHURN=1:
  A  stays the same throughout (tenure grows within its band);
  B  churns in the second export (No -> Yes) and stays listed as churned;
  C  changes contract (Month-to-Month -> One-Year) in the second export;
  E  is missing from the second export and comes back in the third (a second lifecycle).
"""

import os
import shutil
import signal
import subprocess
import sys
from datetime import date

import dagster as dg
import pytest

from churn_platform.core import settings
from churn_platform.core.pseudonymize import pseudonym
from churn_platform_tests.conftest import HEADER, LANDING_KEY, query
from churn_platform_tests.location import platform_defs
from churn_platform_tests.test_landing_sensor import HOUR_AGO, tick

D1, D2, D3 = date(2026, 1, 20), date(2026, 2, 17), date(2026, 3, 24)
MTM, ONE = "Month-to-Month", "One-Year"
JAN, FEB, MAR = date(2026, 1, 1), date(2026, 2, 1), date(2026, 3, 1)


def row(customer, tenure, contract, churn):
    return f"C-{customer},40,Female,{tenure},60.0,{contract},DSL,{tenure * 60.0:.2f},No,{churn}"


DAYS = {
    D1: [row("A", 5, MTM, "No"), row("B", 20, ONE, "No"), row("C", 30, MTM, "No"),
         row("E", 3, MTM, "No")],
    D2: [row("A", 6, MTM, "No"), row("B", 21, ONE, "Yes"), row("C", 31, ONE, "No")],
    D3: [row("A", 7, MTM, "No"), row("B", 22, ONE, "Yes"), row("C", 32, ONE, "No"),
         row("E", 5, MTM, "No")],
}

# (customer, lifecycle, valid_from, valid_to, is_current, contract, churn, first_tenure, closed_by)
HISTORY = [
    ("A", 1, D1, None, True, MTM, "No", 5, None),
    ("B", 1, D1, D2, False, ONE, "No", 20, "change"),
    ("B", 1, D2, None, True, ONE, "Yes", 21, None),
    ("C", 1, D1, D2, False, MTM, "No", 30, "change"),
    ("C", 1, D2, None, True, ONE, "No", 31, None),
    ("E", 1, D1, D2, False, MTM, "No", 3, "missing"),
    ("E", 2, D3, None, True, MTM, "No", 5, None),
]
# (customer, lifecycle, event_date, detected_date, rule, tenure, contract)
EVENTS = [
    ("B", 1, D2, D2, "churn_flag", 21, ONE),
    ("E", 1, D2, D2, "missing", 3, MTM),
]
# (cohort_month, month, customers, retained): cohort = month of (first sight - tenure then):
# A 2025-08, B 2024-05, C 2023-07, E 2025-10. B churned in February; E was away on D2.
RETENTION = sorted(
    [(date(2025, 8, 1), m, 1, 1) for m in (JAN, FEB, MAR)]
    + [(date(2024, 5, 1), JAN, 1, 1), (date(2024, 5, 1), FEB, 1, 0), (date(2024, 5, 1), MAR, 1, 0)]
    + [(date(2023, 7, 1), m, 1, 1) for m in (JAN, FEB, MAR)]
    + [(date(2025, 10, 1), JAN, 1, 1), (date(2025, 10, 1), FEB, 1, 0),
       (date(2025, 10, 1), MAR, 1, 1)]
)
MONTHLY = [(FEB, "churn_flag", 1), (FEB, "missing", 1)]


def letters() -> dict[str, str]:
    return {pseudonym(f"C-{c}", LANDING_KEY.encode()): c for c in "ABCDE"}


def history(database):
    names = letters()
    rows = query(database, """
        SELECT anonymized_customer_id::VARCHAR, lifecycle, valid_from, valid_to, is_current,
               contract_type, churn, first_tenure, closed_by FROM analytics.customer_history""")
    return sorted((names[r[0]], *r[1:]) for r in rows)


def events(database):
    names = letters()
    rows = query(database, """
        SELECT anonymized_customer_id::VARCHAR, lifecycle, event_date, detected_date, rule,
               tenure, contract_type FROM analytics.churn_events""")
    return sorted((names[r[0]], *r[1:]) for r in rows)


def retention(database):
    return query(database, "SELECT cohort_month, month, customers, retained"
                           " FROM analytics.retention_by_cohort ORDER BY ALL")


def monthly(database):
    return query(database, "SELECT month, rule, churn_events FROM analytics.monthly_churn"
                           " ORDER BY ALL")


def assert_hand_computed(database) -> None:
    """History, events and both cohort tables after the three days, as computed by hand."""
    assert history(database) == HISTORY
    assert events(database) == EVENTS
    assert retention(database) == RETENTION
    assert monthly(database) == MONTHLY


def everything(database):
    return (history(database), events(database), retention(database), monthly(database),
            # The file an export was read from may be another holding the same bytes.
            query(database, "SELECT * EXCLUDE (load_timestamp, source_file)"
                            " FROM landing.export_rows ORDER BY ALL"),
            query(database, "SELECT export_key, export_date, customers, superseded_by"
                            " FROM analytics.history_exports ORDER BY ALL"))


@pytest.fixture
def job(warehouse, sample_csv):
    return platform_defs(warehouse, sample_csv).resolve_job_def("landing_export_job")


def drop(landing_folder, day, lines=None, name=None, text=None, later=0):
    """An export file, arrived an hour ago (plus `later` seconds)."""
    path = landing_folder / (name or f"crm_{day.isoformat()}.csv")
    path.write_text(text if text is not None else "\n".join([HEADER, *(lines or DAYS[day])]) + "\n")
    os.utime(path, (HOUR_AGO + later, HOUR_AGO + later))
    return path


def run_requested(instance, job, cursor=None):
    """One sensor tick, then each run it requests, executed with its partition key as the daemon
    would; returns the tick's cursor and the runs' results."""
    result = tick(instance, cursor)
    runs = [job.execute_in_process(partition_key=request.partition_key, instance=instance,
                                   tags=request.tags, raise_on_error=False)
            for request in result.run_requests or []]
    return result.cursor, runs


def failure(result) -> str:
    [event] = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    return event.step_failure_data.user_failure_data.description


def test_three_days_through_real_runs_match_hand_computed_history(landing_folder, instance, job,
                                                                   warehouse):
    cursor = None
    for day in (D1, D2, D3):
        drop(landing_folder, day)
        cursor, runs = run_requested(instance, job, cursor)
        assert [r.success for r in runs] == [True]
    assert_hand_computed(warehouse)
    # Every export kept, lossless, each row with its export's id and date.
    keys = sorted(instance.get_dynamic_partitions("churn_exports"))
    assert query(warehouse, "SELECT export_id, export_date, count(*) FROM landing.export_rows"
                            " GROUP BY ALL ORDER BY ALL") == [
        (keys[0], D1, 4), (keys[1], D2, 3), (keys[2], D3, 4)]
    assert query(warehouse, "SELECT \"CustomerID\", \"MonthlyCharges\", source_row"
                            " FROM landing.export_rows WHERE export_date = ? ORDER BY source_row",
                 [D2]) == [("C-A", "60.0", 2), ("C-B", "60.0", 3), ("C-C", "60.0", 4)]
    # The assets' materializations are recorded per partition, for the UI.
    for asset in (["landing", "export_rows"], ["analytics", "customer_history"],
                  ["analytics", "churn_events"], ["analytics", "retention_by_cohort"],
                  ["analytics", "monthly_churn"]):
        assert instance.get_materialized_partitions(dg.AssetKey(asset)) == set(keys)


def test_redropping_or_rerunning_changes_nothing_and_a_changed_file_is_a_new_export(
        landing_folder, instance, job, warehouse):
    cursor = None
    for day in (D1, D2, D3):
        drop(landing_folder, day)
        cursor, _ = run_requested(instance, job, cursor)
    before = everything(warehouse)
    # The same bytes under another name: no new partition, no run.
    shutil.copy(landing_folder / f"crm_{D2}.csv", landing_folder / f"copy_of_crm_{D2}.csv")
    os.utime(landing_folder / f"copy_of_crm_{D2}.csv", (HOUR_AGO, HOUR_AGO))
    cursor, runs = run_requested(instance, job, cursor)
    assert runs == []
    # A partition run again (a re-execution): its rows replaced by the same rows, history as is.
    key = sorted(instance.get_dynamic_partitions("churn_exports"))[1]
    assert job.execute_in_process(partition_key=key, instance=instance).success
    assert everything(warehouse) == before
    # D2 changed under the same name (C's change reverted): a new export of D2, which supersedes
    # the first; history rebuilt in date order.
    drop(landing_folder, D2, [row("A", 6, MTM, "No"), row("B", 21, ONE, "Yes"), row("C", 31, MTM, "No")],
         later=60)
    cursor, runs = run_requested(instance, job, cursor)
    assert [r.success for r in runs] == [True]
    keys = instance.get_dynamic_partitions("churn_exports")
    assert len(keys) == 4 and key in keys
    exports = query(warehouse, "SELECT export_date, superseded_by IS NOT NULL"
                               " FROM analytics.history_exports ORDER BY ALL")
    assert exports == [(D1, False), (D2, False), (D2, True), (D3, False)]
    assert [h for h in history(warehouse) if h[0] == "C"] == [
        ("C", 1, D1, D3, False, MTM, "No", 30, "change"),
        ("C", 1, D3, None, True, ONE, "No", 32, None),
    ]


def test_a_late_file_lands_in_date_order(landing_folder, instance, job, warehouse):
    drop(landing_folder, D1)
    drop(landing_folder, D3)
    cursor, runs = run_requested(instance, job)
    assert [r.success for r in runs] == [True, True]
    assert ("E", 1, D1, None, True, MTM, "No", 3, None) in history(warehouse)  # not yet missing
    drop(landing_folder, D2)
    _, runs = run_requested(instance, job, cursor)
    assert [r.success for r in runs] == [True]
    assert_hand_computed(warehouse)


def test_random_mode_refuses_before_anything_is_written(landing_folder, instance, job, warehouse,
                                                        monkeypatch):
    drop(landing_folder, D1)
    tick(instance)  # registered while a key was set
    monkeypatch.delenv(settings.PSEUDONYMIZATION_KEY_ENV)
    [key] = instance.get_dynamic_partitions("churn_exports")
    result = job.execute_in_process(partition_key=key, instance=instance, raise_on_error=False)
    assert not result.success
    message = failure(result)
    assert "CHURN_PSEUDONYMIZATION_KEY" in message and "openssl rand" in message
    tables = query(warehouse, "SELECT table_schema || '.' || table_name"
                              " FROM information_schema.tables")
    assert not any(t.startswith("landing.") or t.endswith("customer_history") for t in tables)


@pytest.mark.parametrize("bad, words", [
    ("CustomerID,Tenure\nC-A,5\n", "missing required columns"),  # a foreign schema
    (HEADER + "\n" + row("A", 6, MTM, "No") + '\nC-B,40,"Female,21\n', "cannot be read as CSV"),
    (HEADER + ",Export_ID\n" + row("A", 6, MTM, "No") + ",x\n",
     "columns named like those the landing load adds: Export_ID"),
], ids=["foreign-schema", "corrupt", "reserved-column"])
def test_a_bad_export_fails_its_partition_only_and_loads_once_fixed(
        bad, words, landing_folder, instance, job, warehouse):
    drop(landing_folder, D1)
    bad_file = drop(landing_folder, D2, text=bad)
    drop(landing_folder, D3)
    cursor, runs = run_requested(instance, job)
    assert [r.success for r in runs] == [True, False, True]
    message = failure(runs[1])
    assert words in message and str(bad_file) in message
    assert query(warehouse, "SELECT DISTINCT export_date FROM landing.export_rows"
                            " ORDER BY 1") == [(D1,), (D3,)]
    assert query(warehouse, "SELECT export_date FROM analytics.history_exports"
                            " ORDER BY 1") == [(D1,), (D3,)]
    # Not retried: one attempt.
    assert sum(e.event_type_value == "STEP_FAILURE" for e in runs[1].all_events) == 1
    drop(landing_folder, D2, later=60)  # fixed, dropped again: a new partition by content, placed by date
    _, runs = run_requested(instance, job, cursor)
    assert [r.success for r in runs] == [True]
    assert history(warehouse) == HISTORY
    assert events(warehouse) == EVENTS


# A run of the job in a child, paused at a point: killed there with SIGKILL by the test.
RUN_IN_CHILD = """
import os, sys, time, dagster as dg
from churn_platform.core import history, landing_load
point = os.environ["PAUSE_AT"]
def pausing(target, name):
    original = getattr(target, name)
    def paused(*args, **kwargs):
        result = original(*args, **kwargs)
        print("PAUSED", file=sys.stderr, flush=True)
        time.sleep(600)
        return result
    setattr(target, name, paused)
if point == "rows":  # the rows committed, history not begun
    pausing(landing_load, "load_rows")
elif point == "history":  # inside history's transaction, the typed rows written
    pausing(landing_load, "typed_rows")
else:  # history committed, the cohort tables not written
    pausing(history, "apply_export")
from churn_platform_tests.location import platform_defs
job = platform_defs(sys.argv[1], sys.argv[1]).resolve_job_def("landing_export_job")
with dg.instance_for_test() as instance:
    instance.add_dynamic_partitions("churn_exports", [sys.argv[2]])
    job.execute_in_process(partition_key=sys.argv[2], instance=instance)
"""


@pytest.mark.parametrize("point", ["rows", "history", "cohorts"])
def test_a_run_killed_anywhere_resumes_on_the_next_run(point, landing_folder, instance, job, warehouse):
    drop(landing_folder, D1)
    cursor, _ = run_requested(instance, job)
    drop(landing_folder, D2)
    result = tick(instance, cursor)
    [request] = result.run_requests
    child = subprocess.Popen(
        [sys.executable, "-c", RUN_IN_CHILD, str(warehouse), request.partition_key],
        stderr=subprocess.PIPE, text=True, start_new_session=True,
        env={**os.environ, "PAUSE_AT": point},
    )
    try:
        for output in child.stderr:
            if "PAUSED" in output:
                break
        else:
            pytest.fail("the child run never paused")
        os.killpg(child.pid, signal.SIGKILL)
    finally:
        child.kill()
        child.wait()
    assert child.returncode == -signal.SIGKILL
    applied = query(warehouse, "SELECT export_date FROM analytics.history_exports ORDER BY 1")
    assert applied == ([(D1,), (D2,)] if point == "cohorts" else [(D1,)])
    # The next run of the partition completes: no period lost or doubled.
    assert job.execute_in_process(partition_key=request.partition_key, instance=instance).success
    drop(landing_folder, D3)
    _, runs = run_requested(instance, job, result.cursor)
    assert [r.success for r in runs] == [True]
    assert history(warehouse) == HISTORY
    assert events(warehouse) == EVENTS
    assert retention(warehouse) == RETENTION
    assert query(warehouse, "SELECT export_date, count(*) FROM landing.export_rows"
                            " GROUP BY 1 ORDER BY 1") == [(D1, 4), (D2, 3), (D3, 4)]
