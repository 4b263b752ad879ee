-- The approvals history cannot be forged by the app's own login (issue 17, item 6).
-- Idempotent: setup_control runs every control migration on every start.
--
-- `events`: the database, not the inserter, sets each row's id (the chain head's id + 1:
-- dense, in the order rows are chained, whatever OVERRIDING SYSTEM VALUE asks for) and time
-- (the clock, never earlier than the previous event), and seals the row into a hash chain:
--   hash = SHA-256(prev_hash || int8 id || int8 microseconds since 1970-01-01 UTC
--                  || opt(request_id) || opt(grant_id) || lp(actor) || lp(kind)
--                  || lp(data::text))
-- where int8 is 8 bytes big-endian, opt(x) is 0x00 for NULL or 0x01 || int8 x, lp(s) is
-- the 4-byte big-endian length of s in UTF-8 then those bytes, and the first event's
-- prev_hash is 32 zero bytes. `approvals events verify` recomputes the chain from the rows
-- and checks it against a head exported before (`approvals events head`).
--
-- Inserting an event takes the chain head's row lock until the transaction ends, so events
-- are chained one transaction after another and ids become visible in order (an `?after=`
-- cursor never skips a row committed late).

ALTER TABLE events ADD COLUMN IF NOT EXISTS prev_hash bytea;
ALTER TABLE events ADD COLUMN IF NOT EXISTS hash bytea;

-- The last sealed event. Only the sealing function (SECURITY DEFINER) writes it; the app's
-- login cannot read or write it.
CREATE TABLE IF NOT EXISTS events_chain_head (
    one     boolean PRIMARY KEY DEFAULT true CHECK (one),
    last_id bigint NOT NULL,
    last_at timestamptz NOT NULL,
    hash    bytea NOT NULL
);
REVOKE ALL ON events_chain_head FROM PUBLIC;

CREATE OR REPLACE FUNCTION events_hash(
    prev bytea, id bigint, at timestamptz, request_id bigint, grant_id bigint,
    actor text, kind text, data jsonb
) RETURNS bytea LANGUAGE sql STABLE SET search_path = pg_catalog AS $$
    SELECT sha256(
        prev
        || int8send(id)
        || int8send((extract(epoch FROM at) * 1000000)::bigint)
        || CASE WHEN request_id IS NULL THEN '\x00'::bytea ELSE '\x01'::bytea || int8send(request_id) END
        || CASE WHEN grant_id IS NULL THEN '\x00'::bytea ELSE '\x01'::bytea || int8send(grant_id) END
        || int4send(octet_length(convert_to(actor, 'UTF8'))) || convert_to(actor, 'UTF8')
        || int4send(octet_length(convert_to(kind, 'UTF8'))) || convert_to(kind, 'UTF8')
        || int4send(octet_length(convert_to(data::text, 'UTF8'))) || convert_to(data::text, 'UTF8')
    )
$$;

-- Rows written before this migration are sealed once, in id order, by the migration.
DO $$
DECLARE
    r record;
    prev bytea;
    prev_at timestamptz;
BEGIN
    IF EXISTS (SELECT FROM events WHERE hash IS NULL) THEN
        ALTER TABLE events DISABLE TRIGGER events_append_only;
        SELECT hash, last_at INTO prev, prev_at FROM events_chain_head;
        prev := coalesce(prev, '\x0000000000000000000000000000000000000000000000000000000000000000'::bytea);
        FOR r IN SELECT * FROM events WHERE hash IS NULL ORDER BY id LOOP
            UPDATE events SET prev_hash = prev,
                   hash = events_hash(prev, r.id, r.at, r.request_id, r.grant_id, r.actor, r.kind, r.data)
             WHERE id = r.id RETURNING hash INTO prev;
            prev_at := r.at;
            INSERT INTO events_chain_head (last_id, last_at, hash) VALUES (r.id, r.at, prev)
            ON CONFLICT (one) DO UPDATE SET last_id = excluded.last_id, last_at = excluded.last_at,
                                            hash = excluded.hash;
        END LOOP;
        ALTER TABLE events ENABLE TRIGGER events_append_only;
    END IF;
END
$$;

CREATE OR REPLACE FUNCTION events_seal() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public AS $$
DECLARE
    head events_chain_head;
BEGIN
    -- The row lock serializes sealing until this transaction ends.
    SELECT * INTO head FROM events_chain_head FOR UPDATE;
    IF NOT FOUND THEN
        INSERT INTO events_chain_head (last_id, last_at, hash)
        VALUES (0, '-infinity', '\x0000000000000000000000000000000000000000000000000000000000000000'::bytea)
        ON CONFLICT (one) DO NOTHING;
        SELECT * INTO head FROM events_chain_head FOR UPDATE;
    END IF;
    NEW.id := head.last_id + 1;
    NEW.at := greatest(clock_timestamp(), head.last_at);
    NEW.prev_hash := head.hash;
    NEW.hash := events_hash(head.hash, NEW.id, NEW.at, NEW.request_id, NEW.grant_id,
                            NEW.actor, NEW.kind, NEW.data);
    UPDATE events_chain_head SET last_id = NEW.id, last_at = NEW.at, hash = NEW.hash;
    RETURN NEW;
END
$$;
REVOKE ALL ON FUNCTION events_seal() FROM PUBLIC;
DROP TRIGGER IF EXISTS events_seal ON events;
CREATE TRIGGER events_seal BEFORE INSERT ON events
    FOR EACH ROW EXECUTE FUNCTION events_seal();

-- `decisions`: the id is the one its identity just drew in this session (an
-- OVERRIDING SYSTEM VALUE id is refused) and the time is the database's.
-- SECURITY DEFINER: currval needs a right on the sequence the app's login does not have.
CREATE OR REPLACE FUNCTION decisions_sealed() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public AS $$
DECLARE
    drawn bigint;
BEGIN
    BEGIN
        drawn := currval(pg_get_serial_sequence('decisions', 'id'));
    EXCEPTION WHEN object_not_in_prerequisite_state THEN
        drawn := NULL;
    END;
    IF drawn IS DISTINCT FROM NEW.id THEN
        RAISE EXCEPTION 'decisions get their id from the database (OVERRIDING SYSTEM VALUE refused)'
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    NEW.decided_at := clock_timestamp();
    RETURN NEW;
END
$$;
REVOKE ALL ON FUNCTION decisions_sealed() FROM PUBLIC;
DROP TRIGGER IF EXISTS decisions_sealed ON decisions;
CREATE TRIGGER decisions_sealed BEFORE INSERT ON decisions
    FOR EACH ROW EXECUTE FUNCTION decisions_sealed();

-- Decisions are history too: nobody changes or removes one.
CREATE OR REPLACE FUNCTION decisions_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'the decisions table is append-only: % refused', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END
$$;
DROP TRIGGER IF EXISTS decisions_append_only ON decisions;
CREATE TRIGGER decisions_append_only BEFORE UPDATE OR DELETE ON decisions
    FOR EACH ROW EXECUTE FUNCTION decisions_append_only();
DROP TRIGGER IF EXISTS decisions_no_truncate ON decisions;
CREATE TRIGGER decisions_no_truncate BEFORE TRUNCATE ON decisions
    FOR EACH STATEMENT EXECUTE FUNCTION decisions_append_only();
REVOKE UPDATE, DELETE, TRUNCATE ON decisions FROM dbgw_approvals;
