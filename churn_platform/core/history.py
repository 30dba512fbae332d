"""Customer history across exports, churn events, retention by cohort: SQL run inside DuckDB.

`analytics.customer_history` is a type-2 slowly changing dimension keyed by the (keyed, stable)
pseudonym: one row per customer per period in which contract, internet service, tech support,
charges band, tenure band and churn stayed the same; `valid_from` is the export date the version
was first seen, `valid_to` the export date it stopped holding (exclusive; NULL while current).
`lifecycle` counts the customer's stays: a customer closed for absence who comes back opens a new
lifecycle (their cohort stays the one of their first sight).

Rules, stated once here and in docs/landing-and-history.md:
- An export's rows are its analytics rows; a customer id repeated in one export keeps its last row
  in file order (highest `source_row`); the repeats are counted in `history_exports`.
- Churn events: `churn_flag`: churn turned Yes from No within a lifecycle;
  `churn_flag_at_first_sight`: Yes the first time the customer is ever seen (churned before the
  first export: kept apart so the first month is not inflated); `missing`: absent (churn still
  No) from N consecutive export dates (CHURN_MISSING_EXPORTS_FOR_CHURN), dated by the first export
  they were missing from and detected on the N-th. Coming back already churned is no new event.
  Absence closes the version either way.
- Applying an export already in `history_exports` changes nothing. An export newer than every one
  applied is applied incrementally (its own rows against the current versions). Any other (a late
  export, or a second export of an already applied date) rebuilds history from every export in
  date order, one export per date: the last to arrive (a corrected re-export supersedes the first).
"""

from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime, timezone

import duckdb

from churn_platform.core.errors import InputError
from churn_platform.core.tables import (
    CLOSED_VERSIONS_TABLE,
    EVENTS_TABLE,
    EXPORTS_TABLE,
    HISTORY_TABLE,
    LAST_SEEN_TABLE,
)
from churn_platform.core.warehouse import quote_literal, table_exists, transaction

# The attributes whose change opens a new version.
ATTRIBUTES = ("contract_type", "internet_service", "tech_support", "monthly_charges_category",
              "tenure_category", "churn")
# What an export's rows must hold (analytics.customer_churn has all of them).
ROW_COLUMNS = ("anonymized_customer_id", "source_row", "tenure", *ATTRIBUTES)

VERSION_COLUMNS = ("anonymized_customer_id", "lifecycle", "valid_from", "valid_to", "is_current",
                   *ATTRIBUTES, "first_tenure", "closed_by", "opened_by_export")

# The history as one relation: closed versions, then each customer's open one.
HISTORY_VIEW_SQL = f"""CREATE VIEW IF NOT EXISTS {HISTORY_TABLE} AS
    SELECT {", ".join(VERSION_COLUMNS)} FROM {CLOSED_VERSIONS_TABLE}
    UNION ALL
    SELECT anonymized_customer_id, lifecycle, valid_from, CAST(NULL AS DATE) AS valid_to,
           true AS is_current, {", ".join(ATTRIBUTES)}, first_tenure,
           CAST(NULL AS VARCHAR) AS closed_by, opened_by_export
    FROM {LAST_SEEN_TABLE} WHERE is_current"""

CREATE_SQL = (
    "CREATE SCHEMA IF NOT EXISTS analytics",
    f"""CREATE TABLE IF NOT EXISTS {EXPORTS_TABLE} (
        export_key VARCHAR, export_date DATE, arrived_at TIMESTAMP, applied_at TIMESTAMP,
        customers BIGINT, repeated_rows BIGINT, superseded_by VARCHAR)""",
    # Closed versions only, appended as they close and never updated: an UPDATE closing versions
    # scattered over the whole history cost more with every export (1M customers: 1.54x by the
    # 30th). The open versions live in the narrow per-customer table below.
    f"""CREATE TABLE IF NOT EXISTS {CLOSED_VERSIONS_TABLE} (
        anonymized_customer_id UUID, lifecycle INTEGER, valid_from DATE, valid_to DATE,
        is_current BOOLEAN, {", ".join(f"{a} VARCHAR" for a in ATTRIBUTES)},
        first_tenure INTEGER, closed_by VARCHAR, opened_by_export VARCHAR)""",
    # One row per customer ever seen, updated in place each export (a cost in proportion to the
    # customers, not to the history): the last sighting, the latest lifecycle, the first sight
    # (the cohort), and the open version if any (is_current false once it closed).
    f"""CREATE TABLE IF NOT EXISTS {LAST_SEEN_TABLE} (
        anonymized_customer_id UUID, last_seen_date DATE, last_seen_tenure INTEGER,
        lifecycle INTEGER, first_seen_date DATE, first_seen_tenure INTEGER, is_current BOOLEAN,
        valid_from DATE, {", ".join(f"{a} VARCHAR" for a in ATTRIBUTES)}, first_tenure INTEGER,
        opened_by_export VARCHAR)""",
    HISTORY_VIEW_SQL,
    f"""CREATE TABLE IF NOT EXISTS {EVENTS_TABLE} (
        anonymized_customer_id UUID, lifecycle INTEGER, event_date DATE, detected_date DATE,
        rule VARCHAR, tenure INTEGER, contract_type VARCHAR, detected_by_export VARCHAR)""",
)


