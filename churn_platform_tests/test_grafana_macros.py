"""Grafana's macro and variable expansion, as the PostgreSQL data source does it."""

from datetime import datetime, timezone

import pytest

from churn_platform_tests.support import grafana
from churn_platform_tests.support.grafana import MacroError, expand_macros, interpolate

FROM = datetime(2025, 1, 2, 3, 4, 5, tzinfo=timezone.utc)
TO = datetime(2025, 1, 9, 3, 4, 5, 250000, tzinfo=timezone.utc)


@pytest.mark.parametrize("sql, expected", [
    ("$__timeFilter(snapshot_at)",
     "snapshot_at BETWEEN '2025-01-02T03:04:05Z' AND '2025-01-09T03:04:05.25Z'"),
    ("$__timeFrom() < $__timeTo()", "'2025-01-02T03:04:05Z' < '2025-01-09T03:04:05.25Z'"),
    ("$__time(started_at)", 'started_at AS "time"'),
    ("$__timeEpoch(t)", 'extract(epoch from t) as "time"'),
    ("SELECT $__timeGroup(t, '5m') AS x", "SELECT floor(extract(epoch from t)/300)*300 AS x"),
    ("SELECT $__timeGroup(t,'1h'), v", 'SELECT floor(extract(epoch from t)/3600)*3600 AS "time", v'),
    ("$__timeGroupAlias(t, '1d')", 'floor(extract(epoch from t)/86400)*86400 AS "time"'),
    ("$__timeGroupAlias(t, '500ms')", 'floor(extract(epoch from t)/0.5)*0.5 AS "time"'),
    ("$__timeGroupAlias(t, '2w')", 'floor(extract(epoch from t)/1.2096e+06)*1.2096e+06 AS "time"'),
    ("$__unixEpochFilter(ts)", "ts >= 1735787045 AND ts <= 1736391845"),
    ("SELECT 1", "SELECT 1"),
])
def test_macros_expand_as_grafana_does(sql, expected):
    assert expand_macros(sql, FROM, TO) == expected


@pytest.mark.parametrize("sql", ["$__nope(x)", "$__timeFilter()", "$__timeGroup(t)",
                                 "$__timeGroup(t, 'soon')"])
def test_bad_macros_are_refused(sql):
    with pytest.raises(MacroError):
        expand_macros(sql, FROM, TO)


def test_variables_are_inserted_raw_or_quoted_by_format():
    variables = {"dimension": "contract_type", "column": ["age", "o'brien"]}
    assert interpolate("d = ${dimension:sqlstring}", variables) == "d = 'contract_type'"
    assert interpolate("c IN (${column:sqlstring})", variables) == "c IN ('age','o''brien')"
    assert interpolate("$dimension / [[dimension]] / ${dimension}", variables) == (
        "contract_type / contract_type / contract_type")
    assert interpolate("$__timeFilter(t) AND $unknown", variables) == "$__timeFilter(t) AND $unknown"


@pytest.mark.parametrize("evaluator, value, fires", [
    ({"type": "gt", "params": [2]}, 2, False), ({"type": "gt", "params": [2]}, 2.5, True),
    ({"type": "lt", "params": [1]}, 0, True), ({"type": "within_range", "params": [1, 3]}, 2, True),
    ({"type": "outside_range", "params": [1, 3]}, 2, False),
    ({"type": "outside_range", "params": [1, 3]}, 4, True),
])
def test_threshold_condition_as_grafana_evaluates_it(evaluator, value, fires):
    rule = {"condition": "C", "data": [
        {"refId": "A", "model": {}},
        {"refId": "C", "model": {"expression": "A", "conditions": [{"evaluator": evaluator}]}},
    ]}
    assert grafana.rule_query(rule)["refId"] == "A"
    assert grafana.threshold_fires(rule, value) is fires
