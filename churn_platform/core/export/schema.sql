-- The serving tables Grafana reads. Every row carries the run that produced it (source_run_id)
-- and when it reached PostgreSQL (exported_at: the export transaction's start, the same for
-- every row of one export). Created when missing; run inside the export's transaction.
CREATE SCHEMA IF NOT EXISTS churn_metrics;

-- History tables, one snapshot per ELT run, keyed on snapshot_id (the root run id).
CREATE TABLE IF NOT EXISTS churn_metrics.kpi_snapshots (
    snapshot_id         text PRIMARY KEY,
    source_run_id       text NOT NULL,
    snapshot_at         timestamptz NOT NULL,
    total_records       bigint NOT NULL,
    analytics_records   bigint NOT NULL,
    rejected_rows       bigint NOT NULL,
    churn_rate_percent  double precision,
    avg_monthly_charges double precision,
    avg_tenure_months   double precision,
    exported_at         timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS churn_metrics.data_quality_snapshots (
    snapshot_id            text PRIMARY KEY,
    source_run_id          text NOT NULL,
    snapshot_at            timestamptz NOT NULL,
    source_file            text,
    total_records          bigint NOT NULL,
    analytics_records      bigint NOT NULL,
    rejected_rows          bigint NOT NULL,
    duplicate_customer_ids bigint NOT NULL,
    missing_cells          bigint NOT NULL,
    exported_at            timestamptz NOT NULL DEFAULT now()
);

-- Missing (and so imputed) cells per source column, long form: one series per column in Grafana.
CREATE TABLE IF NOT EXISTS churn_metrics.missing_values (
    snapshot_id   text NOT NULL,
    source_run_id text NOT NULL,
    snapshot_at   timestamptz NOT NULL,
    column_name   text NOT NULL,
    missing_count bigint NOT NULL,
    exported_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (snapshot_id, column_name)
);

CREATE TABLE IF NOT EXISTS churn_metrics.churn_by_segment (
    snapshot_id        text NOT NULL,
    source_run_id      text NOT NULL,
    snapshot_at        timestamptz NOT NULL,
    dimension          text NOT NULL,
    segment            text NOT NULL,
    customers          bigint NOT NULL,
    churned            bigint NOT NULL,
    churn_rate_percent double precision,
    exported_at        timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (snapshot_id, dimension, segment)
);

-- The churn-risk model: one row per training (snapshot_at: when it was trained), promoted or
-- refused with the gate's reason; and per scoring run, counts of scored customers by risk band,
-- segment and top reason. Never a customer's row.
CREATE TABLE IF NOT EXISTS churn_metrics.churn_model_evaluations (
    snapshot_id   text PRIMARY KEY,
    source_run_id text NOT NULL,
    snapshot_at   timestamptz NOT NULL,
    model_version text NOT NULL,
    n_train       bigint NOT NULL,
    positive_rate double precision NOT NULL,
    roc_auc       double precision,
    pr_auc        double precision,
    brier         double precision,
    promoted      boolean NOT NULL,
    reason        text NOT NULL,
    exported_at   timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS churn_metrics.churn_score_summary (
    snapshot_id           text NOT NULL,
    source_run_id         text NOT NULL,
    snapshot_at           timestamptz NOT NULL,
    model_version         text NOT NULL,
    dimension             text NOT NULL,
    segment               text NOT NULL,
    customers             bigint NOT NULL,
    high_risk             bigint NOT NULL,
    medium_risk           bigint NOT NULL,
    avg_churn_probability double precision,
    exported_at           timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (snapshot_id, dimension, segment)
);

-- State read from the Dagster instance. Latest check results and freshness are replaced whole on
-- every export; run history is upserted (a run exported while running is updated when it ends).
CREATE TABLE IF NOT EXISTS churn_metrics.asset_check_results (
    asset_key     text NOT NULL,
    check_name    text NOT NULL,
    passed        boolean,
    severity      text,
    status        text NOT NULL,
    evaluated_at  timestamptz,
    description   text,
    details       text,
    metadata      jsonb,
    source_run_id text,
    exported_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (asset_key, check_name)
);

-- freshness_state: the asset's freshness policy as Dagster last judged it (PASS, WARN, FAIL,
-- UNKNOWN before the first load, NOT_APPLICABLE without a policy).
CREATE TABLE IF NOT EXISTS churn_metrics.asset_freshness (
    asset_key            text PRIMARY KEY,
    last_materialized_at timestamptz,
    source_run_id        text,
    freshness_state      text NOT NULL DEFAULT 'UNKNOWN',
    exported_at          timestamptz NOT NULL DEFAULT now()
);
-- Added after the first release: a database made before it gains the column.
ALTER TABLE churn_metrics.asset_freshness
    ADD COLUMN IF NOT EXISTS freshness_state text NOT NULL DEFAULT 'UNKNOWN';

CREATE TABLE IF NOT EXISTS churn_metrics.pipeline_runs (
    source_run_id    text PRIMARY KEY,
    root_run_id      text,
    job_name         text NOT NULL,
    status           text NOT NULL,
    started_at       timestamptz,
    ended_at         timestamptz,
    duration_seconds double precision,
    step_retries     integer NOT NULL,
    retry_number     integer NOT NULL,
    updated_at       timestamptz NOT NULL,
    exported_at      timestamptz NOT NULL DEFAULT now()
);

-- One row per export: what it brought over, and the warehouse file's size at that moment.
CREATE TABLE IF NOT EXISTS churn_metrics.exports (
    source_run_id        text PRIMARY KEY,
    snapshots_added      integer NOT NULL,
    runs_synced          integer NOT NULL,
    warehouse_file_bytes bigint,
    exported_at          timestamptz NOT NULL DEFAULT now()
);

-- Landing mode (docs/landing-and-history.md): aggregates recomputed whole from customer history
-- in DuckDB, so they are replaced whole on every export. No customer id: counts per month only.
CREATE TABLE IF NOT EXISTS churn_metrics.retention_by_cohort (
    cohort_month       date NOT NULL,
    month              date NOT NULL,
    measured_on        date NOT NULL,
    months_since_start integer NOT NULL,
    customers          bigint NOT NULL,
    retained           bigint NOT NULL,
    retention_percent  double precision,
    exported_at        timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (cohort_month, month)
);

CREATE TABLE IF NOT EXISTS churn_metrics.monthly_churn (
    month        date NOT NULL,
    rule         text NOT NULL,
    churn_events bigint NOT NULL,
    exported_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (month, rule)
);
