"""What each warehouse column holds, as the UI's Columns table shows it (one sentence each).

Written beside the column schema of every table the IO manager writes; a column added to a table
without a line here is caught by the tests.
"""

from churn_platform.core.fields import (
    FIELDS,
    MONTHLY_CHARGES_BANDS,
    SEGMENT_DIMENSIONS,
    TENURE_BANDS,
)
from churn_platform.core.tables import (
    ANALYTICS_TABLE,
    METRICS_TABLE,
    REJECTED_TABLE,
    SEGMENT_TABLE,
    STAGING_TABLE,
)


def _bands(bands) -> str:
    return ", ".join(
        f"{name} (≤ {upper})" if upper else f"{name} (above)" for name, upper in bands
    )


_FIELD_TEXT = {
    "age": "Age in years; missing: the median age",
    "gender": "Gender; missing or unrecognized: Unknown",
    "tenure": "Months as a customer; missing: 0",
    "monthly_charges": "Monthly charges; missing: the mean",
    "contract_type": "Month-to-Month, One-Year or Two-Year; missing: Month-to-Month",
    "internet_service": "DSL, Fiber Optic or None (no internet service); missing: None",
    "total_charges": "Total charges to date; missing: 0",
    "tech_support": "Yes or No; missing: No",
    "churn": "Yes if the customer left; missing: No",
}

_SNAPSHOT = {
    "snapshot_id": "The snapshot: the root run id of the ELT run (a re-execution replaces it)",
    "run_id": "The Dagster run that wrote this row",
    "snapshot_at": "When the snapshot was taken (UTC)",
}

DESCRIPTIONS: dict[str, dict[str, str]] = {
    STAGING_TABLE: {
        "load_timestamp": "When the file was loaded (UTC)",
        "source_file": "The CSV file the row came from",
        "source_row": "The row's number in the file (1 = first data row); leads back from any"
                      " check or rejection to the raw row",
        "source_mapping_sha256": "sha256 of the source mapping staging was loaded with",
    },
    ANALYTICS_TABLE: {
        "anonymized_customer_id": "Pseudonym replacing the source customer id (keyed HMAC or"
                                  " random per run); the id itself never leaves staging",
        "source_row": "The row's number in the source file: the raw row in staging",
        **{f.name: _FIELD_TEXT[f.name] for f in FIELDS if f.name in _FIELD_TEXT},
        "churn_flag": "1 if churn is Yes, else 0",
        "tenure_category": f"Tenure band: {_bands(TENURE_BANDS)} months",
        "monthly_charges_category": f"Monthly charges band: {_bands(MONTHLY_CHARGES_BANDS)}",
        "load_timestamp": "When the source file was loaded (UTC)",
        "processed_timestamp": "When this table was computed (UTC)",
    },
    REJECTED_TABLE: {
        "source_row": "The rejected row's number in the source file: the raw row in staging",
        "column_name": "The first source column whose value could not be typed",
        "reason": "Why that value was rejected",
        "offending_value": "That value as it stood, cut short; NULL when the customer id is the"
                           " problem (the id never leaves staging)",
        "problem_count": "How many of the row's values could not be typed",
        "load_timestamp": "When the source file was loaded (UTC)",
    },
    SEGMENT_TABLE: {
        **_SNAPSHOT,
        "dimension": f"What the customers are split by: {', '.join(SEGMENT_DIMENSIONS)}",
        "segment": "The value of the dimension (a contract type or band)",
        "customers": "Customers in the segment",
        "churned": "Of them, customers who left",
        "churn_rate_percent": "churned / customers, in percent",
    },
    METRICS_TABLE: {
        **_SNAPSHOT,
        "source_file": "The source CSV of this snapshot (history is compared per source)",
        "total_records": "Rows in staging",
        "analytics_records": "Rows typed into analytics",
        "rejected_rows": "Rows kept aside in rejected_rows",
        "churn_rate_percent": "Customers who left, in percent of analytics rows",
        "avg_monthly_charges": "Average monthly charges in analytics",
        "avg_tenure_months": "Average tenure in analytics, in months",
        "duplicate_customer_ids": "Source customer ids found on more than one row",
        **{f"missing_{f.name}": f"Empty cells in the source column of {f.name} (imputed in"
                                " analytics); NULL when the source lacks it" for f in FIELDS},
        "absent_fields": "Fields the source lacks, per its mapping",
    },
}

# Staging holds every column of the source file, whatever the mapping calls it.
STAGING_SOURCE_COLUMN = "A column of the source file, as text, exactly as it stood"


def describe(table: str, column: str) -> str | None:
    """The column's description; None when no one wrote it down."""
    described = DESCRIPTIONS.get(table, {}).get(column)
    if described is None and table == STAGING_TABLE:
        return STAGING_SOURCE_COLUMN
    return described
