-- Scores become base-2 logarithms (services/recommendation/src/model.rs):
-- linear forward-decayed scores underflowed to 0 for events decades before
-- the landmark and overflowed after it. Existing linear values convert in
-- place; a value that had already underflowed to 0 (or below) becomes
-- -1e300, i.e. 2^-1e300, still "nothing", but finite. Entries that are not
-- [product, number] stay as they are (loading drops and counts them).

CREATE FUNCTION pg_temp.kappa_log2_score(score float8) RETURNS float8
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE WHEN score > 0 THEN ln(score) / ln(2.0::float8) ELSE -1e300 END
$$;

CREATE FUNCTION pg_temp.kappa_log2_list(list jsonb) RETURNS jsonb
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE WHEN jsonb_typeof(list) <> 'array' THEN list ELSE coalesce((
        SELECT jsonb_agg(
                   CASE WHEN jsonb_typeof(e -> 1) = 'number'
                        THEN jsonb_build_array(e -> 0, pg_temp.kappa_log2_score((e ->> 1)::float8))
                        ELSE e END
                   ORDER BY ord)
        FROM jsonb_array_elements(list) WITH ORDINALITY AS t(e, ord)), '[]'::jsonb) END
$$;

UPDATE rec_users SET recent = pg_temp.kappa_log2_list(recent);
UPDATE rec_cooc SET neighbors = pg_temp.kappa_log2_list(neighbors);
UPDATE rec_popularity SET score = pg_temp.kappa_log2_score(score);
