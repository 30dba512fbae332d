"""What the Dagster instance knows, as rows: latest check results, freshness, run history.

Read through `context.instance`, so the export shows what the UI shows: the same run storage and
event log, whatever the deployment (SQLite locally, PostgreSQL in docker-compose).
"""

import json
from collections.abc import Iterable
from datetime import datetime, timedelta, timezone

import dagster as dg
from dagster import DagsterEventType, DagsterInstance
from dagster._core.storage.dagster_run import RunsFilter

# Re-read runs updated shortly before the newest one PostgreSQL holds: clocks and commits race.
RUN_OVERLAP = timedelta(minutes=5)

CHECK_COLUMNS = ("asset_key", "check_name", "passed", "severity", "status", "evaluated_at",
                 "description", "details", "metadata", "source_run_id")
FRESHNESS_COLUMNS = ("asset_key", "last_materialized_at", "source_run_id", "freshness_state")
RUN_COLUMNS = ("source_run_id", "root_run_id", "job_name", "status", "started_at", "ended_at",
               "duration_seconds", "step_retries", "retry_number", "updated_at")


def _utc(timestamp: float | None) -> datetime | None:
    return None if timestamp is None else datetime.fromtimestamp(timestamp, timezone.utc)


def _plain(value) -> str | int | float | bool | None:
    """A metadata value as JSON can hold it; tables, schemas and the like as their text."""
    value = getattr(value, "value", value)
    return value if isinstance(value, str | int | float | bool | type(None)) else str(value)


def check_rows(instance: DagsterInstance, check_keys: Iterable[dg.AssetCheckKey]) -> list[tuple]:
    """The latest completed evaluation of every check; a check that never ran has passed NULL."""
    check_keys = sorted(check_keys, key=lambda k: (k.asset_key.to_user_string(), k.name))
    summaries = instance.event_log_storage.get_asset_check_summary_records(check_keys)
    rows = []
    for key in check_keys:
        record = summaries[key].last_completed_check_execution_record
        evaluation = (
            record.event.dagster_event.event_specific_data
            if record and record.event and record.event.dagster_event else None
        )
        if evaluation is None:
            rows.append((key.asset_key.to_user_string(), key.name, None, None, "NOT_EVALUATED",
                         None, None, None, None, None))
            continue
        metadata = {name: _plain(value) for name, value in evaluation.metadata.items()}
        details = "; ".join(
            f"{k}: {v}" for k, v in metadata.items() if not k.startswith("dagster/")
        )
        rows.append((
            key.asset_key.to_user_string(),
            key.name,
            evaluation.passed,
            evaluation.severity.value,
            record.status.value,
            _utc(record.event.timestamp),
            evaluation.description,
            details,
            json.dumps(metadata, default=str),
            record.run_id,
        ))
    return rows


def freshness_rows(instance: DagsterInstance, asset_keys: Iterable[dg.AssetKey]) -> list[tuple]:
    """Last materialization per asset (NULL: never materialized) and its freshness state.

    The state is what the UI shows: the freshness daemon's latest evaluation of the asset's
    policy (PASS, WARN, FAIL; NOT_APPLICABLE without a policy). UNKNOWN when never loaded, or
    not yet evaluated: a daemon that never ran has judged nothing.
    """
    asset_keys = sorted(asset_keys, key=lambda k: k.to_user_string())
    last = {}
    for record in instance.get_asset_records(asset_keys):
        event = record.asset_entry.last_materialization_record
        if event is not None:
            last[record.asset_entry.asset_key] = (_utc(event.timestamp), event.run_id)
    states = instance.get_freshness_state_records(asset_keys)
    return [
        (
            key.to_user_string(),
            *last.get(key, (None, None)),
            states[key].freshness_state.value if key in states else "UNKNOWN",
        )
        for key in asset_keys
    ]


def run_rows(instance: DagsterInstance, updated_since: datetime | None) -> list[tuple]:
    """Every run updated since the given time (all runs when None), with its step retries."""
    since = None if updated_since is None else updated_since - RUN_OVERLAP
    rows = []
    for record in instance.get_run_records(filters=RunsFilter(updated_after=since)):
        run = record.dagster_run
        retries = len(instance.all_logs(run.run_id, of_type=DagsterEventType.STEP_UP_FOR_RETRY))
        duration = (
            record.end_time - record.start_time if record.start_time and record.end_time else None
        )
        rows.append((
            run.run_id,
            run.root_run_id or run.run_id,
            run.job_name,
            run.status.value,
            _utc(record.start_time),
            _utc(record.end_time),
            duration,
            retries,
            int(run.tags.get("dagster/retry_number", 0)),
            record.update_timestamp.astimezone(timezone.utc),
        ))
    return rows
