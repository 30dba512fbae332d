"""Where the platform reads its configuration: environment variables, each with a documented default."""

import os
from datetime import timedelta
from pathlib import Path

from churn_platform.core.errors import InputError

PROJECT_ROOT = Path(__file__).resolve().parents[2]
SAMPLE_CSV = PROJECT_ROOT / "data" / "customer_churn_data.csv"
DEFAULT_DUCKDB_PATH = PROJECT_ROOT / "data" / "churn_warehouse.duckdb"
# The original export's schema; CHURN_SOURCE_MAPPING names another export's mapping.
DEFAULT_SOURCE_MAPPING = Path(__file__).resolve().parent / "mappings" / "default.yaml"
# DuckDB would take 80 % of RAM; the warehouse shares its host with Dagster, PostgreSQL and
# Grafana, and spills to disk beyond this (5M rows: 0.93 GiB peak, about 5 % slower than unbounded).
DEFAULT_DUCKDB_MEMORY_LIMIT = "1GB"

# The key's *name*, never its value, is what the code passes around.
PSEUDONYMIZATION_KEY_ENV = "CHURN_PSEUDONYMIZATION_KEY"


def source_csv() -> str:
    return os.environ.get("CHURN_SOURCE_CSV") or str(SAMPLE_CSV)


def source_mapping() -> str:
    return os.environ.get("CHURN_SOURCE_MAPPING") or str(DEFAULT_SOURCE_MAPPING)


def duckdb_path() -> str:
    return os.environ.get("CHURN_DUCKDB_PATH") or str(DEFAULT_DUCKDB_PATH)


def duckdb_config() -> dict[str, str]:
    """DuckDB settings for every connection; identical everywhere, as DuckDB requires per process."""
    config = {"memory_limit": os.environ.get("CHURN_DUCKDB_MEMORY_LIMIT")
              or DEFAULT_DUCKDB_MEMORY_LIMIT}
    if threads := os.environ.get("CHURN_DUCKDB_THREADS"):
        config["threads"] = threads
    return config


def duckdb_lock_timeout_seconds() -> float:
    return float(os.environ.get("CHURN_DUCKDB_LOCK_TIMEOUT", "60"))


def retry_delay_seconds() -> float:
    return float(os.environ.get("CHURN_RETRY_DELAY_SECONDS", "300"))


def model_dir() -> Path:
    """Where churn models are stored (CHURN_MODEL_DIR), one `<version>.zip` file each."""
    return Path(os.environ.get("CHURN_MODEL_DIR") or PROJECT_ROOT / "data" / "models")


def backup_dir() -> Path:
    return Path(os.environ.get("CHURN_BACKUP_DIR") or PROJECT_ROOT / "data" / "backups")


def backup_keep() -> int:
    return int(os.environ.get("CHURN_BACKUP_KEEP", "24"))


def backup_max_age() -> timedelta:
    return timedelta(hours=float(os.environ.get("CHURN_BACKUP_MAX_AGE_HOURS", "168")))


# The metrics export: a libpq connection string; unset, the export is skipped.
METRICS_DSN_ENV = "CHURN_METRICS_DSN"
GRAFANA_DB_USER_ENV = "CHURN_GRAFANA_DB_USER"
GRAFANA_DB_PASSWORD_ENV = "CHURN_GRAFANA_DB_PASSWORD"


def metrics_dsn() -> str | None:
    return os.environ.get(METRICS_DSN_ENV) or None


def grafana_reader() -> tuple[str, str] | None:
    """Grafana's read-only PostgreSQL role and its password; None unless a password is set."""
    password = os.environ.get(GRAFANA_DB_PASSWORD_ENV)
    if not password:
        return None
    return os.environ.get(GRAFANA_DB_USER_ENV) or "grafana_reader", password


def metrics_retention() -> timedelta:
    """How long PostgreSQL keeps metrics history and run history (CHURN_METRICS_RETENTION_DAYS)."""
    return timedelta(days=float(os.environ.get("CHURN_METRICS_RETENTION_DAYS", "400")))


# The landing folder (issue 16): every export file dropped there is kept and loaded once.
LANDING_DIR_ENV = "CHURN_LANDING_DIR"
LANDING_DATE_PATTERN_ENV = "CHURN_LANDING_DATE_PATTERN"
# A date in a file name: 2026-11-27 or 20261127, not inside a longer run of digits.
DEFAULT_LANDING_DATE_PATTERN = (
    r"(?<!\d)(?P<year>\d{4})(?P<sep>-?)(?P<month>\d{2})(?P=sep)(?P<day>\d{2})(?!\d)"
)
MISSING_EXPORTS_ENV = "CHURN_MISSING_EXPORTS_FOR_CHURN"


def landing_dir() -> Path | None:
    """The landing folder; None: single-file mode (CHURN_SOURCE_CSV)."""
    value = os.environ.get(LANDING_DIR_ENV)
    return Path(value) if value else None


def landing_date_pattern() -> str:
    """The regular expression finding an export's date in a file name (groups year, month, day)."""
    return os.environ.get(LANDING_DATE_PATTERN_ENV) or DEFAULT_LANDING_DATE_PATTERN


def landing_settle_seconds() -> float:
    """A file modified more recently than this is still being written: left for the next scan."""
    return float(os.environ.get("CHURN_LANDING_SETTLE_SECONDS", "10"))


def missing_exports_for_churn() -> int:
    """How many consecutive exports a customer must be missing from to count as churned."""
    value = os.environ.get(MISSING_EXPORTS_ENV) or "3"
    if not value.strip().isdigit() or int(value) < 1:
        raise InputError(f"{MISSING_EXPORTS_ENV} must be a whole number of exports, 1 or more,"
                         f" not {value!r}")
    return int(value)
