-- Serves the rates query (orig_code, dest_code, day range) from the index alone:
-- an index-only scan returns price without touching the heap.
CREATE INDEX IF NOT EXISTS prices_orig_dest_day_idx
    ON public.prices (orig_code, dest_code, day) INCLUDE (price);

-- Region lookups walk regions by parent and ports by region.
CREATE INDEX IF NOT EXISTS regions_parent_slug_idx ON public.regions (parent_slug);
CREATE INDEX IF NOT EXISTS ports_parent_slug_idx ON public.ports (parent_slug);
