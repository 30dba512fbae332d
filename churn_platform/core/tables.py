"""Every table of the warehouse, by name: `schema.table`, as SQL and asset keys spell them."""

# The ELT: the source as loaded, its typed split, and the history of its quality.
STAGING_TABLE = "staging.customer_churn"
ANALYTICS_TABLE = "analytics.customer_churn"
REJECTED_TABLE = "analytics.rejected_rows"
METRICS_TABLE = "analytics.data_quality_metrics"
SEGMENT_TABLE = "analytics.churn_by_segment"

# The churn-risk model: its trainings, its scores, and what of them leaves the warehouse.
EVALUATIONS_TABLE = "analytics.churn_model_evaluations"
SCORES_TABLE = "analytics.churn_scores"
SCORE_SUMMARY_TABLE = "analytics.churn_score_summary"

# Landing mode: every export kept, and the customer history built from them.
EXPORT_ROWS_TABLE = "landing.export_rows"
HISTORY_TABLE = "analytics.customer_history"  # a view: the closed versions and the open ones
CLOSED_VERSIONS_TABLE = "analytics.customer_versions_closed"
EVENTS_TABLE = "analytics.churn_events"
EXPORTS_TABLE = "analytics.history_exports"
LAST_SEEN_TABLE = "analytics.customer_last_seen"
RETENTION_TABLE = "analytics.retention_by_cohort"
MONTHLY_CHURN_TABLE = "analytics.monthly_churn"