def restore_views(connection: duckdb.DuckDBPyConnection) -> None:
    """The history view, in a warehouse restored from a backup (which holds tables, not views)."""
    if table_exists(connection, CLOSED_VERSIONS_TABLE) and table_exists(connection,
                                                                         LAST_SEEN_TABLE):
        connection.execute(HISTORY_VIEW_SQL)


@dataclass(frozen=True)
class ExportRef:
    """An export as history knows it: its partition key, its date, when it arrived (UTC)."""

    key: str
    export_date: date
    arrived_at: datetime

    @property
    def order(self) -> tuple:
        return self.export_date, self.arrived_at, self.key


def _date(value: date) -> str:
    return f"DATE '{value.isoformat()}'"


def apply_statements(export: ExportRef, rows: str, missing_for_churn: int) -> list[str]:
    """The statements applying one export newer than every applied one, in order.

    `rows` is a SELECT giving ROW_COLUMNS for this export. Every statement reads the export and
    the per-customer table, never the closed versions: the cost follows the export and the
    customers, not the history. The per-customer table is updated in place: customers seen again
    unchanged get their `last_seen_date` only; whole rows are written for the few that are new,
    changed, came back or went missing (rewriting it whole cost 0.9 CPU s per 1M customers).
    """
    d, key = _date(export.export_date), quote_literal(export.key)
    arrived = export.arrived_at.astimezone(timezone.utc).replace(tzinfo=None).isoformat(sep=" ")
    changed = " OR ".join(f"s.{a} IS DISTINCT FROM e.{a}" for a in ATTRIBUTES)
    attrs = ", ".join(ATTRIBUTES)
    current_attrs = ", ".join(f"s.{a} AS current_{a}" for a in ATTRIBUTES)
    closed = ", ".join(f"current_{a}" for a in ATTRIBUTES)

    def written(b: str) -> dict[str, str]:
        """A seen customer's row in the per-customer table, from `_before` (alias `b`)."""
        # Kept open (same attributes): the open version's columns; else a version opened now.
        kept = f"{b}has_current AND NOT {b}changed"
        return {
            "last_seen_date": d, "last_seen_tenure": f"{b}tenure",
            # The current lifecycle, or the next after an absence.
            "lifecycle": f"CASE WHEN {b}has_current THEN {b}current_lifecycle"
                         f" ELSE coalesce({b}max_lifecycle + 1, 1) END",
            "is_current": "true",
            "valid_from": f"CASE WHEN {kept} THEN {b}current_valid_from ELSE {d} END",
            **{a: f"{b}{a}" for a in ATTRIBUTES},
            "first_tenure": f"CASE WHEN {kept} THEN {b}current_first_tenure ELSE {b}tenure END",
            "opened_by_export": f"CASE WHEN {kept} THEN {b}current_opened_by_export"
                                f" ELSE {key} END",
        }

    return [
        # The export, one row per customer: the last in file order. Only the rare repeated ids
        # go through the window (over every row it cost twice as much: 0.7 CPU s per 1M rows).
        f"""CREATE OR REPLACE TEMP TABLE _export AS
            WITH exported AS (SELECT * FROM ({rows})),
            repeated AS (
                SELECT anonymized_customer_id, count(*) - 1 AS repeats
                FROM exported GROUP BY anonymized_customer_id HAVING count(*) > 1)
            SELECT anonymized_customer_id, tenure, {attrs}, 0 AS repeats
            FROM exported AS x
            WHERE NOT EXISTS (SELECT 1 FROM repeated AS r WHERE r.anonymized_customer_id
                                                 IS NOT DISTINCT FROM x.anonymized_customer_id)
            UNION ALL
            SELECT x.anonymized_customer_id, x.tenure, {", ".join(f"x.{a}" for a in ATTRIBUTES)},
                   r.repeats
            FROM exported AS x
            JOIN repeated AS r
              ON r.anonymized_customer_id IS NOT DISTINCT FROM x.anonymized_customer_id
            QUALIFY row_number() OVER (PARTITION BY x.anonymized_customer_id
                                       ORDER BY x.source_row DESC) = 1""",
        # Every customer against the export, before anything changes, in one join: kept are
        # those with something to write beyond the date (new, changed, a new tenure, back after
        # an absence) and those with an open version this export lacks.
        f"""CREATE OR REPLACE TEMP TABLE _before AS
            SELECT coalesce(e.anonymized_customer_id, s.anonymized_customer_id)
                       AS anonymized_customer_id,
                   e.anonymized_customer_id IS NOT NULL AS present,
                   e.* EXCLUDE (anonymized_customer_id),
                   coalesce(s.is_current, false) AS has_current,
                   s.lifecycle AS current_lifecycle,
                   s.churn AS current_churn,
                   coalesce(e.anonymized_customer_id IS NOT NULL AND s.is_current
                            AND ({changed}), false) AS changed,
                   s.lifecycle AS max_lifecycle,
                   s.valid_from AS current_valid_from, s.first_tenure AS current_first_tenure,
                   s.opened_by_export AS current_opened_by_export, {current_attrs},
                   coalesce(s.first_seen_date, {d}) AS first_seen_date,
                   coalesce(s.first_seen_tenure, e.tenure) AS first_seen_tenure,
                   s.last_seen_date, s.last_seen_tenure
            FROM _export AS e
            FULL JOIN {LAST_SEEN_TABLE} AS s
                   ON s.anonymized_customer_id = e.anonymized_customer_id
            WHERE CASE WHEN e.anonymized_customer_id IS NULL THEN s.is_current
                       WHEN s.anonymized_customer_id IS NULL THEN true
                       ELSE NOT s.is_current OR s.last_seen_tenure IS DISTINCT FROM e.tenure
                            OR ({changed}) END""",
        f"""INSERT INTO {EXPORTS_TABLE}
            SELECT {key}, {d}, TIMESTAMP '{arrived}', now()::TIMESTAMP,
                   (SELECT count(*) FROM _export),
                   (SELECT coalesce(sum(repeats), 0) FROM _export),
                   NULL""",
        # Churn turned Yes, or Yes at the very first sight; not on coming back already churned.
        f"""INSERT INTO {EVENTS_TABLE}
            SELECT anonymized_customer_id, coalesce(current_lifecycle, 1), {d}, {d},
                   CASE WHEN has_current THEN 'churn_flag' ELSE 'churn_flag_at_first_sight' END,
                   tenure, contract_type, {key}
            FROM _before
            WHERE present AND churn = 'Yes'
              AND (has_current AND current_churn IS DISTINCT FROM 'Yes'
                   OR NOT has_current AND max_lifecycle IS NULL)""",
        # Open versions whose customer this export lacks: how many export dates since seen.
        f"""CREATE OR REPLACE TEMP TABLE _absent AS
            SELECT b.anonymized_customer_id, current_lifecycle AS lifecycle,
                   current_valid_from AS valid_from, {closed},
                   current_first_tenure AS first_tenure,
                   current_opened_by_export AS opened_by_export, last_seen_tenure,
                   gap.missed, gap.first_missed
            FROM _before AS b
            JOIN (SELECT seen.last_seen_date, count(DISTINCT x.export_date) AS missed,
                         min(x.export_date) AS first_missed
                  FROM (SELECT DISTINCT last_seen_date FROM _before WHERE NOT present) AS seen
                  JOIN {EXPORTS_TABLE} AS x ON x.export_date > seen.last_seen_date
                  GROUP BY seen.last_seen_date) AS gap ON gap.last_seen_date = b.last_seen_date
            WHERE NOT b.present AND gap.missed >= {missing_for_churn}""",
        f"""INSERT INTO {EVENTS_TABLE}
            SELECT anonymized_customer_id, lifecycle, first_missed, {d}, 'missing',
                   last_seen_tenure, current_contract_type, {key}
            FROM _absent WHERE current_churn IS DISTINCT FROM 'Yes'""",
        # Versions closed by absence, then by a change: appended, never updated in place.
        f"""INSERT INTO {CLOSED_VERSIONS_TABLE}
            SELECT anonymized_customer_id, lifecycle, valid_from, first_missed, false, {closed},
                   first_tenure, 'missing', opened_by_export
            FROM _absent""",
        f"""INSERT INTO {CLOSED_VERSIONS_TABLE}
            SELECT anonymized_customer_id, current_lifecycle, current_valid_from, {d}, false,
                   {closed}, current_first_tenure, 'change', current_opened_by_export
            FROM _before WHERE changed""",
        # Seen again with nothing else to write: the date only (a narrow update, no rewrite).
        f"""UPDATE {LAST_SEEN_TABLE} AS s SET last_seen_date = {d}
            WHERE is_current AND NOT EXISTS (
                SELECT 1 FROM _before AS b
                WHERE NOT b.present AND b.anonymized_customer_id = s.anonymized_customer_id)""",
        f"""UPDATE {LAST_SEEN_TABLE} SET is_current = false
            WHERE anonymized_customer_id IN (SELECT anonymized_customer_id FROM _absent)""",
        f"""UPDATE {LAST_SEEN_TABLE} AS s
            SET {", ".join(f"{c} = {v}" for c, v in written("b.").items())}
            FROM (SELECT * FROM _before WHERE present AND max_lifecycle IS NOT NULL) AS b
            WHERE s.anonymized_customer_id = b.anonymized_customer_id""",
        f"""INSERT INTO {LAST_SEEN_TABLE} BY NAME
            SELECT anonymized_customer_id, first_seen_date, first_seen_tenure,
                   {", ".join(f"{v} AS {c}" for c, v in written("").items())}
            FROM _before WHERE present AND max_lifecycle IS NULL""",
        "DROP TABLE _export",
        "DROP TABLE _before",
        "DROP TABLE _absent",
    ]


