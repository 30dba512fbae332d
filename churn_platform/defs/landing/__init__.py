"""The landing folder: every export file registered as a partition of `churn_exports`."""
