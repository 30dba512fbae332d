"""SQL that turns staging text into typed, imputed, pseudonymized analytics rows, or rejects them.

Each field gets a `<name>_value` (typed, NULL when missing) and a `<name>_problem` (why a
non-empty value cannot be typed). A row with any problem goes to rejected_rows with its first
problem; every other row is imputed and banded. Bad values are never nulled and then imputed.
The fields come bound to the source by its mapping (source column, aliases; absent fields hold
their constant default, or NULL where the default is a statistic of values the source lacks).
"""

from datetime import datetime

from churn_platform.fields import (
    FIELDS,
    MONTHLY_CHARGES_BANDS,
    TENURE_BANDS,
    Field,
)
from churn_platform.mapping import BLANKS, normalize
from churn_platform.pseudonymize import pseudonym_sql
from churn_platform.warehouse import quote_ident, quote_literal

MAX_OFFENDING_VALUE_CHARS = 200
SQL_TYPES = {"id": "VARCHAR", "category": "VARCHAR", "integer": "INTEGER", "decimal": "DOUBLE"}


def cell(field: Field) -> str:
    """The trimmed source text of a field; NULL when empty, whitespace, or not in the source."""
    if field.absent:
        return "CAST(NULL AS VARCHAR)"
    column = quote_ident(field.source_column)
    # trim() with a set of characters costs about four plain ones: pay it only at a blank edge.
    blanks = ", ".join(quote_literal(b) for b in BLANKS)
    padded = f"{column}[1] IN ({blanks}) OR {column}[-1] IN ({blanks})"
    return (f"nullif(CASE WHEN {padded} THEN trim({column}, {quote_literal(BLANKS)})"
            f" ELSE {column} END, '')")


def is_missing(field: Field) -> str:
    return f"({cell(field)} IS NULL)"


def _number_checks(field: Field, number: str) -> list[tuple[str, str]]:
    """(condition, reason) pairs, in order, for a field parsed into `number`."""
    checks = [
        (f"{number} IS NULL", "not a number"),
        (f"NOT isfinite({number})", "not a finite number"),
    ]
    if field.kind == "integer":
        checks.append((f"{number} <> trunc({number})", "not a whole number"))
    if field.min_value is not None:
        checks.append((f"{number} < {field.min_value}", f"below the minimum {field.min_value:g}"))
    if field.max_value is not None:
        checks.append((f"{number} > {field.max_value}", f"above the maximum {field.max_value:g}"))
    return checks


def value_and_problem(field: Field, raw: str | None = None) -> tuple[str, str]:
    """SQL expressions for the typed value and the problem of one field.

    `raw` is the field's cell (default: `cell(field)`, computed in place).
    """
    raw = raw or cell(field)
    if field.absent:
        return f"CAST(NULL AS {SQL_TYPES[field.kind]})", "CAST(NULL AS VARCHAR)"
    if field.kind == "id":
        return raw, f"CASE WHEN {raw} IS NULL THEN 'missing customer id' END"
    if field.kind == "category":
        # Spellings compare as mapping.normalize does: case-insensitive, blank runs as one.
        spellings = {normalize(c): c for c in field.categories} | dict(field.aliases)
        whens = " ".join(
            f"WHEN {quote_literal(s)} THEN {quote_literal(c)}" for s, c in spellings.items()
        )
        blank_runs = quote_literal(f"[{BLANKS}]+")
        # Most cells match once lowered; only the rest pay for the regular expression.
        value = (f"CASE lower({raw}) {whens} ELSE"
                 f" CASE regexp_replace(lower({raw}), {blank_runs}, ' ', 'g') {whens} END END")
        accepted = ", ".join(field.categories)
        problem = (
            f"CASE WHEN {raw} IS NOT NULL AND {value} IS NULL"
            f" THEN {quote_literal('not an accepted value (' + accepted + ')')} END"
        )
        return value, problem
    number = f"TRY_CAST({raw} AS DOUBLE)"
    whens = " ".join(
        f"WHEN {condition} THEN {quote_literal(reason)}"
        for condition, reason in _number_checks(field, number)
    )
    sql_type = "INTEGER" if field.kind == "integer" else "DOUBLE"
    problem = f"CASE WHEN {raw} IS NULL THEN NULL {whens} END"
    value = f"CASE WHEN ({problem}) IS NULL THEN CAST({number} AS {sql_type}) END"
    return value, problem


