"""The churn model's evaluations and score summaries in PostgreSQL: the warehouse's numbers,
exported once, and never a customer's row."""

from churn_platform_tests.conftest import query
from churn_platform_tests.export_support import pg_rows

SUMMARY = ("snapshot_id, source_run_id, model_version, dimension, segment, customers, high_risk,"
           " medium_risk")


def test_evaluations_and_score_summaries_are_exported_once(elt_history, pg_dsn, monkeypatch):
    assert elt_history.export(monkeypatch, pg_dsn).success
    assert elt_history.export(monkeypatch, pg_dsn).success  # twice: nothing doubles
    database = elt_history.database
    evaluations = pg_rows(pg_dsn, "SELECT model_version, n_train, roc_auc, promoted, reason"
                                  " FROM churn_metrics.churn_model_evaluations")
    assert evaluations == query(database, "SELECT model_version, n_train, roc_auc, promoted,"
                                          " reason FROM analytics.churn_model_evaluations")
    [(version, _, roc_auc, promoted, _)] = evaluations
    assert promoted and roc_auc > 0.7
    summary = sorted(pg_rows(pg_dsn, f"SELECT {SUMMARY} FROM churn_metrics.churn_score_summary"))
    assert summary == sorted(query(database, f"SELECT {SUMMARY.replace('source_run_id', 'run_id')}"
                                             " FROM analytics.churn_score_summary"))
    # Two re-scoring ELT runs after the model job's own scoring: three snapshots.
    assert len({row[0] for row in summary}) == 3 and {row[2] for row in summary} == {version}
    scored = query(database, "SELECT count(*), count(*) FILTER (WHERE risk_band = 'High')"
                             " FROM analytics.churn_scores")[0]
    for dimension in ("risk_band", "contract_type", "tenure_category",
                      "monthly_charges_category", "reason"):
        assert pg_rows(pg_dsn, """
            SELECT sum(customers), sum(high_risk) FROM churn_metrics.churn_score_summary
            WHERE dimension = %s
              AND snapshot_at = (SELECT max(snapshot_at) FROM churn_metrics.churn_score_summary)
        """, [dimension]) == [scored], dimension


def test_no_customer_row_or_pseudonym_is_exported(elt_history, pg_dsn, monkeypatch):
    assert elt_history.export(monkeypatch, pg_dsn).success
    ids = {str(r[0]) for r in query(elt_history.database,
                                    "SELECT anonymized_customer_id FROM analytics.churn_scores")}
    exported = "\n".join(
        repr(pg_rows(pg_dsn, f"SELECT * FROM churn_metrics.{table}"))
        for table in ("churn_model_evaluations", "churn_score_summary"))
    assert len(ids) > 500 and "Month-to-Month" in exported
    assert not [i for i in ids if i in exported]