def _check_threshold(missing_for_churn: int) -> None:
    if missing_for_churn < 1:
        raise InputError(
            f"CHURN_MISSING_EXPORTS_FOR_CHURN must be 1 or more, not {missing_for_churn}"
        )


def applied_exports(connection: duckdb.DuckDBPyConnection) -> list[ExportRef]:
    """The exports history was built from (superseded ones too), in load order."""
    rows = connection.execute(
        f"SELECT export_key, export_date, arrived_at FROM {EXPORTS_TABLE}"
    ).fetchall()
    refs = [ExportRef(k, d, a.replace(tzinfo=timezone.utc)) for k, d, a in rows]
    return sorted(refs, key=lambda r: r.order)


def apply_export(connection: duckdb.DuckDBPyConnection, export: ExportRef,
                 rows_for: Callable[[ExportRef], str], missing_for_churn: int) -> str:
    """Bring history, events and the exports log up to date with `export`, in one transaction.

    `rows_for(ref)` gives the SELECT of an export's rows (ROW_COLUMNS): only the new export's
    when appending, every applied export's when rebuilding. Returns what was done:
    "unchanged", "appended" or "rebuilt". On any error the previous tables stay.
    """
    _check_threshold(missing_for_churn)
    with transaction(connection, f"updating customer history with export {export.key}"):
        # Row order means nothing in these tables; an ordered parallel write (the session may
        # keep the raw load's setting) is written again at checkpoint (1M customers: about 1 s).
        connection.execute("SET SESSION preserve_insertion_order = false")
        old_layout = _drop_old_layout(connection)
        for statement in CREATE_SQL:
            connection.execute(statement)
        applied = applied_exports(connection)
        if old_layout:
            _rebuild(connection, [*applied, export] if all(ref.key != export.key for ref in applied)
                     else applied, rows_for, missing_for_churn)
            outcome = "rebuilt"
        elif any(ref.key == export.key for ref in applied):
            outcome = "unchanged"
        elif all(ref.export_date < export.export_date for ref in applied):
            for statement in apply_statements(export, rows_for(export), missing_for_churn):
                connection.execute(statement)
            outcome = "appended"
        else:
            _rebuild(connection, [*applied, export], rows_for, missing_for_churn)
            outcome = "rebuilt"
    return outcome


