"""Asset checks: counted with SQL inside DuckDB, reported with numbers and a few source_rows.

In a run they read the run's candidates (core/publish.py), before anything is published: `t` maps
each published name to the table read; without it, the published tables are read.

Metadata never carries a customer id: offending rows are named by `source_row`, which leads back
to the raw row in staging for whoever may read staging. Fields the source lacks (per its mapping)
are reported as absent, not checked: they hold a default or NULL by design.
"""

import os

import dagster as dg

from churn_platform.core import check_rules as rules_of
from churn_platform.core import settings
from churn_platform.core.check_rules import DRIFT_MIN_HISTORY, DRIFT_STDDEVS
from churn_platform.core.files import absolute
from churn_platform.core.mapping import SourceMapping
from churn_platform.core.publish import Tables, split_parity
from churn_platform.core.tables import (
    ANALYTICS_TABLE,
    METRICS_TABLE,
    REJECTED_TABLE,
    STAGING_TABLE,
)
from churn_platform.core.transform import cell
from churn_platform.defs.elt.assets import ANALYTICS, METRICS, REJECTED, STAGING
from churn_platform.defs.resources import ChurnSource
from churn_platform.defs.warehouse_io import WarehouseResource

SAMPLE_ROWS = 5


def _absent_note(mapping: SourceMapping) -> dict:
    return {"absent fields (not checked)": ", ".join(mapping.absent)} if mapping.absent else {}


def _violations(conn, table: str, rules: dict[str, str]) -> tuple[bool, dict]:
    """Count the rows breaking each rule (a SQL condition) and name a few of them."""
    if not rules:
        return True, {"violations": 0}
    counts = conn.execute(
        "SELECT " + ", ".join(f"count(*) FILTER (WHERE {rule})" for rule in rules.values())
        + f" FROM {table}"
    ).fetchone()
    metadata = {}
    for (name, rule), count in zip(rules.items(), counts):
        if count:
            rows = conn.execute(
                f"SELECT source_row FROM {table} WHERE {rule} ORDER BY source_row LIMIT {SAMPLE_ROWS}"
            ).fetchall()
            metadata[f"{name}: rows"] = count
            metadata[f"{name}: first source_rows"] = ", ".join(str(r[0]) for r in rows)
    return not metadata, metadata or {"violations": 0}


def row_count_parity(conn, mapping: SourceMapping,
    t: Tables = Tables()) -> dg.AssetCheckResult:
    """Every staging row is in analytics or in rejected_rows, exactly once."""
    p = split_parity(conn, t[STAGING_TABLE], t[ANALYTICS_TABLE], t[REJECTED_TABLE], SAMPLE_ROWS)
    staging, analytics, rejected, unaccounted = p.staging, p.analytics, p.rejected, p.unaccounted
    return dg.AssetCheckResult(
        passed=rules_of.parity_passed(staging, analytics, rejected, unaccounted),
        metadata={
            "staging_rows": staging,
            "analytics_rows": analytics,
            "rejected_rows": rejected,
            "difference": staging - analytics - rejected,
            "unaccounted source_rows": ", ".join(map(str, unaccounted)) or "none",
        },
    )


def pseudonyms_unique_and_present(conn, mapping: SourceMapping,
    t: Tables = Tables()) -> dg.AssetCheckResult:
    """Every row has a pseudonym, and no pseudonym stands for two different customers."""
    customer_id = cell(mapping.field("customer_id"))
    # Only a pseudonym on two or more rows can stand for two customers: those few rows alone
    # are joined back to staging's ids.
    missing, collisions = conn.execute(
        f"""
        WITH shared AS (
            SELECT anonymized_customer_id, source_row
            FROM {t[ANALYTICS_TABLE]}
            QUALIFY count(*) OVER (PARTITION BY anonymized_customer_id) > 1)
        SELECT (SELECT count(*) FROM {t[ANALYTICS_TABLE]} WHERE anonymized_customer_id IS NULL),
               (SELECT count(*) FROM (
                    SELECT a.anonymized_customer_id
                    FROM shared a
                    JOIN (SELECT source_row, {customer_id} AS customer_id
                          FROM {t[STAGING_TABLE]}) s USING (source_row)
                    GROUP BY 1 HAVING count(DISTINCT s.customer_id) > 1))
        """
    ).fetchone()
    return dg.AssetCheckResult(
        passed=rules_of.pseudonyms_passed(missing, collisions),
        metadata={"missing pseudonyms": missing, "pseudonyms shared by customers": collisions},
    )


