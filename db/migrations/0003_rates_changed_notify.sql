-- Tell listeners (rates-api's answer cache) when rates data changes. Statement-level, so a
-- bulk load sends one notification per statement; delivered at commit.
CREATE OR REPLACE FUNCTION public.notify_rates_changed() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('rates_changed', TG_TABLE_NAME);
    RETURN NULL;
END
$$;

DROP TRIGGER IF EXISTS prices_changed ON public.prices;
CREATE TRIGGER prices_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON public.prices
    FOR EACH STATEMENT EXECUTE FUNCTION public.notify_rates_changed();
DROP TRIGGER IF EXISTS ports_changed ON public.ports;
CREATE TRIGGER ports_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON public.ports
    FOR EACH STATEMENT EXECUTE FUNCTION public.notify_rates_changed();
DROP TRIGGER IF EXISTS regions_changed ON public.regions;
CREATE TRIGGER regions_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON public.regions
    FOR EACH STATEMENT EXECUTE FUNCTION public.notify_rates_changed();
