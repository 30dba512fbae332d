"""Static lint of the Grafana files: what Grafana would reject, or render wrongly, fails here."""

import copy
import re

import pytest

from churn_platform_tests.support import grafana
from churn_platform_tests.support.grafana import GRAFANA_DIR, load_yaml

PROVISIONING = GRAFANA_DIR / "provisioning"
ENV_PLACEHOLDER = re.compile(r"^\$\{[A-Z][A-Z0-9_]*\}$")


def test_datasource_is_the_builtin_postgresql_with_credentials_from_the_environment():
    (source,) = load_yaml(PROVISIONING / "datasources" / "churn_metrics.yaml")["datasources"]
    assert source["type"] == grafana.DATASOURCE_TYPE
    assert source["uid"] == grafana.provisioned_datasource_uid() == "churn-metrics-pg"
    for value in (source["url"], source["user"], source["jsonData"]["database"],
                  source["secureJsonData"]["password"]):
        assert ENV_PLACEHOLDER.match(value), value
    assert "password" not in source and "database" not in source


def test_dashboard_provider_loads_the_dashboards_folder():
    (provider,) = load_yaml(PROVISIONING / "dashboards" / "churn.yaml")["providers"]
    assert provider["type"] == "file"
    assert provider["options"]["path"]
    assert set(grafana.dashboards()) == {
        "churn_overview.json", "churn_risk.json", "data_quality.json", "pipeline_health.json",
        "churn_history.json"}


@pytest.mark.parametrize("name", sorted(grafana.dashboards()))
def test_dashboard_lints_clean(name):
    dashboard = grafana.dashboards()[name]
    assert grafana.lint_dashboard(dashboard, grafana.provisioned_datasource_uid()) == []


def test_lint_catches_what_grafana_would_get_wrong():
    dashboard = copy.deepcopy(grafana.dashboards()["churn_overview.json"])
    first, second, series = dashboard["panels"][0], dashboard["panels"][1], dashboard["panels"][4]
    second["id"] = first["id"]
    first["gridPos"] = {"x": 20, "y": 0, "w": 6, "h": 4}
    series["targets"][0]["rawSql"] = "SELECT snapshot_at, churn_rate_percent FROM t"
    del dashboard["panels"][2]["fieldConfig"]["defaults"]["unit"]
    dashboard["panels"][3]["datasource"] = {"type": "postgres", "uid": "other"}
    dashboard["schemaVersion"] = 16
    problems = "\n".join(grafana.lint_dashboard(dashboard, grafana.provisioned_datasource_uid()))
    for expected in ("repeated", "outside 24 columns", "without a time column", "no unit",
                     "datasource", "schemaVersion 16"):
        assert expected in problems


def test_alerting_rules_contact_point_and_policy_fit_together():
    rules = grafana.alert_rules()
    uid = grafana.provisioned_datasource_uid()
    assert {r["labels"]["severity"] for r in rules} == {"critical", "warning"}
    assert len({r["uid"] for r in rules}) == len(rules) == 7
    for rule in rules:
        query = grafana.rule_query(rule)
        assert query["datasourceUid"] == uid and query["model"]["rawSql"].strip()
        assert {d["datasourceUid"] for d in rule["data"]} <= {uid, "__expr__"}
    (contact,) = load_yaml(PROVISIONING / "alerting" / "contact_points.yaml")["contactPoints"]
    assert ENV_PLACEHOLDER.match(contact["receivers"][0]["settings"]["url"])
    (policy,) = load_yaml(PROVISIONING / "alerting" / "policies.yaml")["policies"]
    receivers = {policy["receiver"], *(route["receiver"] for route in policy["routes"])}
    assert receivers == {contact["name"]}
    routed = {m[2] for route in policy["routes"] for m in route["object_matchers"]}
    assert routed == {"critical", "warning"}
