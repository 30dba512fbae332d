"""The one clock of the warehouse: UTC, naive, as DuckDB's TIMESTAMP columns keep it."""

from datetime import datetime, timezone


def utc_now() -> datetime:
    return datetime.now(timezone.utc).replace(tzinfo=None)
