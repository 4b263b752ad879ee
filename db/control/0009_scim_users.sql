-- Issue 17, item 8: people as the company's identity provider tells them (SCIM 2.0,
-- docs/approvals.md "Deprovisioning (SCIM)"). Okta or Entra ID pushes each person it
-- assigns to the app; `active = false` (or a DELETE) ends all of that person's access at
-- once and keeps them from asking for more until the provider sets them active again. A
-- person the provider never pushed is not blocked. Idempotent: setup_control runs every
-- control migration on every start.
CREATE TABLE IF NOT EXISTS scim_users (
    -- The resource id the provider addresses the person by (RFC 7643 3.1): ours, opaque.
    id            text PRIMARY KEY DEFAULT gen_random_uuid()::text,
    -- userName: the person's email as grants store it (lower case).
    user_name     text NOT NULL UNIQUE CHECK (user_name = lower(user_name) AND position('@' IN user_name) > 1),
    -- The provider's own id of the person.
    external_id   text,
    active        boolean NOT NULL DEFAULT true,
    -- Set by a DELETE: the resource is gone for the provider (GET answers 404) and the
    -- person stays inactive; a later POST of the same userName brings the row back.
    deleted_at    timestamptz,
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now(),
    deactivated_at timestamptz,
    CHECK (deleted_at IS NULL OR NOT active)
);

-- No DELETE: a deprovisioned person's row is the record that keeps them out.
GRANT SELECT, INSERT, UPDATE ON scim_users TO dbgw_approvals;
