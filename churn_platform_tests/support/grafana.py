"""Grafana's side of the dashboards, reproduced so tests can run every panel query for real.

No Grafana server can be installed on the build machines, so the tests expand each
query the way Grafana would (template variables, then the PostgreSQL data source's macros, as in
Grafana's pkg/tsdb/grafana-postgresql-datasource/macros.go), run it against PostgreSQL, and lint
the dashboard JSON and provisioning files statically.
"""

import json
import re
from collections.abc import Iterator, Mapping
from datetime import datetime, timezone
from decimal import Decimal
from pathlib import Path

import yaml

from churn_platform.core.settings import PROJECT_ROOT

GRAFANA_DIR = PROJECT_ROOT / "grafana"
DATASOURCE_TYPE = "grafana-postgresql-datasource"
SCHEMA_VERSIONS = (41, 42)
GRID_COLUMNS = 24

_MACRO = re.compile(r"\$([_a-zA-Z0-9]+)\(([^\)]*)\)")
_VARIABLE = re.compile(r"\$\{(\w+)(?::(\w+))?\}|\[\[(\w+)\]\]|\$(\w+)")
_TIME_COLUMN = re.compile(r'AS "time"|\$__time\(|\$__timeGroupAlias\(|\$__timeEpoch\(')
_INTERVAL = re.compile(r"^(\d+)(ms|s|m|h|d|w)$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


class MacroError(ValueError):
    """A macro Grafana would refuse: unknown, or missing its arguments."""


def _rfc3339(moment: datetime) -> str:
    """Go's time.RFC3339Nano in UTC: no trailing zeros in the fraction, 'Z' for the zone."""
    moment = moment.astimezone(timezone.utc)
    fraction = f".{moment.microsecond:06d}".rstrip("0") if moment.microsecond else ""
    return moment.strftime("%Y-%m-%dT%H:%M:%S") + fraction + "Z"


def _go_float(value: float) -> str:
    """Go's %v for a float64: the shortest digits, in exponent form from 1e6 up."""
    if abs(value) < 1e6:
        return str(int(value)) if float(value).is_integer() else repr(float(value))
    _, digits, exponent = Decimal(repr(value)).normalize().as_tuple()
    mantissa = "".join(map(str, digits))
    power = len(digits) - 1 + exponent
    return f"{mantissa[0]}{'.' + mantissa[1:] if len(mantissa) > 1 else ''}e+{power:02d}"


def _interval_seconds(text: str) -> float:
    match = _INTERVAL.match(text.strip().strip("'"))
    if not match:
        raise MacroError(f"error parsing interval {text}")
    return int(match.group(1)) * _UNIT_SECONDS[match.group(2)]


def _evaluate(name: str, args: list[str], time_from: datetime, time_to: datetime) -> str:
    column = args[0] if args and args[0] else None
    if name in ("__time", "__timeEpoch", "__timeFilter", "__unixEpochFilter") and column is None:
        raise MacroError(f"missing time column argument for macro {name}")
    if name == "__time":
        return f'{column} AS "time"'
    if name == "__timeEpoch":
        return f'extract(epoch from {column}) as "time"'
    if name == "__timeFilter":
        return f"{column} BETWEEN '{_rfc3339(time_from)}' AND '{_rfc3339(time_to)}'"
    if name == "__timeFrom":
        return f"'{_rfc3339(time_from)}'"
    if name == "__timeTo":
        return f"'{_rfc3339(time_to)}'"
    if name in ("__timeGroup", "__timeGroupAlias"):
        if len(args) < 2:
            raise MacroError(f"macro {name} needs time column and interval and optional fill value")
        seconds = _go_float(_interval_seconds(args[1]))
        grouped = f"floor(extract(epoch from {column})/{seconds})*{seconds}"
        return grouped + (' AS "time"' if name == "__timeGroupAlias" else "")
    if name == "__unixEpochFilter":
        start, end = int(time_from.timestamp()), int(time_to.timestamp())
        return f"{column} >= {start} AND {column} <= {end}"
    raise MacroError(f'unknown macro "{name}"')


def expand_macros(sql: str, time_from: datetime, time_to: datetime) -> str:
    """The SQL PostgreSQL receives from Grafana's PostgreSQL data source for this time range."""

    def replace(match: re.Match) -> str:
        name = match.group(1)
        # Grafana: $__timeGroup directly followed by ',' is the pre-5.3 form, which adds the alias.
        if name == "__timeGroup":
            end = sql.find(match.group(0)) + len(match.group(0))
            if sql[end:end + 1] == ",":
                name = "__timeGroupAlias"
        args = [arg.strip(" ") for arg in match.group(2).split(",")]
        return _evaluate(name, args, time_from, time_to)

    return _MACRO.sub(replace, sql)


def _sql_string(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def interpolate(sql: str, variables: Mapping[str, str | list[str]]) -> str:
    """Template variables as Grafana's SQL data sources insert them: raw, or quoted by format.

    `${var:sqlstring}` and `${var:singlequote}` quote each value (a multi-value variable becomes a
    comma-separated list); a plain `$var` inserts the value as it is. Macros (`$__...`) are left.
    """

    def replace(match: re.Match) -> str:
        name = match.group(1) or match.group(3) or match.group(4)
        if name.startswith("__") or name not in variables:
            return match.group(0)
        values = variables[name]
        values = values if isinstance(values, list) else [values]
        if match.group(2) in ("sqlstring", "singlequote"):
            return ",".join(_sql_string(v) for v in values)
        return ",".join(values)

    return _VARIABLE.sub(replace, sql)


def load_yaml(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


def provisioned_datasource_uid(grafana_dir: Path = GRAFANA_DIR) -> str:
    (source,) = [
        ds
        for f in sorted((grafana_dir / "provisioning" / "datasources").glob("*.yaml"))
        for ds in load_yaml(f)["datasources"]
    ]
    return source["uid"]


def dashboards(grafana_dir: Path = GRAFANA_DIR) -> dict[str, dict]:
    return {
        path.name: json.loads(path.read_text())
        for path in sorted((grafana_dir / "dashboards").glob("*.json"))
    }


def panels(dashboard: dict) -> Iterator[dict]:
    """Every panel, including those inside collapsed rows."""
    for panel in dashboard.get("panels", []):
        yield panel
        yield from panel.get("panels", [])


def lint_dashboard(dashboard: dict, datasource_uid: str) -> list[str]:
    """What Grafana would reject or render wrongly; an empty list when the dashboard is sound."""
    problems = []
    expected_source = {"type": DATASOURCE_TYPE, "uid": datasource_uid}
    if dashboard.get("schemaVersion") not in SCHEMA_VERSIONS:
        problems.append(f"schemaVersion {dashboard.get('schemaVersion')} not in {SCHEMA_VERSIONS}")
    for key in ("uid", "title"):
        if not dashboard.get(key):
            problems.append(f"dashboard without {key}")
    ids = [p.get("id") for p in panels(dashboard)]
    if len(ids) != len(set(ids)) or None in ids:
        problems.append(f"panel ids missing or repeated: {ids}")
    for panel in panels(dashboard):
        name = f"panel {panel.get('id')} ({panel.get('title')!r})"
        if not panel.get("title"):
            problems.append(f"{name}: no title")
        grid = panel.get("gridPos", {})
        if not (grid.get("x", -1) >= 0 and grid.get("w", 0) >= 1 and grid.get("h", 0) >= 1
                and grid["x"] + grid["w"] <= GRID_COLUMNS):
            problems.append(f"{name}: gridPos {grid} outside {GRID_COLUMNS} columns")
        if panel.get("type") == "row":
            continue
        if not panel.get("fieldConfig", {}).get("defaults", {}).get("unit"):
            problems.append(f"{name}: no unit")
        if panel.get("datasource") != expected_source:
            problems.append(
                f"{name}: datasource {panel.get('datasource')} is not {expected_source}")
        if not panel.get("targets"):
            problems.append(f"{name}: no query")
        for target in panel.get("targets", []):
            if target.get("datasource") != expected_source:
                problems.append(f"{name}: target datasource is not {expected_source}")
            if not target.get("rawSql") or not target.get("rawQuery"):
                problems.append(f"{name}: target {target.get('refId')} has no raw SQL")
            wants_series = panel.get("type") == "timeseries"
            if wants_series != (target.get("format") == "time_series"):
                problems.append(f"{name}: format {target.get('format')} for a {panel.get('type')}")
            if target.get("format") == "time_series" and not _TIME_COLUMN.search(
                target.get("rawSql", "")
            ):
                problems.append(f"{name}: time series query without a time column")
    for variable in dashboard.get("templating", {}).get("list", []):
        if variable.get("type") == "query" and variable.get("datasource") != expected_source:
            problems.append(f"variable {variable.get('name')}: datasource is not {expected_source}")
    return problems


def alert_rules(grafana_dir: Path = GRAFANA_DIR) -> list[dict]:
    return [
        rule
        for path in sorted((grafana_dir / "provisioning" / "alerting").glob("*.yaml"))
        for group in load_yaml(path).get("groups", [])
        for rule in group["rules"]
    ]


def rule_query(rule: dict) -> dict:
    """The data-source query the rule's condition reads (its threshold's input)."""
    condition = next(d for d in rule["data"] if d["refId"] == rule["condition"])
    return next(d for d in rule["data"] if d["refId"] == condition["model"]["expression"])


def threshold_fires(rule: dict, value: float) -> bool:
    """Grafana's threshold expression (the rule's condition) applied to the query's value."""
    condition = next(d for d in rule["data"] if d["refId"] == rule["condition"])
    evaluator = condition["model"]["conditions"][0]["evaluator"]
    kind, params = evaluator["type"], evaluator["params"]
    if kind == "gt":
        return value > params[0]
    if kind == "lt":
        return value < params[0]
    if kind == "within_range":
        return params[0] < value < params[1]
    if kind == "outside_range":
        return not params[0] <= value <= params[1]
    raise ValueError(f"unsupported threshold {kind}")
