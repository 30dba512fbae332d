"""The canonical churn fields: their source column, type, accepted values and imputation rule.

Everything downstream (typing SQL, checks, metrics) is generated from this one table, so a rule
is stated once.
"""

from dataclasses import dataclass


@dataclass(frozen=True)
class Field:
    name: str  # snake_case column in analytics
    source_column: str | None  # header in the source CSV; None: the source lacks the field
    kind: str  # "id" | "integer" | "decimal" | "category"
    impute: str | float | int | None = None  # constant, "median", "mean"; None: never missing
    categories: tuple[str, ...] = ()
    min_value: float | None = None
    max_value: float | None = None
    # (normalized source spelling, category): set by a source mapping, see mapping.py
    aliases: tuple[tuple[str, str], ...] = ()

    @property
    def absent(self) -> bool:
        return self.source_column is None


FIELDS: tuple[Field, ...] = (
    Field("customer_id", "CustomerID", "id"),
    Field("age", "Age", "integer", impute="median", min_value=0, max_value=130),
    Field("gender", "Gender", "category", impute="Unknown",
          categories=("Female", "Male", "Other", "Unknown")),
    Field("tenure", "Tenure", "integer", impute=0, min_value=0, max_value=1200),
    Field("monthly_charges", "MonthlyCharges", "decimal", impute="mean", min_value=0),
    Field("contract_type", "ContractType", "category", impute="Month-to-Month",
          categories=("Month-to-Month", "One-Year", "Two-Year")),
    Field("internet_service", "InternetService", "category", impute="None",
          categories=("DSL", "Fiber Optic", "None")),
    Field("total_charges", "TotalCharges", "decimal", impute=0.0, min_value=0),
    Field("tech_support", "TechSupport", "category", impute="No", categories=("Yes", "No")),
    Field("churn", "Churn", "category", impute="No", categories=("Yes", "No")),
)

FIELDS_BY_NAME = {f.name: f for f in FIELDS}
SOURCE_COLUMNS = tuple(f.source_column for f in FIELDS)
# A source mapping may leave out any field but these.
REQUIRED_FIELDS = ("customer_id", "churn")

# Bands: upper bounds are inclusive and zero falls in the lowest band.
TENURE_BANDS = (("New", 12), ("Medium", 36), ("Long", None))
MONTHLY_CHARGES_BANDS = (("Low", 50), ("Medium", 100), ("High", None))
# Derived analytics columns and the field each is computed from.
DERIVED_FROM = {
    "churn_flag": "churn",
    "tenure_category": "tenure",
    "monthly_charges_category": "monthly_charges",
}

SEGMENT_DIMENSIONS = ("contract_type", "tenure_category", "monthly_charges_category")

