-- The approvals app's only way to change roles (issue 17, item 4): functions in schema
-- dbgw_provision, SECURITY DEFINER, owned by the NOLOGIN dbgw_provisioner (CREATEROLE,
-- pg_signal_backend; db/control/0006_approvals_provisioner.sql). The app's login
-- (dbgw_approvals) has EXECUTE on them and nothing else. Functions live in a database:
-- setup_control installs this file in `postgres` (the app's target) and in the control
-- plane's `dbgw` (where the rotation function logs in as the app's login to set a person's
-- password). Idempotent; runs as the admin after the control migrations.
--
-- Every function checks its arguments:
--   a person's role is `p_<letters, digits, _>_<16 lowercase hex>`, at most 63 characters
--   (grants::person_role), and to be given a password, a login or a role it must hold
--   nothing but grantable roles (and the marker dbgw_people, which every person's role
--   holds and never loses: pg_hba asks its members for the proxy's client certificate;
--   db/control/0011_people.sql; and on RDS rds_iam, see use_iam): no attribute beyond
--   LOGIN, no other membership, no
--   members, no privilege granted to it directly;
--   a grantable role is one an admin marked (GRANT dbgw_grantable TO <role>): NOLOGIN, no
--   attribute, not predefined (pg_*), and not a member, directly or not, of a predefined
--   role, of a role with attributes, or of the provisioner.
-- Refusals are SQLSTATE 42501. Passwords arrive as SCRAM verifiers only and are never
-- written to a message.

CREATE SCHEMA IF NOT EXISTS dbgw_provision AUTHORIZATION dbgw_provisioner;
ALTER SCHEMA dbgw_provision OWNER TO dbgw_provisioner;
REVOKE ALL ON SCHEMA dbgw_provision FROM PUBLIC;

-- Whether `candidate` may be handed out.
CREATE OR REPLACE FUNCTION dbgw_provision.grantable(candidate text) RETURNS boolean
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $fn$
    SELECT EXISTS (
        SELECT FROM pg_roles g
        JOIN pg_auth_members m ON m.member = g.oid
        JOIN pg_roles marker ON marker.oid = m.roleid AND marker.rolname = 'dbgw_grantable'
        WHERE g.rolname = candidate
          AND NOT (g.rolcanlogin OR g.rolsuper OR g.rolcreaterole OR g.rolcreatedb
                   OR g.rolreplication OR g.rolbypassrls)
          AND g.rolname !~ '^pg_'
          AND g.rolname NOT IN ('dbgw_provisioner', 'dbgw_grantable', 'dbgw_approvals', 'dbgw_people', 'rds_iam')
          AND NOT EXISTS (
              SELECT FROM pg_roles p
              WHERE p.oid <> g.oid
                AND ((p.rolname ~ '^pg_' AND p.rolname <> 'pg_database_owner')
                     OR p.rolsuper OR p.rolcreaterole OR p.rolcreatedb OR p.rolreplication
                     OR p.rolbypassrls OR p.rolname = 'dbgw_provisioner')
                AND pg_has_role(g.oid, p.oid, 'MEMBER'))
    )
$fn$;

-- Refuses a name that is not a person's role. Returns the role's oid, NULL if there is no
-- such role. With `full_check`, also refuses a role that holds anything but grantable roles.
CREATE OR REPLACE FUNCTION dbgw_provision.person(person_role text, full_check boolean) RETURNS oid
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $fn$
DECLARE
    r pg_roles%ROWTYPE;
    other text;