def _drop_old_layout(connection) -> bool:
    """Drop history kept as one updated table (before the closed versions moved apart), so that
    it is rebuilt from the exports' rows; True if there was one."""
    found = table_exists(connection, HISTORY_TABLE)
    if found:
        connection.execute(f"DROP TABLE {HISTORY_TABLE}")
        connection.execute(f"DROP TABLE IF EXISTS {LAST_SEEN_TABLE}")
    return bool(found)


def _rebuild(connection, exports: list[ExportRef], rows_for, missing_for_churn: int) -> None:
    """History from nothing, one export per date (the last to arrive), in date order."""
    for table in (CLOSED_VERSIONS_TABLE, EVENTS_TABLE, EXPORTS_TABLE, LAST_SEEN_TABLE):
        connection.execute(f"DELETE FROM {table}")
    latest: dict[date, ExportRef] = {}
    for ref in sorted(exports, key=lambda r: r.order):
        latest[ref.export_date] = ref
    for ref in sorted(latest.values(), key=lambda r: r.order):
        for statement in apply_statements(ref, rows_for(ref), missing_for_churn):
            connection.execute(statement)
    for ref in exports:
        winner = latest[ref.export_date]
        if winner.key != ref.key:
            arrived = ref.arrived_at.astimezone(timezone.utc).replace(tzinfo=None)
            connection.execute(
                f"INSERT INTO {EXPORTS_TABLE} VALUES (?, ?, ?, now()::TIMESTAMP, NULL, NULL, ?)",
                [ref.key, ref.export_date, arrived, winner.key],
            )


