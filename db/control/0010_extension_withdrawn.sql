-- Issue 22: the person who asked for an extension may withdraw it while it is pending
-- (`withdrawn`, like a request); the grant's end stays where it was. Idempotent: the state's
-- check is replaced only while it does not allow `withdrawn` yet, so a restart does not
-- rescan the table.
DO $$
BEGIN
    IF NOT EXISTS (
        SELECT FROM pg_constraint
        WHERE conrelid = 'extensions'::regclass AND conname = 'extensions_state_check'
          AND pg_get_constraintdef(oid) LIKE '%withdrawn%'
    ) THEN
        ALTER TABLE extensions DROP CONSTRAINT IF EXISTS extensions_state_check;
        ALTER TABLE extensions ADD CONSTRAINT extensions_state_check
            CHECK (state IN ('pending', 'approved', 'denied', 'expired', 'withdrawn'));
    END IF;
END
$$;
