-- RDS IAM authentication for people's roles (issue 17). Idempotent; cluster-wide (roles).
--
-- On RDS a role that is a member of rds_iam logs in with an IAM auth token only, which only
-- the proxy's task role may sign (rds-db:connect on p_*): people's roles then have no
-- password at all (dbgw_provision.use_iam). The provisioner grants rds_iam: on PostgreSQL
-- 15 and older its CREATEROLE covers it; from 16 it needs ADMIN OPTION on rds_iam, given
-- here by the master (a member of rds_superuser, which administers rds_iam). Elsewhere
-- there is no rds_iam and nothing happens. Not verified against RDS itself (no AWS here):
-- if the grant is refused, setup goes on with a warning and use_iam fails closed (no role
-- is given LOGIN without its rds_iam membership).

DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'rds_iam')
       OR current_setting('server_version_num')::int < 160000 THEN
        RETURN;
    END IF;
    BEGIN
        -- (EXECUTE: 15 cannot parse the options.)
        EXECUTE 'GRANT rds_iam TO dbgw_provisioner WITH ADMIN OPTION, INHERIT FALSE, SET FALSE';
    EXCEPTION WHEN insufficient_privilege THEN
        RAISE WARNING 'dbgw: could not give dbgw_provisioner ADMIN OPTION on rds_iam: %', SQLERRM
            USING HINT = 'as a member of rds_superuser: GRANT rds_iam TO dbgw_provisioner WITH ADMIN OPTION, INHERIT FALSE, SET FALSE; until then people''s roles cannot be given RDS IAM logins';
    END;
END
$$;
