"""The ELT assets: staging → analytics + rejected rows → churn by segment → quality metrics,
then `analytics/published`, which publishes them together.

Each asset returns a `SqlTable`; the warehouse IO manager runs it inside DuckDB and writes the
table atomically, as this run's candidate (core/publish.py). Asset keys are the DuckDB schema and
table.
"""

from datetime import timedelta

import dagster as dg
import duckdb

from churn_platform.core import publish, settings
from churn_platform.core.clock import utc_now
from churn_platform.core.errors import InputError
from churn_platform.core.latest_export import latest_export, staging_from_export
from churn_platform.core.mapping import SourceMapping
from churn_platform.core.quality import churn_by_segment_sql, data_quality_sql
from churn_platform.core.source import staging_table
from churn_platform.core.tables import SEGMENT_TABLE, STAGING_TABLE
from churn_platform.core.transform import analytics_sql, rejected_sql
from churn_platform.core.warehouse import SqlTable
from churn_platform.defs.failures import reported_as_failure
from churn_platform.defs.resources import ChurnSource
from churn_platform.defs.warehouse_io import PUBLISHED, WarehouseResource

STAGING = dg.AssetKey(["staging", "customer_churn"])
ANALYTICS = dg.AssetKey(["analytics", "customer_churn"])
REJECTED = dg.AssetKey(["analytics", "rejected_rows"])
SEGMENTS = dg.AssetKey(["analytics", "churn_by_segment"])
METRICS = dg.AssetKey(["analytics", "data_quality_metrics"])

OWNERS = ["team:churn-data"]

# The hourly schedule refreshes these; a quarter hour of grace before the UI calls them stale.
# Dagster's freshness daemon evaluates the policy: an asset never loaded is UNKNOWN (waiting for
# its first load), not failed.
HOURLY_FRESHNESS = dg.FreshnessPolicy.time_window(fail_window=timedelta(hours=1, minutes=15))


def _snapshot_params(context: dg.AssetExecutionContext) -> dict:
    # A re-executed run keeps its root run id, so it replaces its snapshot instead of adding one.
    return {
        "snapshot_id": context.run.root_run_id or context.run_id,
        "run_id": context.run_id,
        "snapshot_at": utc_now(),
    }


def _staged_mapping(churn_source: ChurnSource, warehouse: WarehouseResource) -> SourceMapping:
    """The configured source mapping, provided staging was loaded with it.

    The mapping names staging's columns; one changed since staging was loaded would read the wrong
    ones, so a run that refreshes analytics alone stops and says to load staging again.
    """
    mapping = churn_source.mapping()
    with warehouse.get_connection() as conn:
        try:
            row = conn.execute(
                f"SELECT source_mapping_sha256 FROM {warehouse.table(conn, STAGING_TABLE)} LIMIT 1"
            ).fetchone()
        except duckdb.Error:
            row = None  # staging loaded before source mappings existed
    if row is None or row[0] != mapping.sha256:
        raise dg.Failure(
            description=(
                f"{STAGING_TABLE} was loaded with another source mapping than {mapping.path}"
                f" (sha256 {row[0] if row else 'unknown'}, now {mapping.sha256});"
                " materialize staging/customer_churn again, or run the whole churn_elt_job"
            ),
            allow_retries=False,
        )
    return mapping


@dg.asset(
    key=STAGING,
    group_name="staging",
    kinds={"duckdb", "csv"},
    owners=OWNERS,
    description=(
        "The source CSV as it stood: every value as text, every column (also those the source"
        " mapping does not use), plus load time, file, row and the mapping's sha256. In landing"
        " mode (CHURN_LANDING_DIR), the latest loaded export's rows."
    ),
)
def staging_customer_churn(churn_source: dg.ResourceParam[ChurnSource],
                           warehouse: WarehouseResource) -> SqlTable:
    churn_source.pseudonymization_key()  # a weak key fails the run before anything is written
    with reported_as_failure():
        folder = settings.landing_dir()
        if folder is None:
            return staging_table(churn_source.csv_path, churn_source.mapping_path)
        # Landing mode: the latest loaded export, copied from landing.export_rows.
        with warehouse.get_connection() as conn:
            export = latest_export(conn)
            if export is None:
                raise InputError(
                    f"no export of the landing folder {folder} ({settings.LANDING_DIR_ENV}) is"
                    " loaded yet: in landing mode staging is the latest loaded export;"
                    " landing_sensor loads each export dropped there, then runs this job")
            return staging_from_export(conn, export)


@dg.asset(
    key=ANALYTICS,
    ins={"staging": dg.AssetIn(STAGING)},
    group_name="analytics",
    kinds={"duckdb", "sql"},
    owners=OWNERS,
    freshness_policy=HOURLY_FRESHNESS,
    description=(
        "Typed, imputed, pseudonymized customers with churn flag and tenure/charges bands."
        " No source CustomerID: `anonymized_customer_id` replaces it."
    ),
)
def analytics_customer_churn(
    context: dg.AssetExecutionContext,
    staging: SqlTable,
    churn_source: dg.ResourceParam[ChurnSource],
    warehouse: WarehouseResource,
) -> SqlTable:
    mapping = _staged_mapping(churn_source, warehouse)
    key = churn_source.pseudonymization_key()
    mode = "keyed HMAC-SHA256" if key else "random UUID per row and run"
    context.log.info(f"Pseudonymization: {mode}")
    sql, params = analytics_sql(staging.sql, key, utc_now(), mapping.fields)
    return SqlTable(sql, params, metadata={
        "pseudonymization": mode,
        "absent_fields": ", ".join(mapping.absent) or "none",
    })