BEGIN
    IF person_role IS NULL OR length(person_role) > 63 OR person_role !~ '^p_[a-z0-9_]*_[0-9a-f]{16}$' THEN
        RAISE EXCEPTION 'dbgw_provision: "%" is not a person''s role (p_<email>_<16 hex>)', person_role
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    SELECT * INTO r FROM pg_roles WHERE rolname = person_role;
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;
    IF NOT full_check THEN
        RETURN r.oid;
    END IF;
    IF r.rolsuper OR r.rolcreaterole OR r.rolcreatedb OR r.rolreplication OR r.rolbypassrls THEN
        RAISE EXCEPTION 'dbgw_provision: role "%" has administrative attributes; not a person''s role', person_role
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    SELECT g.rolname INTO other
    FROM pg_auth_members m JOIN pg_roles g ON g.oid = m.roleid
    WHERE m.member = r.oid AND g.rolname NOT IN ('dbgw_people', 'rds_iam')
      AND NOT dbgw_provision.grantable(g.rolname)
    LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'dbgw_provision: role "%" is a member of "%", which is not grantable', person_role, other
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    IF EXISTS (SELECT FROM pg_auth_members m WHERE m.roleid = r.oid
               AND NOT EXISTS (SELECT FROM pg_roles p WHERE p.oid = m.member
                               AND p.rolname = 'dbgw_provisioner')) THEN
        RAISE EXCEPTION 'dbgw_provision: role "%" has members; not a person''s role', person_role
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    -- Privileges granted to the role itself (objects it owns are not counted: a person's
    -- temporary table would otherwise hold up their next grant).
    IF EXISTS (SELECT FROM pg_shdepend d
               WHERE d.refclassid = 'pg_authid'::regclass AND d.refobjid = r.oid
                 AND d.deptype = 'a') THEN
        RAISE EXCEPTION 'dbgw_provision: role "%" holds privileges granted to it directly; not a person''s role', person_role
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    RETURN r.oid;
END
$fn$;

-- Makes a person's role a member of dbgw_people (db/control/0011_people.sql), the marker by
-- which pg_hba asks people's logins for the proxy's client certificate. Not granted to
-- the app: ensure_role and set_login call it, so no person's role can log in without it.
CREATE OR REPLACE FUNCTION dbgw_provision.mark_person(person_role text) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $fn$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_auth_members m
                   JOIN pg_roles u ON u.oid = m.member JOIN pg_roles g ON g.oid = m.roleid
                   WHERE u.rolname = person_role AND g.rolname = 'dbgw_people') THEN
        EXECUTE format('GRANT dbgw_people TO %I', person_role);
    END IF;
END
$fn$;

-- Creates the person's role, NOLOGIN, if it does not exist. Returns whether it did.
CREATE OR REPLACE FUNCTION dbgw_provision.ensure_role(person_role text) RETURNS boolean
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $fn$
BEGIN
    IF dbgw_provision.person(person_role, true) IS NOT NULL THEN
        PERFORM dbgw_provision.mark_person(person_role);
        RETURN false;
    END IF;
    EXECUTE format('CREATE ROLE %I NOLOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS',
                   person_role);
    PERFORM dbgw_provision.mark_person(person_role);
    RETURN true;
EXCEPTION WHEN duplicate_object THEN
    -- Made meanwhile by another call; check it as any existing one.
    PERFORM dbgw_provision.person(person_role, true);
    PERFORM dbgw_provision.mark_person(person_role);
    RETURN false;
END
$fn$;

-- Whether the role is a member of rds_iam (RDS: it logs in with IAM auth tokens only).
CREATE OR REPLACE FUNCTION dbgw_provision.uses_iam(person_oid oid) RETURNS boolean
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $fn$
    SELECT EXISTS (SELECT FROM pg_auth_members m JOIN pg_roles g ON g.oid = m.roleid
                   WHERE m.member = person_oid AND g.rolname = 'rds_iam')
$fn$;

-- RDS IAM authentication for the person (issue 17: people's passwords useless outside the
-- proxy): a member of rds_iam, with no password. RDS then accepts only an IAM auth token for
-- the role, which only the proxy's task role may sign (rds-db:connect on p_*). Never taken
-- back (revoke_role refuses rds_iam; set_password refuses its members). Returns whether the
-- membership was new. A server without rds_iam (not RDS) is refused: there the role would
-- simply lose its password.
CREATE OR REPLACE FUNCTION dbgw_provision.use_iam(person_role text) RETURNS boolean
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $fn$
DECLARE
    person_oid oid;
    added boolean := false;
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'rds_iam') THEN
        RAISE EXCEPTION 'dbgw_provision: this server has no role rds_iam (RDS IAM authentication is RDS only)'
            USING ERRCODE = 'undefined_object';
    END IF;
    person_oid := dbgw_provision.person(person_role, true);
    IF person_oid IS NULL THEN
        RAISE EXCEPTION 'dbgw_provision: role "%" does not exist', person_role
            USING ERRCODE = 'undefined_object';
    END IF;
    IF NOT dbgw_provision.uses_iam(person_oid) THEN
        EXECUTE format('GRANT rds_iam TO %I', person_role);
        added := true;
    END IF;
    -- Every time: the provisioner cannot read pg_authid to see whether one is left.
    EXECUTE format('ALTER ROLE %I PASSWORD NULL', person_role);
    RETURN added;