def typed_rows_sql(staging: str, fields: tuple[Field, ...] = FIELDS) -> str:
    """Every staging row with typed values, its first problem, and its offending text."""
    present = [f for f in fields if not f.absent]
    columns = []
    for field in fields:
        value, problem = value_and_problem(field, f"{field.name}_cell")
        columns.append(f"{value} AS {field.name}_value")
        columns.append(f"{problem} AS {field.name}_problem")

    def first(pick) -> str:
        """A CASE picking, for the first field with a problem (in source order), `pick(field)`."""
        whens = " ".join(f"WHEN {f.name}_problem IS NOT NULL THEN {pick(f)}" for f in present)
        return f"CASE {whens} END"

    def offending(field: Field) -> str:
        # The id is never copied out of staging, even when it is the problem.
        if field.kind == "id":
            return "NULL"
        return f"left({field.name}_raw, {MAX_OFFENDING_VALUE_CHARS})"

    problems = " + ".join(f"({f.name}_problem IS NOT NULL)::INTEGER" for f in present)
    # Source text under field names: a source column's own name never meets the names made here.
    raw_columns = ", ".join(f"{quote_ident(f.source_column)} AS {f.name}_raw" for f in present)
    # Each cell is trimmed once, then read by its value and problem expressions.
    cells = ", ".join(f"{cell(f)} AS {f.name}_cell" for f in present)
    return f"""
        SELECT *,
               {first(lambda f: quote_literal(f.source_column))} AS rejected_column,
               {first(lambda f: f.name + "_problem")} AS rejected_reason,
               {first(offending)} AS offending_value,
               {problems} AS problem_count
        FROM (SELECT {", ".join(columns)},
                     {", ".join(f"{f.name}_raw" for f in present)},
                     source_row, load_timestamp
              FROM (SELECT {cells}, {raw_columns}, source_row, load_timestamp
                    FROM ({staging}) AS staging) AS cells) AS typed
    """


def band_sql(value: str, bands: tuple[tuple[str, int | None], ...]) -> str:
    """Inclusive upper bounds; anything at or below the first bound (zero too) is the first band.

    No value (a field the source lacks, imputed by a statistic of nothing) has no band.
    """
    whens = " ".join(f"WHEN {value} <= {upper} THEN '{name}'" for name, upper in bands if upper)
    return f"CASE WHEN {value} IS NULL THEN NULL {whens} ELSE '{bands[-1][0]}' END"


def analytics_sql(staging: str, key: bytes | None, processed_at: datetime,
                  fields: tuple[Field, ...] = FIELDS) -> tuple[str, dict]:
    """Accepted rows, imputed, pseudonymized and banded; and the parameters to bind."""
    pseudonym, params = pseudonym_sql("customer_id_value", key)
    typed = [f for f in fields if f.kind != "id"]
    imputed = []
    for field in typed:
        value = f"{field.name}_value"
        if field.impute == "median":
            fill = f"(SELECT CAST(round(median({value})) AS INTEGER) FROM accepted)"
        elif field.impute == "mean":
            fill = f"(SELECT avg({value}) FROM accepted)"
        else:
            fill = quote_literal(field.impute) if isinstance(field.impute, str) else repr(field.impute)
        imputed.append(f"coalesce({value}, {fill}) AS {field.name}")
    sql = f"""
        WITH accepted AS (
            SELECT * FROM ({typed_rows_sql(staging, fields)}) WHERE problem_count = 0),
        imputed AS (
            SELECT {pseudonym} AS anonymized_customer_id,
                   {", ".join(imputed)},
                   source_row,
                   load_timestamp
            FROM accepted
        )
        SELECT anonymized_customer_id,
               source_row,
               {", ".join(f.name for f in typed)},
               CASE WHEN churn = 'Yes' THEN 1 ELSE 0 END AS churn_flag,
               {band_sql("tenure", TENURE_BANDS)} AS tenure_category,
               {band_sql("monthly_charges", MONTHLY_CHARGES_BANDS)} AS monthly_charges_category,
               load_timestamp,
               $processed_timestamp::TIMESTAMP AS processed_timestamp
        FROM imputed
    """
    return sql, {**params, "processed_timestamp": processed_at}


def rejected_sql(staging: str, fields: tuple[Field, ...] = FIELDS) -> str:
    """Rows that could not be typed, with their first problem; the raw row stays in staging."""
    return f"""
        SELECT source_row,
               rejected_column AS column_name,
               rejected_reason AS reason,
               offending_value,
               problem_count,
               load_timestamp
        FROM ({typed_rows_sql(staging, fields)})
        WHERE problem_count > 0
        ORDER BY source_row
    """
