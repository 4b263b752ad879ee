-- Who may do what in the rates database. Nobody but the granted group roles may connect.
DO $$
BEGIN
    EXECUTE format('REVOKE ALL ON DATABASE %I FROM PUBLIC', current_database());
    EXECUTE format('GRANT CONNECT ON DATABASE %I TO rates_reader', current_database());
END
$$;

GRANT USAGE ON SCHEMA public TO rates_reader;

GRANT SELECT ON ALL TABLES IN SCHEMA public TO rates_reader;
GRANT INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO rates_writer;

-- Tables created later by the owner get the same privileges.
ALTER DEFAULT PRIVILEGES FOR ROLE rates_owner IN SCHEMA public
    GRANT SELECT ON TABLES TO rates_reader;
ALTER DEFAULT PRIVILEGES FOR ROLE rates_owner IN SCHEMA public
    GRANT INSERT, UPDATE, DELETE ON TABLES TO rates_writer;