END
$fn$;

-- Sets the person's password from a SCRAM-SHA-256 verifier (never a password in clear).
CREATE OR REPLACE FUNCTION dbgw_provision.set_password(person_role text, verifier text) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $fn$
DECLARE
    person_oid oid;
BEGIN
    person_oid := dbgw_provision.person(person_role, true);
    IF person_oid IS NULL THEN
        RAISE EXCEPTION 'dbgw_provision: role "%" does not exist', person_role
            USING ERRCODE = 'undefined_object';
    END IF;
    -- A role that logs in with RDS IAM tokens has no password, and never gets one back
    -- (not from the app, nor from the rotation function acting for a forged secret).
    IF dbgw_provision.uses_iam(person_oid) THEN
        RAISE EXCEPTION 'dbgw_provision: role "%" logs in with RDS IAM (member of rds_iam); it has no password', person_role
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    IF verifier IS NULL
       OR verifier !~ '^SCRAM-SHA-256\$[0-9]+:[A-Za-z0-9+/=]+\$[A-Za-z0-9+/=]+:[A-Za-z0-9+/=]+$' THEN
        RAISE EXCEPTION 'dbgw_provision: a password must be given as a SCRAM-SHA-256 verifier'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    EXECUTE format('ALTER ROLE %I PASSWORD %L', person_role, verifier);
END
$fn$;

-- Makes the person a member of a grantable role. Returns whether it was not one yet.
CREATE OR REPLACE FUNCTION dbgw_provision.grant_role(person_role text, group_role text) RETURNS boolean
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $fn$
DECLARE
    person_oid oid;
BEGIN
    person_oid := dbgw_provision.person(person_role, true);
    IF NOT dbgw_provision.grantable(group_role) THEN
        RAISE EXCEPTION 'dbgw_provision: role "%" is not grantable (GRANT dbgw_grantable TO it, as an admin)', group_role
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    IF person_oid IS NULL THEN
        RAISE EXCEPTION 'dbgw_provision: role "%" does not exist', person_role
            USING ERRCODE = 'undefined_object';
    END IF;
    IF EXISTS (SELECT FROM pg_auth_members m JOIN pg_roles g ON g.oid = m.roleid
               WHERE m.member = person_oid AND g.rolname = group_role) THEN
        RETURN false;
    END IF;
    EXECUTE format('GRANT %I TO %I', group_role, person_role);
    RETURN true;
END
$fn$;

-- Takes a role away from the person (any role: taking away is always allowed). Returns
-- whether the person was a member.
CREATE OR REPLACE FUNCTION dbgw_provision.revoke_role(person_role text, group_role text) RETURNS boolean
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $fn$
DECLARE
    person_oid oid;
