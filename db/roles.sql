-- Cluster-wide roles of the rates system. Idempotent; runs on PostgreSQL 13 and later, and on
-- RDS as the master user (which is not a superuser). Passwords are never set here: the tooling
-- sets them from the secret store, as SCRAM verifiers.

DO $$
BEGIN
    -- Owns the schema objects; nobody logs in as it.
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'rates_owner') THEN
        CREATE ROLE rates_owner NOLOGIN;
    END IF;
    -- Group roles that access grants hand out.
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'rates_reader') THEN
        CREATE ROLE rates_reader NOLOGIN;
    END IF;
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'rates_writer') THEN
        CREATE ROLE rates_writer NOLOGIN IN ROLE rates_reader;
    END IF;
    -- The rates API's login: read-only.
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'rates_api') THEN
        CREATE ROLE rates_api LOGIN IN ROLE rates_reader;
    END IF;
END
$$;

-- The loader and migrations run as rates_owner (SET ROLE), so the admin must be a member.
GRANT rates_owner TO CURRENT_USER;