def retention_by_cohort_sql(exports: str = EXPORTS_TABLE, customers: str = LAST_SEEN_TABLE,
                            closed: str = CLOSED_VERSIONS_TABLE) -> str:
    """Per cohort month and calendar month with exports: customers, retained, retention %.

    The cohort month is the month a customer started: their first sight's export date minus
    their tenure then, in months. A month is measured at its last export date: a customer of the
    cohort first seen by then is retained when a version with churn No was open on that date
    (absent for fewer than N exports still counts as open). Customers who left before the first
    export are in no cohort: early cohorts look better than they were (survivor bias).
    """
    return f"""
        WITH first_sight AS (
            SELECT anonymized_customer_id, first_seen_date AS first_seen,
                   CAST(date_trunc('month', first_seen_date - to_months(first_seen_tenure))
                        AS DATE) AS cohort_month
            FROM {customers}
        ),
        measured AS (
            SELECT CAST(date_trunc('month', export_date) AS DATE) AS month,
                   max(export_date) AS measured_on
            FROM {exports} GROUP BY 1
        ),
        -- Open versions from the per-customer table, closed ones from their own table: DuckDB
        -- pushes `valid_to > measured_on` into that scan, and closed versions are appended in
        -- closing order, so the row groups of versions closed before the first month are skipped.
        open_on AS (
            SELECT s.anonymized_customer_id, m.month
            FROM {customers} AS s
            JOIN measured AS m ON s.valid_from <= m.measured_on
            WHERE s.is_current AND s.churn = 'No'
            UNION
            SELECT c.anonymized_customer_id, m.month
            FROM {closed} AS c
            JOIN measured AS m ON c.valid_from <= m.measured_on AND c.valid_to > m.measured_on
            WHERE c.churn = 'No'
        )
        SELECT f.cohort_month, m.month, m.measured_on,
               CAST(datediff('month', f.cohort_month, m.month) AS INTEGER) AS months_since_start,
               count(*) AS customers,
               count(o.anonymized_customer_id) AS retained,
               round(100.0 * count(o.anonymized_customer_id) / count(*), 2) AS retention_percent
        FROM first_sight AS f
        JOIN measured AS m ON f.first_seen <= m.measured_on
        LEFT JOIN open_on AS o
               ON o.anonymized_customer_id = f.anonymized_customer_id AND o.month = m.month
        GROUP BY f.cohort_month, m.month, m.measured_on
        ORDER BY f.cohort_month, m.month
    """


def monthly_churn_sql(events: str = EVENTS_TABLE) -> str:
    """Churn events per calendar month of their event date, by the rule that found them."""
    return f"""
        SELECT CAST(date_trunc('month', event_date) AS DATE) AS month, rule,
               count(*) AS churn_events
        FROM {events}
        GROUP BY ALL
        ORDER BY month, rule
    """
