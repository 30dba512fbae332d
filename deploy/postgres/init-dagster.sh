#!/usr/bin/env bash
# Run once by the postgres image on an empty data volume (/docker-entrypoint-initdb.d), as the
# superuser, before init-metrics.sh: Dagster's own role and database. The role owns that database
# and nothing else (no superuser, no CREATEROLE, no CREATEDB): the webserver, the daemon and the
# code server keep runs, event logs and schedules there, and cannot reach the metrics database.
set -euo pipefail

psql -v ON_ERROR_STOP=1 --no-psqlrc --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
  -v db="${DAGSTER_PG_DB:?}" \
  -v role="${DAGSTER_PG_USER:?}" \
  -v password="${DAGSTER_PG_PASSWORD:?}" <<'SQL'
CREATE ROLE :"role" LOGIN PASSWORD :'password';
CREATE DATABASE :"db" OWNER :"role";
REVOKE ALL ON DATABASE :"db" FROM PUBLIC;
SQL
