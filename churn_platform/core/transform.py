"""SQL that turns staging text into typed, imputed, pseudonymized analytics rows, or rejects them.

Each field gets a `<name>_value` (typed, NULL when missing) and a `<name>_problem` (why a
non-empty value cannot be typed). A row with any problem goes to rejected_rows with its first
problem; every other row is imputed and banded. Bad values are never nulled and then imputed.
The fields come bound to the source by its mapping (source column, aliases; absent fields hold
their constant default, or NULL where the default is a statistic of values the source lacks).

Speed: almost every cell is clean, so each is typed by its cheapest test first (a cast, an exact
spelling) and trimmed, lowered or matched by a regular expression only when that test fails; the
costly parts are computed once per row in an inner SELECT and read by name above it.
"""

from datetime import datetime

from churn_platform.core.fields import (
    FIELDS,
    MONTHLY_CHARGES_BANDS,
    TENURE_BANDS,
    Field,
)
from churn_platform.core.mapping import BLANKS, normalize
from churn_platform.core.pseudonymize import pseudonym_sql
from churn_platform.core.warehouse import quote_ident, quote_literal

MAX_OFFENDING_VALUE_CHARS = 200
SQL_TYPES = {"id": "VARCHAR", "category": "VARCHAR", "integer": "INTEGER", "decimal": "DOUBLE"}
_BLANK_CODES = ", ".join(str(ord(b)) for b in BLANKS)


def _source(field: Field) -> str:
    return quote_ident(field.source_column)


def cell(field: Field, column: str | None = None) -> str:
    """The trimmed source text of a field; NULL when empty, whitespace, or not in the source.

    `column` is the SQL holding the field's text (default: its source column).
    """
    if field.absent:
        return "CAST(NULL AS VARCHAR)"
    column = column or _source(field)
    # trim() with a set of characters costs a pass over the text: pay it only at a blank edge.
    edge = f"ord({column}) IN ({_BLANK_CODES}) OR ord({column}[-1]) IN ({_BLANK_CODES})"
    return (f"CASE WHEN {column} = '' THEN NULL"
            f" WHEN {edge} THEN nullif(trim({column}, {quote_literal(BLANKS)}), '')"
            f" ELSE {column} END")


def is_missing(field: Field) -> str:
    """True when the field's cell is empty or blank (a blank cell starts with a blank).

    A CASE, so that only a cell starting with a blank is trimmed.
    """
    column = _source(field)
    return (f"CASE WHEN {column} IS NULL OR {column} = '' THEN true"
            f" WHEN ord({column}) IN ({_BLANK_CODES})"
            f" THEN trim({column}, {quote_literal(BLANKS)}) = '' ELSE false END")


def _number_checks(field: Field, number: str) -> list[tuple[str, str]]:
    """(condition, reason) pairs, in order, for a non-NULL `number` parsed from the field."""
    checks = [(f"NOT isfinite({number})", "not a finite number")]
    if field.kind == "integer":
        checks.append((f"{number} <> trunc({number})", "not a whole number"))
    if field.min_value is not None:
        checks.append((f"{number} < {field.min_value}", f"below the minimum {field.min_value:g}"))
    if field.max_value is not None:
        checks.append((f"{number} > {field.max_value}", f"above the maximum {field.max_value:g}"))
    return checks


def parsed(field: Field) -> str:
    """The field parsed from its source column: a DOUBLE, a category, or the trimmed id.

    NULL when missing or unparseable; `problem` tells the two apart.
    """
    column = _source(field)
    if field.kind == "id":
        return cell(field)
    if field.kind == "category":
        # Spellings compare as mapping.normalize does: case-insensitive, blank runs as one.
        spellings = {normalize(c): c for c in field.categories} | dict(field.aliases)
        # The exact spellings first, each giving what its normalized form gives.
        exact = {s: spellings[normalize(s)] for s in (*field.categories, *spellings)}
        raw = cell(field)
        blank_runs = quote_literal(f"[{BLANKS}]+")
        return (f"CASE {column} {_whens(exact)} ELSE"
                f" CASE lower({raw}) {_whens(spellings)} ELSE"
                f" CASE regexp_replace(lower({raw}), {blank_runs}, ' ', 'g') {_whens(spellings)}"
                f" END END END")
    # A cast ignores ASCII blanks; a cell with other blanks at its edges is trimmed first.
    return f"coalesce(TRY_CAST({column} AS DOUBLE), TRY_CAST({cell(field)} AS DOUBLE))"


def _whens(spellings: dict[str, str]) -> str:
    return " ".join(f"WHEN {quote_literal(s)} THEN {quote_literal(c)}" for s, c in spellings.items())


def problem(field: Field, value: str, column: str) -> str:
    """Why the field's text in `column`, parsed as `value`, cannot be typed; NULL when it can."""
    if field.absent:
        return "CAST(NULL AS VARCHAR)"
    if field.kind == "id":
        return f"CASE WHEN {value} IS NULL THEN 'missing customer id' END"
    blank = f"{cell(field, column)} IS NULL"
    if field.kind == "category":
        accepted = quote_literal(f"not an accepted value ({', '.join(field.categories)})")
        return f"CASE WHEN {value} IS NULL AND NOT {blank} THEN {accepted} END"
    whens = " ".join(
        f"WHEN {condition} THEN {quote_literal(reason)}"
        for condition, reason in _number_checks(field, value)
    )
    return (f"CASE WHEN {value} IS NULL THEN CASE WHEN {blank} THEN NULL ELSE 'not a number' END"
            f" {whens} END")


