-- Tell the proxies at once when a grant is revoked, shortened or removed: each replica
-- LISTENs on `dbgw_grants` and re-checks the grants of its open sessions (polling stays as
-- the fallback). The payload is the grant's id; delivered at commit.
CREATE OR REPLACE FUNCTION notify_grants_changed() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('dbgw_grants', OLD.id::text);
    RETURN NULL;
END
$$;

DROP TRIGGER IF EXISTS grants_changed ON grants;
CREATE TRIGGER grants_changed AFTER UPDATE OR DELETE ON grants
    FOR EACH ROW EXECUTE FUNCTION notify_grants_changed();
