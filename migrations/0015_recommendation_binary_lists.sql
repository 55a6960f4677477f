-- The model's lists become bytes the service writes and reads itself
-- (services/recommendation/src/codec.rs): PostgreSQL parsed every JSON list
-- a batch rewrote back into JSONB, most of a batch's cost. An entry is its
-- id's length (int4send), the id (UTF-8) and, in a scored list, the
-- log-score (float8send). The stored JSON converts in place, entry order
-- kept; entries that are not [product, finite number] (or, for purchases, a
-- product) are dropped, as loading dropped them before, and counted in a
-- notice.

CREATE FUNCTION pg_temp.kappa_id(id text) RETURNS bytea
LANGUAGE sql IMMUTABLE AS $$
    SELECT int4send(octet_length(id)) || convert_to(id, 'UTF8')
$$;

-- A jsonb number that is a finite float8 (a cast of anything else would fail).
CREATE FUNCTION pg_temp.kappa_finite(n jsonb) RETURNS boolean
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE WHEN jsonb_typeof(n) = 'number'
                THEN abs(n::numeric) <= 1.7976931348623157e308 ELSE false END
$$;

CREATE FUNCTION pg_temp.kappa_scores(list jsonb) RETURNS bytea
LANGUAGE sql IMMUTABLE AS $$
    SELECT coalesce(string_agg(pg_temp.kappa_id(e ->> 0) || float8send((e ->> 1)::float8), ''::bytea ORDER BY ord), ''::bytea)
    FROM jsonb_array_elements(CASE WHEN jsonb_typeof(list) = 'array' THEN list ELSE '[]' END)
         WITH ORDINALITY AS t(e, ord)
    WHERE CASE WHEN jsonb_typeof(e) = 'array' AND jsonb_typeof(e -> 0) = 'string'
               THEN pg_temp.kappa_finite(e -> 1) ELSE false END
$$;

CREATE FUNCTION pg_temp.kappa_ids(list jsonb) RETURNS bytea
LANGUAGE sql IMMUTABLE AS $$
    SELECT coalesce(string_agg(pg_temp.kappa_id(e #>> '{}'), ''::bytea ORDER BY ord), ''::bytea)
    FROM jsonb_array_elements(CASE WHEN jsonb_typeof(list) = 'array' THEN list ELSE '[]' END)
         WITH ORDINALITY AS t(e, ord)
    WHERE jsonb_typeof(e) = 'string'
$$;

-- Entries of a stored list that will not convert.
CREATE FUNCTION pg_temp.kappa_dropped(list jsonb, scored boolean) RETURNS bigint
LANGUAGE sql IMMUTABLE AS $$
    SELECT count(*) FILTER (WHERE NOT CASE
        WHEN scored THEN CASE WHEN jsonb_typeof(e) = 'array' AND jsonb_typeof(e -> 0) = 'string'
                              THEN pg_temp.kappa_finite(e -> 1) ELSE false END
        ELSE jsonb_typeof(e) = 'string' END)
    FROM jsonb_array_elements(CASE WHEN jsonb_typeof(list) = 'array' THEN list ELSE '[]' END) AS t(e)
$$;

DO $$
DECLARE dropped bigint;
BEGIN
    SELECT coalesce(sum(pg_temp.kappa_dropped(recent, true) + pg_temp.kappa_dropped(purchased, false)), 0)
         + (SELECT coalesce(sum(pg_temp.kappa_dropped(neighbors, true)), 0) FROM rec_cooc)
      INTO dropped FROM rec_users;
    IF dropped > 0 THEN
        RAISE NOTICE 'recommendation lists to bytes: % malformed entries dropped', dropped;
    END IF;
END $$;

-- Every batch rewrites the rows it touched: room on each page keeps the new
-- version beside the old one (a HOT update: no index entries, less WAL).
-- Set before the rewrite below, which packs the pages to it.
ALTER TABLE rec_users SET (fillfactor = 50);
ALTER TABLE rec_cooc SET (fillfactor = 50);
ALTER TABLE rec_popularity SET (fillfactor = 50);

ALTER TABLE rec_users
    ALTER COLUMN recent TYPE bytea USING pg_temp.kappa_scores(recent),
    ALTER COLUMN purchased TYPE bytea USING pg_temp.kappa_ids(purchased);
ALTER TABLE rec_cooc
    ALTER COLUMN neighbors TYPE bytea USING pg_temp.kappa_scores(neighbors);
COMMENT ON COLUMN rec_users.recent IS 'products, oldest first, with log-scores: (int4 length, UTF-8 id, float8) per entry';
COMMENT ON COLUMN rec_users.purchased IS 'products, oldest first: (int4 length, UTF-8 id) per entry';
COMMENT ON COLUMN rec_cooc.neighbors IS 'co-occurring products with log-scores, best first: (int4 length, UTF-8 id, float8) per entry';
