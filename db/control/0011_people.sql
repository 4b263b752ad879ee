-- People's passwords are useless outside the proxy (issue 17). Idempotent: setup_control
-- runs every control migration on every start. Cluster-wide (roles).
--
--   dbgw_people  NOLOGIN marker, holds nothing: every person's role is a member (the
--                provisioner makes it one before the role may log in; db/provisioner.sql).
--                Where dbgw runs the server (the local stack, tests, compose), pg_hba admits
--                `+dbgw_people` only over TLS with a certificate from a client CA that only
--                the proxy and the rotation function hold (db/src/cluster.rs, PG_HBA). On
--                RDS people log in with IAM tokens; the membership is then only a marker.
--                It is never handed out as a catalogue role, and never taken away.

DO $$
DECLARE
    m record;
    marker pg_roles%ROWTYPE;
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'dbgw_people') THEN
        CREATE ROLE dbgw_people NOLOGIN;
    END IF;
    -- Attributes change only where they differ (as in 0006): on RDS this runs as the
    -- master, and only a superuser may name SUPERUSER, REPLICATION or BYPASSRLS.
    SELECT * INTO marker FROM pg_roles WHERE rolname = 'dbgw_people';
    IF marker.rolcanlogin OR marker.rolcreaterole OR marker.rolcreatedb THEN
        ALTER ROLE dbgw_people NOLOGIN NOCREATEROLE NOCREATEDB;
    END IF;
    IF marker.rolsuper OR marker.rolreplication OR marker.rolbypassrls THEN
        ALTER ROLE dbgw_people NOSUPERUSER NOREPLICATION NOBYPASSRLS;
    END IF;

    -- PostgreSQL 16 and later: CREATEROLE covers only roles one has ADMIN OPTION on.
    IF current_setting('server_version_num')::int >= 160000 THEN
        -- (EXECUTE: 15 cannot parse the options.)
        EXECUTE 'GRANT dbgw_people TO dbgw_provisioner WITH ADMIN OPTION, INHERIT FALSE, SET FALSE';
    END IF;

    -- People's roles made before the marker existed.
    FOR m IN SELECT r.rolname FROM pg_roles r
             WHERE r.rolname ~ '^p_[a-z0-9_]*_[0-9a-f]{16}$' AND NOT r.rolsuper
               AND NOT EXISTS (SELECT FROM pg_auth_members am JOIN pg_roles g ON g.oid = am.roleid
                               WHERE am.member = r.oid AND g.rolname = 'dbgw_people')
    LOOP
        EXECUTE format('GRANT dbgw_people TO %I', m.rolname);
    END LOOP;
END
$$;
