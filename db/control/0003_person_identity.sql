-- A person is who the identity provider says they are (issuer and subject), not an email
-- address, which can pass to someone else. A grant made for a request names its
-- requester's issuer and subject; the proxy lets only that identity use it. Grants made by
-- operators (`proxy grant add`) name an email only.
ALTER TABLE grants ADD COLUMN IF NOT EXISTS issuer text;
ALTER TABLE grants ADD COLUMN IF NOT EXISTS subject text;
ALTER TABLE grants DROP CONSTRAINT IF EXISTS grants_identity_whole;
ALTER TABLE grants ADD CONSTRAINT grants_identity_whole CHECK ((issuer IS NULL) = (subject IS NULL));
