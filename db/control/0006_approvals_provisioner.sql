-- The approvals app's login cannot exceed its job (issue 17, item 4). Idempotent:
-- setup_control runs every control migration on every start. Cluster-wide (roles); the
-- functions the login calls are per database (db/provisioner.sql, installed by
-- setup_control in `postgres` and the control plane's database after the migrations).
--
-- Before: the login had CREATEROLE. On PostgreSQL 15 and older that lets a role grant any
-- non-superuser role, predefined ones included, so the login could GRANT
-- pg_execute_server_program to itself (OS commands as `postgres`), pg_read_all_data, or
-- set rates-api's password. Now:
--   dbgw_provisioner  NOLOGIN, CREATEROLE, pg_signal_backend: owns the dbgw_provision
--                     functions (SECURITY DEFINER), which act on people's roles only and
--                     hand out only roles marked with dbgw_grantable;
--   dbgw_grantable    NOLOGIN marker, holds nothing: a role R may be handed out when
--                     `GRANT dbgw_grantable TO R` was done (by an admin);
--   dbgw_approvals    LOGIN and nothing else on the server: no CREATEROLE, no membership,
--                     no ADMIN OPTION; EXECUTE on the functions (db/provisioner.sql).

--
-- Attributes are changed only where they differ from what they must be: on RDS this runs
-- as the master, not a superuser, and PostgreSQL lets only a superuser name SUPERUSER,
-- REPLICATION or BYPASSRLS in an ALTER ROLE, even to say NO (a role that has one of them
-- was made by a superuser, and only a superuser can take it away: then this fails).

DO $$
DECLARE
    m record;
    r pg_roles%ROWTYPE;
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'dbgw_provisioner') THEN
        CREATE ROLE dbgw_provisioner NOLOGIN CREATEROLE;
    END IF;
    SELECT * INTO r FROM pg_roles WHERE rolname = 'dbgw_provisioner';
    IF r.rolcanlogin OR NOT r.rolcreaterole OR r.rolcreatedb THEN
        ALTER ROLE dbgw_provisioner NOLOGIN CREATEROLE NOCREATEDB;
    END IF;
    IF r.rolsuper OR r.rolreplication OR r.rolbypassrls THEN
        ALTER ROLE dbgw_provisioner NOSUPERUSER NOREPLICATION NOBYPASSRLS;
    END IF;
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'dbgw_grantable') THEN
        CREATE ROLE dbgw_grantable NOLOGIN;
    END IF;
    SELECT * INTO r FROM pg_roles WHERE rolname = 'dbgw_grantable';
    IF r.rolcanlogin OR r.rolcreaterole OR r.rolcreatedb THEN
        ALTER ROLE dbgw_grantable NOLOGIN NOCREATEROLE NOCREATEDB;
    END IF;
    IF r.rolsuper OR r.rolreplication OR r.rolbypassrls THEN
        ALTER ROLE dbgw_grantable NOSUPERUSER NOREPLICATION NOBYPASSRLS;
    END IF;

    -- Whoever installs the functions as their owner (on RDS the master, not a superuser)
    -- must be able to act as the provisioner.
    IF NOT (SELECT rolsuper FROM pg_roles WHERE rolname = current_user) THEN
        EXECUTE format('GRANT dbgw_provisioner TO %I', current_user);
    END IF;

    -- The catalogue's roles of the rates system. Add your own: GRANT dbgw_grantable TO <role>
    -- (and on PostgreSQL 16+ the ADMIN OPTION below).
    IF EXISTS (SELECT FROM pg_roles WHERE rolname = 'rates_reader') THEN
        GRANT dbgw_grantable TO rates_reader;
    END IF;
    IF EXISTS (SELECT FROM pg_roles WHERE rolname = 'rates_writer') THEN
        GRANT dbgw_grantable TO rates_writer;
    END IF;

    -- PostgreSQL 16 and later: CREATEROLE covers only roles one has ADMIN OPTION on.
    IF current_setting('server_version_num')::int >= 160000 THEN
        FOR m IN SELECT rolname FROM pg_roles
                 WHERE rolname IN ('rates_reader', 'rates_writer')
                    OR (rolname ~ '^p_[a-z0-9_]*_[0-9a-f]{16}$' AND NOT rolsuper)
        LOOP
            EXECUTE format('GRANT %I TO dbgw_provisioner WITH ADMIN OPTION, INHERIT FALSE, SET FALSE',
                           m.rolname);
        END LOOP;
        -- 16+ records who granted a membership, and only that grantor (or a role with its
        -- privileges) may revoke it: a person's membership granted by someone else (before
        -- this migration, by the old CREATEROLE login or an admin; on a server upgraded
        -- from 15) would outlive the provisioner's REVOKE. Re-grant each as the provisioner.
        -- (Also keeps the CASCADE below from ending people's live access: it drops the grants
        -- the old login made with its ADMIN OPTION.)
        FOR m IN SELECT g.rolname AS role, u.rolname AS person, gr.rolname AS grantor
                 FROM pg_auth_members am
                 JOIN pg_roles g ON g.oid = am.roleid
                 JOIN pg_roles u ON u.oid = am.member
                 JOIN pg_roles gr ON gr.oid = am.grantor
                 WHERE u.rolname ~ '^p_[a-z0-9_]*_[0-9a-f]{16}$'
                   AND gr.rolname <> 'dbgw_provisioner'
                   AND EXISTS (SELECT FROM pg_auth_members pa JOIN pg_roles p ON p.oid = pa.member
                               WHERE p.rolname = 'dbgw_provisioner' AND pa.roleid = am.roleid
                                 AND pa.admin_option)
        LOOP
            EXECUTE format('GRANT %I TO %I GRANTED BY dbgw_provisioner', m.role, m.person);
            BEGIN
                EXECUTE format('REVOKE %I FROM %I GRANTED BY %I', m.role, m.person, m.grantor);
            EXCEPTION WHEN insufficient_privilege THEN
                RAISE WARNING 'dbgw: % is a member of % by a grant of %, which this login cannot revoke: revoke it as % or a superuser',
                    m.person, m.role, m.grantor, m.grantor;
            END;
        END LOOP;
    END IF;

    -- The app's login: no CREATEROLE, and no role at all (pg_signal_backend before; on
    -- PostgreSQL 16 the ADMIN OPTION on the catalogue roles and on every role it created).
    IF EXISTS (SELECT FROM pg_roles WHERE rolname = 'dbgw_approvals') THEN
        SELECT * INTO r FROM pg_roles WHERE rolname = 'dbgw_approvals';
        IF r.rolcreaterole OR r.rolcreatedb THEN
            ALTER ROLE dbgw_approvals NOCREATEROLE NOCREATEDB;
        END IF;
        IF r.rolsuper OR r.rolreplication OR r.rolbypassrls THEN
            ALTER ROLE dbgw_approvals NOSUPERUSER NOREPLICATION NOBYPASSRLS;
        END IF;
        FOR m IN SELECT g.rolname AS role, gr.rolname AS grantor
                 FROM pg_auth_members am
                 JOIN pg_roles g ON g.oid = am.roleid
                 JOIN pg_roles u ON u.oid = am.member
                 LEFT JOIN pg_roles gr ON gr.oid = am.grantor
                 WHERE u.rolname = 'dbgw_approvals'
        LOOP
            IF current_setting('server_version_num')::int >= 160000 AND m.grantor IS NOT NULL THEN
                EXECUTE format('REVOKE %I FROM dbgw_approvals GRANTED BY %I CASCADE', m.role, m.grantor);
            ELSE
                EXECUTE format('REVOKE %I FROM dbgw_approvals CASCADE', m.role);
            END IF;
        END LOOP;
    END IF;
END
$$;
GRANT pg_signal_backend TO dbgw_provisioner;
