"""Helpers only the tests use: Grafana macro expansion and dashboard lint."""