def no_nulls_in_cleaned_columns(conn, mapping: SourceMapping,
    t: Tables = Tables()) -> dg.AssetCheckResult:
    """No NULL is left in any cleaned or derived column."""
    columns = [
        d[0] for d in conn.execute(f"SELECT * FROM {t[ANALYTICS_TABLE]} LIMIT 0").description
    ]
    passed, metadata = _violations(
        conn, t[ANALYTICS_TABLE], rules_of.null_rules(columns, mapping.absent)
    )
    return dg.AssetCheckResult(passed=passed, metadata={**metadata, **_absent_note(mapping)})


def categories_accepted(conn, mapping: SourceMapping,
    t: Tables = Tables()) -> dg.AssetCheckResult:
    """Categories and bands hold only accepted values."""
    rules = rules_of.category_rules(mapping.fields, mapping.absent)
    passed, metadata = _violations(conn, t[ANALYTICS_TABLE], rules)
    return dg.AssetCheckResult(passed=passed, metadata={**metadata, **_absent_note(mapping)})


def numeric_ranges(conn, mapping: SourceMapping,
    t: Tables = Tables()) -> dg.AssetCheckResult:
    """Numbers within their ranges (age, tenure, charges)."""
    rules = rules_of.range_rules(mapping.fields)
    passed, metadata = _violations(conn, t[ANALYTICS_TABLE], rules)
    ranges = conn.execute(
        "SELECT " + ", ".join(f"min({c}), max({c})" for c in rules) + f" FROM {t[ANALYTICS_TABLE]}"
    ).fetchone() if rules else ()
    for i, column in enumerate(rules):
        metadata[f"{column}: observed range"] = f"{ranges[2 * i]} .. {ranges[2 * i + 1]}"
    return dg.AssetCheckResult(passed=passed, metadata={**metadata, **_absent_note(mapping)})


def rejections_explained(conn, mapping: SourceMapping,
    t: Tables = Tables()) -> dg.AssetCheckResult:
    """Every rejected row names its column and reason, once."""
    unexplained, repeated = conn.execute(
        f"SELECT count(*) FILTER (WHERE column_name IS NULL OR reason IS NULL),"
        f" count(*) - count(DISTINCT source_row) FROM {t[REJECTED_TABLE]}"
    ).fetchone()
    return dg.AssetCheckResult(
        passed=rules_of.rejections_passed(unexplained, repeated),
        metadata={"rows without reason": unexplained, "source_rows rejected twice": repeated},
    )


# The checks of the split of staging, as one step: one connection, one mapping read, and one
# step's events instead of six (a step costs Dagster about 0.07 s however small its query).
SPLIT_CHECKS = {
    # On rejected_rows, the asset that completes the split: it reads staging and analytics too.
    row_count_parity: dg.AssetCheckSpec(
        "row_count_parity", asset=REJECTED, additional_deps=[STAGING, ANALYTICS], blocking=True,
        description=row_count_parity.__doc__),
    pseudonyms_unique_and_present: dg.AssetCheckSpec(
        "pseudonyms_unique_and_present", asset=ANALYTICS, additional_deps=[STAGING],
        description=pseudonyms_unique_and_present.__doc__),
    no_nulls_in_cleaned_columns: dg.AssetCheckSpec(
        "no_nulls_in_cleaned_columns", asset=ANALYTICS,
        description=no_nulls_in_cleaned_columns.__doc__),
    categories_accepted: dg.AssetCheckSpec(
        "categories_accepted", asset=ANALYTICS, description=categories_accepted.__doc__),
    numeric_ranges: dg.AssetCheckSpec(
        "numeric_ranges", asset=ANALYTICS, description=numeric_ranges.__doc__),
    rejections_explained: dg.AssetCheckSpec(
        "rejections_explained", asset=REJECTED, description=rejections_explained.__doc__),
}


HELD_BACK = (
    "this blocking check failed on what the run wrote ({}): analytics/published does not run,"
    " nothing of this run is published, and readers keep the previous tables. The candidates"
    " stay for inspection until the next run."
)


