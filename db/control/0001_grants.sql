-- The control plane: who may connect to which database as which role, until when.
-- The approvals app writes it; the proxy reads it at every login and watches it for
-- revocations and expiries.
CREATE TABLE IF NOT EXISTS grants (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    -- The person, as the identity provider names them (lower case).
    email         text NOT NULL CHECK (email = lower(email) AND position('@' IN email) > 1),
    -- Where and with what privileges: a group role of that database (e.g. rates_reader).
    database      text NOT NULL,
    role          text NOT NULL,
    -- The person's own login role, derived from the email (see grants::person_role).
    db_user       text NOT NULL,
    valid_from    timestamptz NOT NULL DEFAULT now(),
    expires_at    timestamptz NOT NULL,
    created_by    text NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    revoked_at    timestamptz,
    revoked_by    text,
    revoke_reason text,
    CHECK (expires_at > valid_from)
);

CREATE INDEX IF NOT EXISTS grants_email_database_idx ON grants (email, database);

-- Read-only access for the proxy.
DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'dbgw_proxy') THEN
        CREATE ROLE dbgw_proxy LOGIN;
    END IF;
END
$$;
GRANT SELECT ON grants TO dbgw_proxy;