@dg.asset(
    key=REJECTED,
    ins={"staging": dg.AssetIn(STAGING), "analytics": dg.AssetIn(ANALYTICS)},
    group_name="analytics",
    kinds={"duckdb", "sql"},
    owners=OWNERS,
    description=(
        "Source rows whose values cannot be typed, with the column, reason and offending value;"
        " the full raw row stays in staging at the same source_row. Found as the staging rows"
        " analytics did not accept."
    ),
)
def analytics_rejected_rows(
    staging: SqlTable, analytics: SqlTable, churn_source: dg.ResourceParam[ChurnSource],
    warehouse: WarehouseResource,
) -> SqlTable:
    mapping = _staged_mapping(churn_source, warehouse)
    return SqlTable(rejected_sql(staging.sql, analytics.sql, mapping.fields))


@dg.asset(
    key=SEGMENTS,
    ins={"analytics": dg.AssetIn(ANALYTICS)},
    deps=[REJECTED],  # after every row is accounted for: the blocking parity check is there
    group_name="analytics",
    kinds={"duckdb", "sql"},
    owners=OWNERS,
    description="Churn rate by contract type, tenure band and charges band; one snapshot per run.",
)
def churn_by_segment(context: dg.AssetExecutionContext, analytics: SqlTable) -> SqlTable:
    return SqlTable(
        churn_by_segment_sql(analytics.sql),
        _snapshot_params(context),
        history_key="snapshot_id",
    )


@dg.asset(
    key=METRICS,
    ins={
        "staging": dg.AssetIn(STAGING),
        "analytics": dg.AssetIn(ANALYTICS),
        "rejected": dg.AssetIn(REJECTED),
    },
    deps=[SEGMENTS],
    group_name="analytics",
    kinds={"duckdb", "sql"},
    owners=OWNERS,
    freshness_policy=HOURLY_FRESHNESS,
    description=(
        "Data-quality snapshot per run, kept as history: volumes, churn KPIs, missing cells per"
        " source column (NULL for fields the source lacks, named in absent_fields), duplicate"
        " customer ids."
    ),
)
def data_quality_metrics(
    context: dg.AssetExecutionContext,
    staging: SqlTable,
    analytics: SqlTable,
    rejected: SqlTable,
    warehouse: WarehouseResource,
    churn_source: dg.ResourceParam[ChurnSource],
) -> SqlTable:
    mapping = _staged_mapping(churn_source, warehouse)
    params = _snapshot_params(context)
    with warehouse.get_connection() as conn:
        by_contract = conn.execute(
            "SELECT segment, customers, churned, churn_rate_percent"
            f" FROM {warehouse.table(conn, SEGMENT_TABLE)}"
            " WHERE snapshot_id = $snapshot_id AND dimension = 'contract_type' ORDER BY segment",
            {"snapshot_id": params["snapshot_id"]},
        ).fetchall()
    preview = "\n".join(
        ["| contract type | customers | churned | churn rate % |", "|---|---|---|---|"]
        + [f"| {s} | {c} | {ch} | {r} |" for s, c, ch, r in by_contract]
    )
    return SqlTable(
        data_quality_sql(staging.sql, analytics.sql, rejected.sql, mapping.fields),
        params,
        history_key="snapshot_id",
        metadata={"churn_by_contract": dg.MetadataValue.md(preview)},
    )


@dg.asset(
    key=PUBLISHED,
    deps=[STAGING, ANALYTICS, REJECTED, SEGMENTS, METRICS],
    group_name="analytics",
    kinds={"duckdb"},
    owners=OWNERS,
    description=(
        "Publishes the run's tables together, in one transaction, once every blocking check on"
        " them passed (renames, no copy): until then readers see the previous set. Skipped when"
        " a blocking check fails: the candidates are held back."
    ),
)
def published_tables(context: dg.AssetExecutionContext,
                     warehouse: WarehouseResource) -> dg.MaterializeResult:
    with warehouse.get_connection() as conn, reported_as_failure():
        done = publish.publish(conn, publish.ELT_TABLES, warehouse.run_key,
                               publish.verify_split)
    if not done:
        context.log.warning("this run wrote no candidates: nothing to publish")
    return dg.MaterializeResult(metadata={
        "tables published": ", ".join(p.table for p in done) or "none",
        **{f"{p.table}: rows": p.row_count for p in done},
        "schemas": dg.MetadataValue.md("\n".join(
            f"- `{p.table}`: " + ", ".join(f"{name} {dtype}" for name, dtype in p.columns)
            for p in done)),
    })


ELT_ASSETS = [
    staging_customer_churn,
    analytics_customer_churn,
    analytics_rejected_rows,
    churn_by_segment,
    data_quality_metrics,
    published_tables,
]
