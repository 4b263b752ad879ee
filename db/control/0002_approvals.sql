-- The approvals app (approvals/): access requests, decisions, an append-only event history,
-- web sessions and a webhook outbox, and the app's own least-privilege login.
-- Idempotent: setup_control runs every control migration on every start.

-- A grant made by the approvals app names its request and approvers, so the proxy's audit
-- record of a session leads to the approval in one step.
ALTER TABLE grants ADD COLUMN IF NOT EXISTS request_id bigint;
ALTER TABLE grants ADD COLUMN IF NOT EXISTS approved_by text[] NOT NULL DEFAULT '{}';
CREATE UNIQUE INDEX IF NOT EXISTS grants_request_idx ON grants (request_id);

-- One request for access. Its life: pending -> approved -> active -> ending -> ended, or
-- pending -> denied | withdrawn; approved (waiting for a later start) -> withdrawn | ended.
CREATE TABLE IF NOT EXISTS access_requests (
    id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    email            text NOT NULL CHECK (email = lower(email) AND position('@' IN email) > 1),
    subject          text NOT NULL,
    name             text NOT NULL DEFAULT '',
    database         text NOT NULL,
    -- The catalogue entry asked for, and what it meant when asked (the catalogue may change).
    level            text NOT NULL,
    role             text NOT NULL,
    approvals_needed int NOT NULL CHECK (approvals_needed BETWEEN 1 AND 10),
    justification    text NOT NULL CHECK (length(justification) BETWEEN 1 AND 2000),
    duration_secs    bigint NOT NULL CHECK (duration_secs > 0),
    -- NULL: access starts at the final approval.
    starts_at        timestamptz,
    status           text NOT NULL DEFAULT 'pending'
                     CHECK (status IN ('pending', 'denied', 'withdrawn', 'approved', 'active', 'ending', 'ended')),
    created_at       timestamptz NOT NULL DEFAULT now(),
    decided_at       timestamptz,
    grant_id         bigint REFERENCES grants (id),
    -- Why access ended (expired, revoked, given up) and by whom.
    end_reason       text,
    ended_by         text,
    ended_at         timestamptz
);
CREATE INDEX IF NOT EXISTS access_requests_email_idx ON access_requests (email);
CREATE INDEX IF NOT EXISTS access_requests_status_idx ON access_requests (status);

-- One approver's decision. One per approver and request, enforced here too.
CREATE TABLE IF NOT EXISTS decisions (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    request_id bigint NOT NULL REFERENCES access_requests (id),
    approver   text NOT NULL,
    decision   text NOT NULL CHECK (decision IN ('approve', 'deny')),
    comment    text NOT NULL DEFAULT '' CHECK (length(comment) <= 2000),
    decided_at timestamptz NOT NULL DEFAULT now(),
    UNIQUE (request_id, approver)
);

-- Nobody decides on their own request, whatever the code does.
CREATE OR REPLACE FUNCTION decisions_not_own() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF EXISTS (SELECT FROM access_requests WHERE id = NEW.request_id AND email = NEW.approver) THEN
        RAISE EXCEPTION 'nobody decides on their own request' USING ERRCODE = 'check_violation';
    END IF;
    RETURN NEW;
END
$$;
DROP TRIGGER IF EXISTS decisions_not_own ON decisions;
CREATE TRIGGER decisions_not_own BEFORE INSERT OR UPDATE ON decisions
    FOR EACH ROW EXECUTE FUNCTION decisions_not_own();

-- The history: every request, decision, provisioning step, revocation and expiry.
-- Append-only: the app's login may INSERT and SELECT only, and a trigger refuses UPDATE,
-- DELETE and TRUNCATE for everyone else too (the owner included).
CREATE TABLE IF NOT EXISTS events (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at         timestamptz NOT NULL DEFAULT clock_timestamp(),
    request_id bigint REFERENCES access_requests (id),
    grant_id   bigint,
    actor      text NOT NULL,
    kind       text NOT NULL,
    data       jsonb NOT NULL DEFAULT '{}'
);
CREATE INDEX IF NOT EXISTS events_request_idx ON events (request_id);

CREATE OR REPLACE FUNCTION events_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'the events table is append-only: % refused', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END
$$;
DROP TRIGGER IF EXISTS events_append_only ON events;
CREATE TRIGGER events_append_only BEFORE UPDATE OR DELETE ON events
    FOR EACH ROW EXECUTE FUNCTION events_append_only();
DROP TRIGGER IF EXISTS events_no_truncate ON events;
CREATE TRIGGER events_no_truncate BEFORE TRUNCATE ON events
    FOR EACH STATEMENT EXECUTE FUNCTION events_append_only();

-- Signed-in browsers. The cookie holds a random id; only its SHA-256 is stored here.
CREATE TABLE IF NOT EXISTS web_sessions (
    id_hash      bytea PRIMARY KEY,
    data         jsonb NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    last_seen_at timestamptz NOT NULL DEFAULT now()
);

-- Webhook messages waiting to be delivered (retried with backoff, never blocking a decision).
CREATE TABLE IF NOT EXISTS webhook_outbox (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    event_id        bigint NOT NULL REFERENCES events (id),
    payload         jsonb NOT NULL,
    attempts        int NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    delivered_at    timestamptz,
    failed_at       timestamptz,
    last_error      text
);
CREATE INDEX IF NOT EXISTS webhook_outbox_due_idx ON webhook_outbox (next_attempt_at)
    WHERE delivered_at IS NULL AND failed_at IS NULL;

-- The app's login: a login and nothing else on the server (no CREATEROLE, no role, never a
-- superuser); it provisions people's roles through the dbgw_provision functions
-- (0006_approvals_provisioner.sql, db/provisioner.sql). Its password is set by the tooling
-- from the secret store.
DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'dbgw_approvals') THEN
        CREATE ROLE dbgw_approvals LOGIN NOSUPERUSER NOCREATEROLE NOCREATEDB NOREPLICATION NOBYPASSRLS;
    END IF;
END
$$;
GRANT SELECT, INSERT, UPDATE ON grants, access_requests, webhook_outbox TO dbgw_approvals;
GRANT SELECT, INSERT ON decisions, events TO dbgw_approvals;
GRANT SELECT, INSERT, UPDATE, DELETE ON web_sessions TO dbgw_approvals;
REVOKE UPDATE, DELETE, TRUNCATE ON events FROM dbgw_approvals;
