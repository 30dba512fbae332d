"""The landing sensor: registers every new export file as a partition and requests its load.

New means new content: the registered partitions are the memory (a key ends with the hash), so a
file dropped again is not registered twice and a changed file is. The cursor only caches hashes,
so a lost cursor costs one re-read of the folder, nothing else. The run_key is the partition key:
a re-evaluated tick starts no second run.

`latest_export_sensor` runs churn_elt_job after a load whose export became the latest, so that
analytics/customer_churn and its checks and metrics follow the latest export.
`history_export_sensor` then sends the cohort tables to PostgreSQL after each load, as
metrics_export_sensor does after each ELT run.
"""

import json

import dagster as dg

from churn_platform.core import landing, settings
from churn_platform.defs.elt.jobs import churn_elt_job
from churn_platform.defs.export.sensors import export_after
from churn_platform.defs.landing.assets import (
    EXPORT_ROWS,
    EXPORTS_PARTITIONS,
    LATEST_EXPORT_ENTRY,
    MONTHLY_CHURN,
    landing_export_job,
)

EXPORT_DATE_TAG = "churn_platform/export_date"
EXPORT_TAG = "churn_platform/export"
# Loads read per tick at most; more wait for the next tick (the cursor is where it stopped).
MAX_LOADS_PER_TICK = 100
MAX_REPORTED = 10


@dg.sensor(
    job=landing_export_job,
    name="landing_sensor",
    default_status=dg.DefaultSensorStatus.RUNNING,
    minimum_interval_seconds=30,
    description="Registers each new export in CHURN_LANDING_DIR as a churn_exports partition.",
)
def landing_sensor(context: dg.SensorEvaluationContext):
    folder = settings.landing_dir()
    if folder is None:
        return dg.SkipReason(
            f"{settings.LANDING_DIR_ENV} is not set: single-file mode ({settings.source_csv()})."
            " Set it to the folder the CRM drops its exports into."
        )
    # Refusing is louder than skipping: without a key, history could never join two exports.
    landing.require_stable_pseudonyms()
    found = landing.scan(folder, hashes=json.loads(context.cursor) if context.cursor else None)
    # Names quoted with escapes: a file name cannot forge a line of the log.
    notes = [f"{r.path.name!r}: refused, {r.reason}" for r in found.refused]
    notes += [f"{path.name!r}: the same content as export {key}" for path, key in found.duplicates]
    notes += [f"{path.name!r}: still being written" for path in found.waiting]
    for note in notes:
        context.log.warning(note)
    known = set(context.instance.get_dynamic_partitions(EXPORTS_PARTITIONS.name))
    new = landing.new_exports(found.exports, known)
    cursor = json.dumps(found.hashes)
    if not new:
        summary = "; ".join(notes[:MAX_REPORTED]) + (" ..." if len(notes) > MAX_REPORTED else "")
        return dg.SensorResult(skip_reason=f"no new export in {folder}" + (
            f" ({summary})" if summary else ""), cursor=cursor)
    keys = [export.partition_key for export in new]
    return dg.SensorResult(
        dynamic_partitions_requests=[EXPORTS_PARTITIONS.build_add_request(keys)],
        run_requests=[
            dg.RunRequest(run_key=export.partition_key, partition_key=export.partition_key,
                          tags={EXPORT_DATE_TAG: export.export_date.isoformat()})
            for export in new
        ],
        cursor=cursor,
    )


history_export_sensor = export_after(
    MONTHLY_CHURN, "history_export_sensor",
    "the retention and monthly churn tables after each loaded export (landing mode)")


@dg.sensor(
    job=churn_elt_job,
    name="latest_export_sensor",
    default_status=dg.DefaultSensorStatus.RUNNING,
    minimum_interval_seconds=30,
    description=(
        "Landing mode: runs churn_elt_job after a load whose export became the latest (by export"
        " date, arrival, name), so analytics/customer_churn follows it; a late, older export"
        " starts nothing."
    ),
)
def latest_export_sensor(context: dg.SensorEvaluationContext):
    if settings.landing_dir() is None:
        return dg.SkipReason(f"{settings.LANDING_DIR_ENV} is not set: single-file mode, where"
                             " the hourly schedule runs churn_elt_job on the source CSV.")
    # Every load since the cursor (an asset sensor sees only the newest event of a tick), in
    # order; the load step recorded whether its export was then the latest loaded one.
    after = int(context.cursor) if context.cursor else None
    records = context.instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=EXPORT_ROWS, after_storage_id=after),
        limit=MAX_LOADS_PER_TICK, ascending=True).records
    if not records:
        return dg.SkipReason("no export loaded since the last tick")
    cursor = str(records[-1].storage_id)
    latest = [r for r in records
              if getattr(r.asset_materialization.metadata.get(LATEST_EXPORT_ENTRY), "value", False)]
    if not latest:
        return dg.SensorResult(skip_reason="the exports loaded since the last tick are older than"
                                           " the latest one: analytics stays as it is",
                               cursor=cursor)
    # Staging takes the latest export when the run starts: one run for the newest is enough.
    export = latest[-1].partition_key
    return dg.SensorResult(
        run_requests=[dg.RunRequest(run_key=f"elt-after-{export}", tags={EXPORT_TAG: export})],
        cursor=cursor)
