"""Every dashboard panel and alert rule, run against PostgreSQL holding a real export.

Queries are expanded as Grafana would expand them (variables, then macros) for the dashboards'
default range, the last 7 days, and must return what their panel type needs.
"""

from datetime import datetime, timedelta, timezone
from decimal import Decimal

import psycopg
import pytest

from churn_platform_tests.support import grafana

NUMBER = (int, float, Decimal)


def _run(dsn: str, sql: str) -> tuple[list[str], list[tuple]]:
    with psycopg.connect(dsn) as conn:
        cursor = conn.execute(sql)
        return [c.name for c in cursor.description], cursor.fetchall()


def _variables(dsn: str, dashboard: dict) -> dict:
    """Each query variable's values from PostgreSQL: its current value, or all of them."""
    values = {}
    for variable in dashboard.get("templating", {}).get("list", []):
        _, rows = _run(dsn, variable["query"])
        found = [r[0] for r in rows]
        assert found, f"variable {variable['name']} has no values"
        current = variable["current"]["value"]
        if variable.get("multi"):
            values[variable["name"]] = found
        else:
            assert current in found, f"variable {variable['name']}: default {current} not in {found}"
            values[variable["name"]] = current
    return values


def _panel_problems(panel: dict, columns: list[str], rows: list[tuple]) -> list[str]:
    if not rows:
        return ["no rows"]
    numeric = [c for i, c in enumerate(columns) if isinstance(rows[0][i], NUMBER) and c != "time"]
    kind = panel["type"]
    problems = []
    if kind == "timeseries":
        if "time" not in columns:
            problems.append(f"no time column in {columns}")
        else:
            times = [r[columns.index("time")] for r in rows]
            if times != sorted(times):
                problems.append("rows not sorted by time")
        if not numeric:
            problems.append(f"no numeric value column in {columns}")
    elif kind == "stat":
        if not numeric:
            problems.append(f"no numeric value in {columns}: {rows[0]}")
    elif kind == "barchart":
        x_field = panel["options"]["xField"]
        if x_field not in columns or not isinstance(rows[0][columns.index(x_field)], str):
            problems.append(f"no text column {x_field} in {columns}")
        if not numeric:
            problems.append(f"no numeric column in {columns}")
    return problems


# Landing mode's dashboard reads tables an ELT history has none of: test_history_export.py runs
# its panels on an export of real landing loads.
LANDING_DASHBOARDS = {"churn_history.json"}


@pytest.mark.parametrize("name", sorted(set(grafana.dashboards()) - LANDING_DASHBOARDS))
def test_every_panel_query_returns_what_its_panel_needs(name, elt_history, pg_dsn, monkeypatch):
    assert elt_history.export(monkeypatch, pg_dsn).success
    dashboard = grafana.dashboards()[name]
    variables = _variables(pg_dsn, dashboard)
    time_to = datetime.now(timezone.utc)
    time_from = time_to - timedelta(days=7)
    problems = {}
    for panel in grafana.panels(dashboard):
        for target in panel.get("targets", []):
            sql = grafana.expand_macros(
                grafana.interpolate(target["rawSql"], variables), time_from, time_to)
            assert "$" not in sql, f"unexpanded: {sql}"
            columns, rows = _run(pg_dsn, sql)
            if found := _panel_problems(panel, columns, rows):
                problems[panel["title"]] = found
    assert problems == {}


def _rule(uid: str) -> dict:
    return next(r for r in grafana.alert_rules() if r["uid"] == uid)


def _rule_value(dsn: str, rule: dict) -> float:
    now = datetime.now(timezone.utc)
    query = grafana.rule_query(rule)
    window = query["relativeTimeRange"]
    sql = grafana.expand_macros(query["model"]["rawSql"],
                                now - timedelta(seconds=window["from"]),
                                now - timedelta(seconds=window["to"]))
    columns, rows = _run(dsn, sql)
    assert columns == ["value"] and len(rows) == 1, (rule["uid"], columns, rows)
    return float(rows[0][0])


RUN_COLUMNS = ("source_run_id, root_run_id, job_name, status, started_at, ended_at,"
               " duration_seconds, step_retries, retry_number, updated_at")
KPI_COLUMNS = ("snapshot_id, source_run_id, snapshot_at, total_records, analytics_records,"
               " rejected_rows, churn_rate_percent, avg_monthly_charges, avg_tenure_months")
LATEST_KPI = "FROM churn_metrics.kpi_snapshots ORDER BY snapshot_at DESC LIMIT 1"
EVALUATION_COLUMNS = ("snapshot_id, source_run_id, snapshot_at, model_version, n_train,"
                      " positive_rate, roc_auc, pr_auc, brier, promoted, reason")
LATEST_EVALUATION = "FROM churn_metrics.churn_model_evaluations ORDER BY snapshot_at DESC LIMIT 1"

def _jump(snapshot_id: str, source_file: str) -> str:
    """A snapshot an hour after the latest, churn rate 5 points up, from the given source file
    (an SQL expression over the latest data-quality snapshot: `source_file` is the same one)."""
    return (
        f"INSERT INTO churn_metrics.kpi_snapshots ({KPI_COLUMNS})"
        f" SELECT '{snapshot_id}', '{snapshot_id}', snapshot_at + interval '1 hour', total_records,"
        " analytics_records, rejected_rows, churn_rate_percent + 5, avg_monthly_charges,"
        f" avg_tenure_months {LATEST_KPI};"
        " INSERT INTO churn_metrics.data_quality_snapshots (snapshot_id, source_run_id,"
        " snapshot_at, source_file, total_records, analytics_records, rejected_rows,"
        " duplicate_customer_ids, missing_cells)"
        f" SELECT '{snapshot_id}', '{snapshot_id}', snapshot_at + interval '1 hour',"
        f" {source_file}, total_records, analytics_records, rejected_rows, duplicate_customer_ids,"
        " missing_cells FROM churn_metrics.data_quality_snapshots ORDER BY snapshot_at DESC LIMIT 1"
    )


