"""SQL for the per-run snapshots: data-quality metrics and churn by segment, kept as history.

Each snapshot carries `snapshot_id`: the root run id, so a retried or re-executed run replaces its
own snapshot instead of adding a second one.
"""

from churn_platform.core.fields import FIELDS, SEGMENT_DIMENSIONS, Field
from churn_platform.core.transform import cell, is_missing
from churn_platform.core.warehouse import quote_literal

SNAPSHOT_COLUMNS = """
    $snapshot_id::VARCHAR AS snapshot_id,
    $run_id::VARCHAR AS run_id,
    $snapshot_at::TIMESTAMP AS snapshot_at"""


def data_quality_sql(staging: str, analytics: str, rejected: str,
                     fields: tuple[Field, ...] = FIELDS) -> str:
    """One row: volumes, KPIs, missing cells per source column, duplicate ids.

    A field the source lacks has no missing count (NULL) and is named in `absent_fields`.
    """
    missing = ",\n".join(
        f"CAST(NULL AS BIGINT) AS missing_{f.name}" if f.absent
        else f"count(*) FILTER (WHERE {is_missing(f)}) AS missing_{f.name}"
        for f in fields
    )
    absent = ", ".join(f.name for f in fields if f.absent)
    customer_id = cell(next(f for f in fields if f.kind == "id"))
    return f"""
        SELECT {SNAPSHOT_COLUMNS},
               src.source_file,
               src.total_records,
               kpi.analytics_records,
               (SELECT count(*) FROM ({rejected})) AS rejected_rows,
               kpi.churn_rate_percent,
               kpi.avg_monthly_charges,
               kpi.avg_tenure_months,
               ids.duplicate_customer_ids,
               {", ".join(f"src.missing_{f.name}" for f in fields)},
               {quote_literal(absent)} AS absent_fields
        FROM (SELECT any_value(source_file) AS source_file,
                     count(*) AS total_records,
                     {missing}
              FROM ({staging})) AS src,
             -- Apart: beside the other aggregates, DISTINCT would make DuckDB buffer all of staging.
             (SELECT count(customer_id) - count(DISTINCT customer_id) AS duplicate_customer_ids
              FROM (SELECT {customer_id} AS customer_id FROM ({staging}))) AS ids,
             (SELECT count(*) AS analytics_records,
                     round(100 * avg(churn_flag), 2) AS churn_rate_percent,
                     round(avg(monthly_charges), 2) AS avg_monthly_charges,
                     round(avg(tenure), 2) AS avg_tenure_months
              FROM ({analytics})) AS kpi
    """


def churn_by_segment_sql(analytics: str) -> str:
    """Customers, churned and churn rate for every segment of every dimension, one row each."""
    return f"""
        SELECT {SNAPSHOT_COLUMNS},
               dimension,
               segment,
               count(*) AS customers,
               sum(churn_flag) AS churned,
               round(100 * avg(churn_flag), 2) AS churn_rate_percent
        FROM (UNPIVOT (SELECT {", ".join(SEGMENT_DIMENSIONS)}, churn_flag FROM ({analytics}))
              ON {", ".join(SEGMENT_DIMENSIONS)} INTO NAME dimension VALUE segment)
        GROUP BY dimension, segment
        ORDER BY dimension, segment
    """
