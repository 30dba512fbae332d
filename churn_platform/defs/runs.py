"""How the platform's runs behave: one warehouse writer at a time, and retries for transient faults.

Every run that opens the warehouse carries `WAREHOUSE_TAG`; the run queue (dagster_home/dagster.yaml
and deploy/dagster.yaml) starts one such run at a time, because DuckDB takes one writer process.
"""

import dagster as dg

from churn_platform.core import settings

WAREHOUSE_TAG = {"churn_platform/warehouse": "duckdb"}

# The original Airflow DAG retried twice, five minutes apart (CHURN_RETRY_DELAY_SECONDS). Bad
# input raises a Failure that does not allow retries, so only transient faults (a held lock, an
# unreachable metrics database) wait for these.
RETRY_POLICY = dg.RetryPolicy(max_retries=2, delay=settings.retry_delay_seconds())
