"""The exports as Dagster sees them: one dynamic partition per export, and the export's file.

`landing/export_file` vouches for the file (found by content, hash checked) and records what it
is; `landing_export_load` then loads it (core/landing_load.py): its raw rows into its partition of
`landing.export_rows`, then customer history, churn events and the cohort tables. The history
assets are partitioned like the exports: a partition's materialization is the table as it stood
once that export was applied.
"""

import dagster as dg

from churn_platform.core import landing, landing_load, settings, tables
from churn_platform.core.errors import InputError
from churn_platform.core.latest_export import latest_export
from churn_platform.defs.elt.assets import OWNERS
from churn_platform.defs.failures import reported_as_failure
from churn_platform.defs.resources import ChurnSource
from churn_platform.defs.runs import RETRY_POLICY, WAREHOUSE_TAG
from churn_platform.defs.warehouse_io import WarehouseResource

EXPORTS_PARTITIONS = dg.DynamicPartitionsDefinition(name="churn_exports")
EXPORT_FILE = dg.AssetKey(["landing", "export_file"])
EXPORT_ROWS = dg.AssetKey(["landing", "export_rows"])
CUSTOMER_HISTORY = dg.AssetKey(["analytics", "customer_history"])
CHURN_EVENTS = dg.AssetKey(["analytics", "churn_events"])
RETENTION = dg.AssetKey(["analytics", "retention_by_cohort"])
MONTHLY_CHURN = dg.AssetKey(["analytics", "monthly_churn"])
# On export_rows' materialization: true when, once loaded, this export is the latest loaded one.
LATEST_EXPORT_ENTRY = "latest_export"


@dg.asset(
    key=EXPORT_FILE,
    partitions_def=EXPORTS_PARTITIONS,
    group_name="landing",
    kinds={"csv"},
    owners=OWNERS,
    description=(
        "One export file of the landing folder (CHURN_LANDING_DIR) per partition: found by its"
        " content, its SHA-256 checked, its date and where the date came from recorded."
    ),
)
def landing_export_file(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
    with reported_as_failure():
        folder = settings.landing_dir()
        if folder is None:
            raise InputError(f"{settings.LANDING_DIR_ENV} is not set: no landing folder to read")
        export = landing.locate(folder, context.partition_key)
    return dg.MaterializeResult(metadata={
        "file": export.name,
        "sha256": export.sha256,
        "size_bytes": export.size,
        "export_date": export.export_date.isoformat(),
        "date_from": export.date_source,
        "arrived_at": export.arrived_at.isoformat(),
    })


def _spec(key: dg.AssetKey, description: str, deps: list[dg.AssetKey]) -> dg.AssetSpec:
    return dg.AssetSpec(key, deps=deps, description=description, partitions_def=EXPORTS_PARTITIONS,
                        group_name=key.path[0],
                        kinds={"duckdb", "sql"}, owners=OWNERS, skippable=False)


@dg.multi_asset(
    specs=[
        _spec(EXPORT_ROWS, "Every export's rows as they stood in its file: every value as text,"
              " every column, plus export_id (the partition key), export_date, source_row and load"
              " time. A load replaces its own export's rows only, in one transaction.", [EXPORT_FILE]),
        _spec(CUSTOMER_HISTORY, "Type-2 history per customer (keyed pseudonym): one row per period"
              " in which contract, internet service, tech support, charges band, tenure band and"
              " churn stayed the same (valid_from, valid_to exclusive, is_current, lifecycle).",
              [EXPORT_ROWS]),
        _spec(CHURN_EVENTS, "One row per churn: churn turned Yes (churn_flag), Yes at first sight,"
              " or absent from CHURN_MISSING_EXPORTS_FOR_CHURN consecutive exports (missing);"
              " event and detection dates, tenure and contract then.", [CUSTOMER_HISTORY]),
        _spec(RETENTION, "Retention by cohort (month a customer started, from tenure at first"
              " sight) per calendar month with exports: customers, retained, retention %.",
              [CUSTOMER_HISTORY]),
        _spec(MONTHLY_CHURN, "Churn events per calendar month of their event date, by rule.",
              [CHURN_EVENTS]),
    ],
    name="landing_export_load",
    can_subset=False,
)
def landing_export_load(context: dg.AssetExecutionContext, warehouse: WarehouseResource,
                        churn_source: dg.ResourceParam[ChurnSource]):
    with reported_as_failure():
        landing.require_stable_pseudonyms()  # before anything is read or written
    key = churn_source.pseudonymization_key()
    mapping = churn_source.mapping()
    with reported_as_failure():
        folder = settings.landing_dir()
        if folder is None:
            raise InputError(f"{settings.LANDING_DIR_ENV} is not set: no landing folder to read")
        export = landing.locate(folder, context.partition_key)
        with warehouse.get_connection() as connection:
            loaded = landing_load.load_export(connection, export, mapping, key,
                                              settings.missing_exports_for_churn())
            # What latest_export_sensor reads: whether the ELT should now follow this export.
            latest = latest_export(connection)
            counts = {
                table: connection.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
                for table in (tables.HISTORY_TABLE, tables.EVENTS_TABLE,
                              tables.RETENTION_TABLE, tables.MONTHLY_CHURN_TABLE)
            }
    context.log.info(f"export {export.partition_key}: {loaded.rows} rows, history {loaded.history}")
    yield dg.MaterializeResult(asset_key=EXPORT_ROWS, metadata={
        "dagster/row_count": loaded.rows, "file": export.name, "sha256": export.sha256,
        "export_date": export.export_date.isoformat(),
        LATEST_EXPORT_ENTRY: latest is not None and latest.key == export.partition_key})
    yield dg.MaterializeResult(asset_key=CUSTOMER_HISTORY, metadata={
        "dagster/row_count": counts[tables.HISTORY_TABLE], "history": loaded.history,
        "customers_in_export": loaded.customers, "repeated_rows": loaded.repeated_rows})
    yield dg.MaterializeResult(asset_key=CHURN_EVENTS, metadata={
        "dagster/row_count": counts[tables.EVENTS_TABLE]})
    yield dg.MaterializeResult(asset_key=RETENTION, metadata={
        "dagster/row_count": counts[tables.RETENTION_TABLE]})
    yield dg.MaterializeResult(asset_key=MONTHLY_CHURN, metadata={
        "dagster/row_count": counts[tables.MONTHLY_CHURN_TABLE]})


landing_export_job = dg.define_asset_job(
    name="landing_export_job",
    selection=[EXPORT_FILE, EXPORT_ROWS, CUSTOMER_HISTORY, CHURN_EVENTS, RETENTION, MONTHLY_CHURN],
    op_retry_policy=RETRY_POLICY,
    tags=WAREHOUSE_TAG,
    executor_def=dg.in_process_executor,
    description="Take in one export of the landing folder; requested by landing_sensor.",
)