BEGIN
    IF group_role = 'dbgw_people' THEN
        RAISE EXCEPTION 'dbgw_provision: "dbgw_people" marks a person''s role for pg_hba; it is never taken away'
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    IF group_role = 'rds_iam' THEN
        RAISE EXCEPTION 'dbgw_provision: "rds_iam" is how a person''s role logs in on RDS, without a password; it is never taken away'
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    person_oid := dbgw_provision.person(person_role, false);
    IF person_oid IS NULL OR NOT EXISTS (
        SELECT FROM pg_auth_members m JOIN pg_roles g ON g.oid = m.roleid
        WHERE m.member = person_oid AND g.rolname = group_role) THEN
        RETURN false;
    END IF;
    EXECUTE format('REVOKE %I FROM %I', group_role, person_role);
    -- PostgreSQL 16+ records a membership's grantor, and a REVOKE takes away only the
    -- provisioner's own grant (with a warning for another's). Setup re-grants people's
    -- memberships as the provisioner and the admin's plain-SQL path grants as it
    -- (grants::grantor), so this is not expected; if it happens, fail rather than report a
    -- revocation that did not happen. (On 15 a CREATEROLE role's REVOKE takes any grant.)
    IF EXISTS (SELECT FROM pg_auth_members m JOIN pg_roles g ON g.oid = m.roleid
               WHERE m.member = person_oid AND g.rolname = group_role) THEN
        RAISE EXCEPTION 'dbgw_provision: "%" is a member of "%" by another role''s grant, which dbgw_provisioner cannot revoke', person_role, group_role
            USING ERRCODE = 'insufficient_privilege',
                  HINT = 'an admin revokes it (REVOKE ... GRANTED BY the grantor), or runs setup again, which re-grants it as dbgw_provisioner';
    END IF;
    RETURN true;
END
$fn$;

-- LOGIN or NOLOGIN for the person. Returns whether it changed.
CREATE OR REPLACE FUNCTION dbgw_provision.set_login(person_role text, login boolean) RETURNS boolean
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $fn$
DECLARE
    person_oid oid;
BEGIN
    IF login IS NULL THEN
        RAISE EXCEPTION 'dbgw_provision: login must be true or false'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    -- Giving a login checks everything; taking it away only the name.
    person_oid := dbgw_provision.person(person_role, login);
    IF person_oid IS NULL THEN
        IF login THEN
            RAISE EXCEPTION 'dbgw_provision: role "%" does not exist', person_role
                USING ERRCODE = 'undefined_object';
        END IF;
        RETURN false;
    END IF;
    IF login THEN
        PERFORM dbgw_provision.mark_person(person_role);
    END IF;
    IF (SELECT rolcanlogin FROM pg_roles WHERE oid = person_oid) = login THEN
        RETURN false;
    END IF;
    IF login THEN
        EXECUTE format('ALTER ROLE %I LOGIN', person_role);
    ELSE
        EXECUTE format('ALTER ROLE %I NOLOGIN', person_role);
    END IF;
    RETURN true;
END
$fn$;

-- Ends the person's server sessions (not the caller's own). Returns how many.
CREATE OR REPLACE FUNCTION dbgw_provision.terminate_sessions(person_role text) RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $fn$
BEGIN
    PERFORM dbgw_provision.person(person_role, false);
    RETURN (SELECT count(*) FILTER (WHERE pg_terminate_backend(pid))
            FROM pg_stat_activity WHERE usename = person_role AND pid <> pg_backend_pid());
END
$fn$;

DO $$
DECLARE
    f record;
BEGIN
    FOR f IN SELECT p.oid::regprocedure AS sig FROM pg_proc p
             JOIN pg_namespace n ON n.oid = p.pronamespace WHERE n.nspname = 'dbgw_provision'
    LOOP
        EXECUTE format('ALTER FUNCTION %s OWNER TO dbgw_provisioner', f.sig);
        EXECUTE format('REVOKE ALL ON FUNCTION %s FROM PUBLIC', f.sig);
    END LOOP;
END
$$;

-- PostgreSQL 16+: a CREATEROLE role that creates a role is granted it implicitly, ADMIN
-- OPTION plus the options in the *session's* createrole_self_grant, which the caller sets:
-- with 'set, inherit' the provisioner (and whoever may act as it, the RDS master) could
-- become the person or take on their privileges. ensure_role pins it empty: ADMIN only.
DO $$
BEGIN
    IF current_setting('server_version_num')::int >= 160000 THEN
        ALTER FUNCTION dbgw_provision.ensure_role(text) SET createrole_self_grant = '';
    END IF;
END
$$;

GRANT USAGE ON SCHEMA dbgw_provision TO dbgw_approvals;
GRANT EXECUTE ON FUNCTION
    dbgw_provision.grantable(text),
    dbgw_provision.ensure_role(text),
    dbgw_provision.set_password(text, text),
    dbgw_provision.use_iam(text),
    dbgw_provision.grant_role(text, text),
    dbgw_provision.revoke_role(text, text),
    dbgw_provision.set_login(text, boolean),
    dbgw_provision.terminate_sessions(text)
TO dbgw_approvals;
