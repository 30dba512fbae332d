"""The ELT job and its hourly schedule.

In-process execution: one process runs every step, so a 1,000-row run does not pay for a Python
process per step, and one run holds at most one DuckDB writer. Across runs, the run queue's tag
limit (dagster_home/dagster.yaml) lets one warehouse run at a time: scheduled, sensor or manual.
"""

import dagster as dg

from churn_platform import settings
from churn_platform.assets import ELT_ASSETS

WAREHOUSE_TAG = {"churn_platform/warehouse": "duckdb"}

# The original Airflow DAG retried twice, five minutes apart (CHURN_RETRY_DELAY_SECONDS). Bad
# input raises a Failure that does not allow retries, so only transient faults (a held lock, an
# unreachable metrics database) wait for these.
RETRY_POLICY = dg.RetryPolicy(max_retries=2, delay=settings.retry_delay_seconds())

churn_elt_job = dg.define_asset_job(
    name="churn_elt_job",
    selection=dg.AssetSelection.assets(*ELT_ASSETS),
    executor_def=dg.in_process_executor,
    op_retry_policy=RETRY_POLICY,
    tags=WAREHOUSE_TAG,
    description="Load the source CSV, clean and pseudonymize it, and snapshot its quality metrics.",
)

hourly_churn_schedule = dg.ScheduleDefinition(
    name="hourly_churn_elt",
    job=churn_elt_job,
    cron_schedule="0 * * * *",
    execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.RUNNING,
)
