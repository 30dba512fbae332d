#!/usr/bin/env bash
# Run once by the postgres image on an empty data volume (/docker-entrypoint-initdb.d), as the
# superuser: the metrics database that the export writes (CHURN_METRICS_DSN) and Grafana reads.
# Two roles: the exporter owns the database and the export's schema; Grafana's role may only read.
# The roles are made here, by the superuser, so the exporter needs no CREATEROLE.
set -euo pipefail

psql -v ON_ERROR_STOP=1 --no-psqlrc --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
  -v db="${CHURN_METRICS_DB:?}" \
  -v writer="${CHURN_METRICS_USER:?}" \
  -v writer_password="${CHURN_METRICS_PASSWORD:?}" \
  -v reader="${CHURN_GRAFANA_DB_USER:?}" \
  -v reader_password="${CHURN_GRAFANA_DB_PASSWORD:?}" <<'SQL'
CREATE ROLE :"writer" LOGIN PASSWORD :'writer_password';
CREATE ROLE :"reader" LOGIN PASSWORD :'reader_password';
CREATE DATABASE :"db" OWNER :"writer";
REVOKE ALL ON DATABASE :"db" FROM PUBLIC;
GRANT CONNECT ON DATABASE :"db" TO :"reader";

\connect :"db"
-- The export's schema (churn_platform/export/postgres.py, SCHEMA), made up front so that the
-- reader's USAGE can be granted now; the export creates its tables in it, as the writer.
CREATE SCHEMA churn_metrics AUTHORIZATION :"writer";
GRANT USAGE ON SCHEMA churn_metrics TO :"reader";
-- Each table the writer creates later is readable by the reader as soon as it exists.
ALTER DEFAULT PRIVILEGES FOR ROLE :"writer" IN SCHEMA churn_metrics GRANT SELECT ON TABLES TO :"reader";
-- Belt and braces: a write grant given by mistake later still meets a read-only session.
ALTER ROLE :"reader" SET default_transaction_read_only = on;
SQL
