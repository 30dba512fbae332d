"""The metrics export to PostgreSQL, for Grafana."""