@dg.multi_asset_check(specs=list(SPLIT_CHECKS.values()), can_subset=True)
def split_checks(
    context: dg.AssetCheckExecutionContext, warehouse: WarehouseResource, churn_source: dg.ResourceParam[ChurnSource]
):
    """The checks selected (all of them in a job run), parity first: it is the blocking one."""
    mapping = churn_source.mapping()
    with warehouse.get_connection() as conn:
        t = Tables({name: warehouse.table(conn, name)
                    for name in (STAGING_TABLE, ANALYTICS_TABLE, REJECTED_TABLE)})
        for check, spec in SPLIT_CHECKS.items():
            if spec.key in context.selected_asset_check_keys:
                result = check(conn, mapping, t)
                metadata = dict(result.metadata)
                if spec.blocking and not result.passed:
                    metadata["held back"] = HELD_BACK.format(", ".join(t.values()))
                    context.log.error(f"{spec.name}: {metadata['held back']}")
                yield dg.AssetCheckResult(
                    asset_key=spec.asset_key, check_name=spec.name, passed=result.passed,
                    metadata=metadata,
                )


@dg.asset_check(
    asset=METRICS,
    description=(
        f"Churn rate within {DRIFT_STDDEVS:g} standard deviations of the earlier snapshots of the"
        " same source file (the original pipeline's alert rule); another source's history is not"
        " compared. In landing mode: of the earlier exports, one snapshot each. Warns, never"
        " blocks."
    ),
)
def churn_rate_drift(warehouse: WarehouseResource) -> dg.AssetCheckResult:
    # Only the latest snapshot's own source: a CSV of your own is not judged by the sample's rate.
    # In landing mode the source is the landing folder: each earlier export counts once (its
    # latest snapshot) and the current export's own re-runs not at all (the same rows again).
    folder = settings.landing_dir()
    folder = None if folder is None else os.path.join(absolute(folder), "")
    with warehouse.get_connection() as conn:
        source, current, mean, stddev, history, other_sources = conn.execute(
            f"""
            WITH snapshots AS ({warehouse.history(conn, METRICS_TABLE, "snapshot_id")}),
            keyed AS (
                SELECT churn_rate_percent, snapshot_at, source_file,
                       CASE WHEN starts_with(source_file, $folder) THEN $folder
                            ELSE source_file END AS source,
                       row_number() OVER (PARTITION BY source_file
                                          ORDER BY snapshot_at DESC) AS per_file
                FROM snapshots),
            latest AS (
                SELECT source_file, source FROM keyed ORDER BY snapshot_at DESC LIMIT 1),
            ordered AS (
                SELECT churn_rate_percent,
                       source IS NOT DISTINCT FROM (SELECT source FROM latest) AS same,
                       CASE WHEN source IS NOT DISTINCT FROM $folder
                            THEN per_file = 1 AND source_file IS DISTINCT FROM
                                 (SELECT source_file FROM latest)
                            ELSE true END AS counted,
                       row_number() OVER (ORDER BY snapshot_at DESC) AS age
                FROM keyed)
            SELECT (SELECT source_file FROM latest),
                   any_value(churn_rate_percent) FILTER (WHERE age = 1),
                   avg(churn_rate_percent) FILTER (WHERE age > 1 AND same AND counted),
                   stddev_samp(churn_rate_percent) FILTER (WHERE age > 1 AND same AND counted),
                   count(*) FILTER (WHERE age > 1 AND same AND counted),
                   count(*) FILTER (WHERE NOT same)
            FROM ordered
            """, {"folder": folder}
        ).fetchone()
    metadata = {
        "churn_rate_percent": current,
        "source_file": source or "unknown",
        "earlier snapshots": history,
        "snapshots of other sources (not compared)": other_sources,
    }
    passed = rules_of.drift_passed(current, mean, stddev, history)
    if passed is None:
        metadata["note"] = (
            f"fewer than {DRIFT_MIN_HISTORY} earlier snapshots of this source: nothing to compare"
        )
        return dg.AssetCheckResult(
            passed=True, severity=dg.AssetCheckSeverity.WARN, metadata=metadata
        )
    metadata.update({"historical mean": round(mean, 2), "historical stddev": round(stddev, 2)})
    return dg.AssetCheckResult(
        passed=passed,
        severity=dg.AssetCheckSeverity.WARN,
        metadata=metadata,
    )


ELT_CHECKS = [split_checks, churn_rate_drift]
