"""What each asset check counts and when it passes, without Dagster.

The SQL conditions of the checks (a row breaking a rule makes the condition true) and the
pass/fail decisions on the counts live here, so they are tested, and mutation-tested, on small
hand-made tables; defs/elt/checks.py only runs them and reports.
"""

from churn_platform.core.fields import (
    DERIVED_FROM,
    MONTHLY_CHARGES_BANDS,
    TENURE_BANDS,
    Field,
)
from churn_platform.core.warehouse import quote_ident, quote_literal

# The original pipeline's alert rule: a churn rate this many standard deviations from the mean of
# the earlier snapshots is a drift, judged only with at least DRIFT_MIN_HISTORY of them.
DRIFT_STDDEVS = 2.0
DRIFT_MIN_HISTORY = 3


def outside(column: str, values) -> str:
    """True when the column is NULL or not one of the values (NULL is outside too)."""
    return f"({column} IS NULL OR {column} NOT IN ({', '.join(quote_literal(v) for v in values)}))"


def absent_columns(absent_fields) -> set[str]:
    """Analytics columns holding a field the source lacks, or derived from one."""
    absent = set(absent_fields)
    return absent | {column for column, base in DERIVED_FROM.items() if base in absent}


def null_rules(columns, absent_fields=()) -> dict[str, str]:
    """A NULL in any cleaned or derived column, except the columns of absent fields."""
    absent = absent_columns(absent_fields)
    return {c: f"{quote_ident(c)} IS NULL" for c in columns if c not in absent}


def category_rules(fields: tuple[Field, ...], absent_fields=()) -> dict[str, str]:
    """A category or band outside its accepted values, or a churn_flag disagreeing with churn."""
    rules = {f.name: outside(f.name, f.categories) for f in fields if f.categories}
    rules["tenure_category"] = outside("tenure_category", [b for b, _ in TENURE_BANDS])
    rules["monthly_charges_category"] = outside(
        "monthly_charges_category", [b for b, _ in MONTHLY_CHARGES_BANDS]
    )
    rules["churn_flag"] = "churn_flag IS DISTINCT FROM (churn = 'Yes')::INTEGER"
    absent = absent_columns(absent_fields)
    return {column: rule for column, rule in rules.items() if column not in absent}


def range_rules(fields: tuple[Field, ...]) -> dict[str, str]:
    """A number below its field's minimum or above its maximum (the bounds themselves are in)."""
    rules = {}
    for f in fields:
        if f.absent:
            continue
        bounds = [f"{f.name} < {f.min_value}"] if f.min_value is not None else []
        bounds += [f"{f.name} > {f.max_value}"] if f.max_value is not None else []
        if bounds:
            rules[f.name] = " OR ".join(bounds)
    return rules


def parity_passed(staging: int, analytics: int, rejected: int, unaccounted: list) -> bool:
    """Every staging row is in analytics or rejected_rows: the counts add up and none is missing."""
    return staging == analytics + rejected and not unaccounted


def pseudonyms_passed(missing: int, collisions: int) -> bool:
    return missing == 0 and collisions == 0


def rejections_passed(unexplained: int, repeated: int) -> bool:
    return unexplained == 0 and repeated == 0


def drift_passed(current: float | None, mean: float | None, stddev: float | None,
                 history: int) -> bool | None:
    """Whether the current churn rate is within DRIFT_STDDEVS standard deviations of the earlier
    snapshots' mean (the bound itself is in); None when there is too little history to judge."""
    if history < DRIFT_MIN_HISTORY or current is None:
        return None
    return abs(current - mean) <= DRIFT_STDDEVS * stddev