def typed_value(field: Field, parsed_column: str, problem_column: str) -> str:
    """The analytics value: the parsed value in its SQL type, NULL when missing or rejected."""
    if field.absent:
        return f"CAST(NULL AS {SQL_TYPES[field.kind]})"
    if field.kind in ("integer", "decimal"):
        return (f"CASE WHEN {problem_column} IS NULL"
                f" THEN CAST({parsed_column} AS {SQL_TYPES[field.kind]}) END")
    return parsed_column


def typed_rows_sql(staging: str, fields: tuple[Field, ...] = FIELDS) -> str:
    """Every staging row with typed values, its first problem, and its offending text."""
    present = [f for f in fields if not f.absent]
    # Each field is parsed once, its problem found from the parsed value (and, rarely, its text).
    parsed_columns = ", ".join(
        f"{parsed(f)} AS {f.name}_parsed, {_source(f)} AS {f.name}_raw" for f in present
    )
    problems = ", ".join(
        f"{problem(f, f'{f.name}_parsed', f'{f.name}_raw')} AS {f.name}_problem" for f in present
    )
    values = ", ".join(
        f"{typed_value(f, f'{f.name}_parsed', f'{f.name}_problem')} AS {f.name}_value"
        for f in fields
    )

    def first(pick) -> str:
        """A CASE picking, for the first field with a problem (in source order), `pick(field)`."""
        whens = " ".join(f"WHEN {f.name}_problem IS NOT NULL THEN {pick(f)}" for f in present)
        return f"CASE {whens} END"

    def offending(field: Field) -> str:
        # The id is never copied out of staging, even when it is the problem.
        if field.kind == "id":
            return "NULL"
        return f"left({field.name}_raw, {MAX_OFFENDING_VALUE_CHARS})"

    problem_count = " + ".join(f"({f.name}_problem IS NOT NULL)::INTEGER" for f in present)
    return f"""
        SELECT {values},
               {first(lambda f: quote_literal(f.source_column))} AS rejected_column,
               {first(lambda f: f.name + "_problem")} AS rejected_reason,
               {first(offending)} AS offending_value,
               {problem_count} AS problem_count,
               source_row, load_timestamp
        FROM (SELECT *, {problems}
              FROM (SELECT {parsed_columns}, source_row, load_timestamp
                    FROM ({staging}) AS staging) AS parsed) AS checked
    """


def band_sql(value: str, bands: tuple[tuple[str, int | None], ...]) -> str:
    """Inclusive upper bounds; anything at or below the first bound (zero too) is the first band.

    No value (a field the source lacks, imputed by a statistic of nothing) has no band.
    """
    whens = " ".join(f"WHEN {value} <= {upper} THEN '{name}'" for name, upper in bands if upper)
    return f"CASE WHEN {value} IS NULL THEN NULL {whens} ELSE '{bands[-1][0]}' END"


def statistic_sql(staging: str, field: Field) -> str:
    """The imputation statistic of a field: its median or mean over every value that could be
    typed, as the original pipeline took it over every number it could parse.

    Over the one field alone, so it costs a pass over one column, and analytics need not hold
    its accepted rows in memory to compute it. A field the source lacks has no statistic (NULL).
    """
    if field.absent:
        return f"CAST(NULL AS {SQL_TYPES[field.kind]})"
    value = f"{field.name}_value"
    aggregate = f"CAST(round(median({value})) AS INTEGER)" if field.impute == "median" else (
        f"avg({value})")
    return f"(SELECT {aggregate} FROM ({typed_rows_sql(staging, (field,))}))"


def analytics_sql(staging: str, key: bytes | None, processed_at: datetime,
                  fields: tuple[Field, ...] = FIELDS) -> tuple[str, dict]:
    """Accepted rows, imputed, pseudonymized and banded; and the parameters to bind."""
    pseudonym, params = pseudonym_sql("customer_id_value", key)
    typed = [f for f in fields if f.kind != "id"]
    imputed = []
    for field in typed:
        if field.impute in ("median", "mean"):
            fill = statistic_sql(staging, field)
        else:
            fill = quote_literal(field.impute) if isinstance(field.impute, str) else repr(field.impute)
        imputed.append(f"coalesce({field.name}_value, {fill}) AS {field.name}")
    sql = f"""
        WITH imputed AS (
            SELECT {pseudonym} AS anonymized_customer_id,
                   {", ".join(imputed)},
                   source_row,
                   load_timestamp
            FROM ({typed_rows_sql(staging, fields)})
            WHERE problem_count = 0
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


def rejected_sql(staging: str, analytics: str, fields: tuple[Field, ...] = FIELDS) -> str:
    """Rows that could not be typed, with their first problem; the raw row stays in staging.

    Only the rows analytics did not take are typed again, to say why: every row has been typed
    once already, and rejections are few.
    """
    not_accepted = f"""
        SELECT * FROM ({staging}) AS staging
        ANTI JOIN (SELECT source_row FROM ({analytics})) AS accepted USING (source_row)
    """
    return f"""
        SELECT source_row,
               rejected_column AS column_name,
               rejected_reason AS reason,
               offending_value,
               problem_count,
               load_timestamp
        FROM ({typed_rows_sql(not_accepted, fields)})
        WHERE problem_count > 0
        ORDER BY source_row
    """
