-- The popular fill-in reads each partition's best products by score and
-- stops as soon as no product unseen can make the answer (the threshold
-- algorithm, services/recommendation/src/query.rs), instead of adding up
-- every product of every partition per request. One index serves that and
-- a partition's load (WHERE partition = $1), in place of the old one.
DROP INDEX rec_popularity_partition_idx;
CREATE INDEX rec_popularity_rank_idx ON rec_popularity (partition, score DESC, item);
