-- Grafana's read-only role: it may log in and SELECT from churn_metrics, nothing else.
-- Role name and password arrive as transaction-local settings (bound with set_config by the
-- export), so the password is never pasted into SQL text or logged with the statement.
-- Needs a user with CREATEROLE (or a superuser) who owns the churn_metrics schema.
DO $$
DECLARE
    reader text := current_setting('churn.reader_role');
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = reader) THEN
        EXECUTE format('CREATE ROLE %I', reader);
    END IF;
    EXECUTE format(
        'ALTER ROLE %I WITH LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION PASSWORD %L',
        reader, current_setting('churn.reader_password'));
    EXECUTE format('ALTER ROLE %I SET default_transaction_read_only = on', reader);
    EXECUTE format('GRANT CONNECT ON DATABASE %I TO %I', current_database(), reader);
    EXECUTE format('GRANT USAGE ON SCHEMA churn_metrics TO %I', reader);
    EXECUTE format('GRANT SELECT ON ALL TABLES IN SCHEMA churn_metrics TO %I', reader);
    EXECUTE format('ALTER DEFAULT PRIVILEGES IN SCHEMA churn_metrics GRANT SELECT ON TABLES TO %I',
                   reader);
END
$$;