# One anomaly per rule, injected into a real export's history.
ANOMALIES = {
    "churn-elt-failing": (
        f"INSERT INTO churn_metrics.pipeline_runs ({RUN_COLUMNS})"
        " SELECT 'failed-' || i, 'failed-' || i, 'churn_elt_job', 'FAILURE',"
        " now() + i * interval '1 minute', now() + i * interval '1 minute', 2, 2, 0, now()"
        " FROM generate_series(1, 3) AS i"
    ),
    "churn-rate-drift": _jump("jump", source_file="source_file"),
    "churn-export-stale": (
        "UPDATE churn_metrics.exports SET exported_at = exported_at - interval '3 hours'"
    ),
    "churn-elt-slow": (
        f"INSERT INTO churn_metrics.pipeline_runs ({RUN_COLUMNS})"
        " SELECT 'slow', 'slow', 'churn_elt_job', 'SUCCESS', now() + interval '1 hour',"
        " now() + interval '1 hour', greatest(3 * avg(duration_seconds), 60), 0, 0, now()"
        " FROM churn_metrics.pipeline_runs WHERE job_name = 'churn_elt_job'"
    ),
    "churn-row-count-change": (
        f"INSERT INTO churn_metrics.kpi_snapshots ({KPI_COLUMNS})"
        " SELECT 'drop', 'drop', snapshot_at + interval '1 hour', round(total_records * 0.8),"
        " round(analytics_records * 0.8), rejected_rows, churn_rate_percent,"
        f" avg_monthly_charges, avg_tenure_months {LATEST_KPI}"
    ),
    "churn-model-refused": (
        f"INSERT INTO churn_metrics.churn_model_evaluations ({EVALUATION_COLUMNS})"
        " SELECT 'refused', 'refused', snapshot_at + interval '1 day', 'v-refused', n_train,"
        " positive_rate, 0.52, positive_rate, 0.25, false, 'refused: below the minimum 0.70'"
        f" {LATEST_EVALUATION}"
    ),
    "churn-model-auc-drop": (
        f"INSERT INTO churn_metrics.churn_model_evaluations ({EVALUATION_COLUMNS})"
        " SELECT 'worse', 'worse', snapshot_at + interval '1 day', 'v-worse', n_train,"
        " positive_rate, roc_auc - 0.06, pr_auc, brier, true, 'promoted: first on new data'"
        f" {LATEST_EVALUATION}"
    ),
}


def test_every_alert_rule_is_covered_by_an_anomaly():
    assert {r["uid"] for r in grafana.alert_rules()} == set(ANOMALIES)


def test_alert_rules_are_quiet_on_normal_history(elt_history, pg_dsn, monkeypatch):
    assert elt_history.export(monkeypatch, pg_dsn).success
    values = {r["uid"]: _rule_value(pg_dsn, r) for r in grafana.alert_rules()}
    assert {uid for uid, v in values.items() if grafana.threshold_fires(_rule(uid), v)} == set()


@pytest.mark.parametrize("uid", sorted(ANOMALIES))
def test_alert_rule_fires_on_its_anomaly(uid, elt_history, pg_dsn, monkeypatch):
    assert elt_history.export(monkeypatch, pg_dsn).success
    rule = _rule(uid)
    assert not grafana.threshold_fires(rule, _rule_value(pg_dsn, rule))
    with psycopg.connect(pg_dsn) as conn:
        conn.execute(ANOMALIES[uid])
    assert grafana.threshold_fires(rule, _rule_value(pg_dsn, rule))


def test_churn_rate_drift_alert_does_not_judge_another_source_by_this_history(
    elt_history, pg_dsn, monkeypatch
):
    """Your own CSV after the sample's history: the same jump from another file fires nothing."""
    assert elt_history.export(monkeypatch, pg_dsn).success
    rule = _rule("churn-rate-drift")
    with psycopg.connect(pg_dsn) as conn:
        conn.execute(_jump("own-csv", source_file="'/data/crm_export.csv'"))
    assert not grafana.threshold_fires(rule, _rule_value(pg_dsn, rule))


def test_a_small_roc_auc_drop_or_a_later_promotion_stays_quiet(elt_history, pg_dsn, monkeypatch):
    """The other side of the model rules: 0.04 lower is no alert, nor a refusal followed by a
    promotion."""
    assert elt_history.export(monkeypatch, pg_dsn).success
    drop, refused = _rule("churn-model-auc-drop"), _rule("churn-model-refused")
    with psycopg.connect(pg_dsn) as conn:
        conn.execute(ANOMALIES["churn-model-auc-drop"].replace("0.06", "0.04"))
    assert 0.039 < _rule_value(pg_dsn, drop) < 0.041
    assert not grafana.threshold_fires(drop, _rule_value(pg_dsn, drop))
    with psycopg.connect(pg_dsn) as conn:
        conn.execute(ANOMALIES["churn-model-refused"])
    assert grafana.threshold_fires(refused, _rule_value(pg_dsn, refused))
    with psycopg.connect(pg_dsn) as conn:
        conn.execute(ANOMALIES["churn-model-auc-drop"].replace("'worse'", "'later'")
                     .replace("interval '1 day'", "interval '2 days'").replace("0.06", "0"))
    assert not grafana.threshold_fires(refused, _rule_value(pg_dsn, refused))
