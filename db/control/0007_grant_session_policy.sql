-- Session controls a grant carries (issue 22): copied by the approvals app from the
-- catalogue level, enforced by the proxy. NULL / false / empty: the control is off.
-- Idempotent: setup_control runs every control migration on every start.
ALTER TABLE grants ADD COLUMN IF NOT EXISTS idle_timeout_secs integer
    CHECK (idle_timeout_secs > 0);
ALTER TABLE grants ADD COLUMN IF NOT EXISTS idle_in_transaction_timeout_secs integer
    CHECK (idle_in_transaction_timeout_secs > 0);
ALTER TABLE grants ADD COLUMN IF NOT EXISTS max_session_secs integer
    CHECK (max_session_secs > 0);
ALTER TABLE grants ADD COLUMN IF NOT EXISTS read_only boolean NOT NULL DEFAULT false;
ALTER TABLE grants ADD COLUMN IF NOT EXISTS require_amr text[] NOT NULL DEFAULT '{}';
ALTER TABLE grants ADD COLUMN IF NOT EXISTS max_auth_age_secs integer
    CHECK (max_auth_age_secs > 0);
