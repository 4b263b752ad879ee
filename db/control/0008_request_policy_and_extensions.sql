-- Issue 22, approvals side. Idempotent: setup_control runs every control migration on every
-- start.
--
-- 1. The session controls a request asks for, copied from the catalogue level when the
--    request is made: approvers approve what they see, and provisioning copies exactly this
--    into the grant (a later catalogue change does not reach requests already made).
--    NULL for requests made before this migration (provisioning then reads the level).
ALTER TABLE access_requests ADD COLUMN IF NOT EXISTS policy jsonb;

-- 2. Extensions of active access: the person asks for a later end; the same approvers'
--    rules as the level decide; an approved one moves grants.expires_at in place (same grant,
--    same role, same password: the proxy moves its live sessions' end on the NOTIFY of
--    0004). Its state: pending -> approved | denied | expired (the access ended first);
--    `extend_to` is fixed when asked.
CREATE TABLE IF NOT EXISTS extensions (
    id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    request_id       bigint NOT NULL REFERENCES access_requests (id),
    email            text NOT NULL,
    justification    text NOT NULL CHECK (length(justification) BETWEEN 1 AND 2000),
    -- The end when asked, and the end asked for.
    previous_end     timestamptz NOT NULL,
    extend_to        timestamptz NOT NULL CHECK (extend_to > previous_end),
    approvals_needed int NOT NULL CHECK (approvals_needed BETWEEN 1 AND 10),
    state            text NOT NULL DEFAULT 'pending'
                     CHECK (state IN ('pending', 'approved', 'denied', 'expired')),
    created_at       timestamptz NOT NULL DEFAULT now(),
    decided_at       timestamptz
);
CREATE INDEX IF NOT EXISTS extensions_request_idx ON extensions (request_id);
-- At most one open extension per request.
CREATE UNIQUE INDEX IF NOT EXISTS extensions_one_pending_idx ON extensions (request_id)
    WHERE state = 'pending';

CREATE TABLE IF NOT EXISTS extension_decisions (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    extension_id bigint NOT NULL REFERENCES extensions (id),
    approver     text NOT NULL,
    decision     text NOT NULL CHECK (decision IN ('approve', 'deny')),
    comment      text NOT NULL DEFAULT '' CHECK (length(comment) <= 2000),
    decided_at   timestamptz NOT NULL DEFAULT clock_timestamp(),
    UNIQUE (extension_id, approver)
);

-- Nobody decides on their own extension, whatever the code does.
CREATE OR REPLACE FUNCTION extension_decisions_not_own() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF EXISTS (SELECT FROM extensions WHERE id = NEW.extension_id AND email = NEW.approver) THEN
        RAISE EXCEPTION 'nobody decides on their own extension' USING ERRCODE = 'check_violation';
    END IF;
    RETURN NEW;
END
$$;
DROP TRIGGER IF EXISTS extension_decisions_not_own ON extension_decisions;
CREATE TRIGGER extension_decisions_not_own BEFORE INSERT OR UPDATE ON extension_decisions
    FOR EACH ROW EXECUTE FUNCTION extension_decisions_not_own();

-- The time of a decision is the database's, whatever the insert says (as for `decisions`,
-- 0005); the sealed event of each decision is the record an auditor checks.
CREATE OR REPLACE FUNCTION extension_decisions_time() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.decided_at := clock_timestamp();
    RETURN NEW;
END
$$;
DROP TRIGGER IF EXISTS extension_decisions_time ON extension_decisions;
CREATE TRIGGER extension_decisions_time BEFORE INSERT ON extension_decisions
    FOR EACH ROW EXECUTE FUNCTION extension_decisions_time();

-- Decisions are history: nobody changes or removes one.
DROP TRIGGER IF EXISTS extension_decisions_append_only ON extension_decisions;
CREATE TRIGGER extension_decisions_append_only BEFORE UPDATE OR DELETE ON extension_decisions
    FOR EACH ROW EXECUTE FUNCTION decisions_append_only();

-- 3. The CLI's sign-in hand-off (`dbgw request|extend|status`): after a sign-in in the
--    browser, the app gives the CLI's loopback listener a one-time code; the CLI redeems it
--    with its PKCE verifier for the app's access token. Only the code's SHA-256 is stored,
--    for a minute at most.
CREATE TABLE IF NOT EXISTS cli_handoffs (
    code_hash    bytea PRIMARY KEY,
    challenge    text NOT NULL,
    access_token text NOT NULL,
    token_expires_at timestamptz NOT NULL,
    email        text NOT NULL,
    expires_at   timestamptz NOT NULL
);

GRANT SELECT, INSERT, UPDATE ON extensions TO dbgw_approvals;
GRANT SELECT, INSERT ON extension_decisions TO dbgw_approvals;
GRANT SELECT, INSERT, DELETE ON cli_handoffs TO dbgw_approvals;
REVOKE UPDATE, DELETE, TRUNCATE ON extension_decisions FROM dbgw_approvals;
