-- The recommendation service's state, partitioned like its input: each row
-- belongs to one partition of the events topic and is written only in the
-- transaction that also advances that partition's offset. Queries combine
-- all partitions. Lists are JSON arrays of [product, score] pairs; scores
-- are forward-decayed (see services/recommendation/src/model.rs).

CREATE TABLE rec_users (
    user_id   text    NOT NULL,
    partition integer NOT NULL,
    recent    jsonb   NOT NULL,   -- [[product, weight], ...] oldest first
    purchased jsonb   NOT NULL,   -- [product, ...] oldest first
    PRIMARY KEY (user_id, partition)
);
CREATE INDEX rec_users_partition_idx ON rec_users (partition);

CREATE TABLE rec_cooc (
    item      text    NOT NULL,
    partition integer NOT NULL,
    neighbors jsonb   NOT NULL,   -- [[product, score], ...]
    PRIMARY KEY (item, partition)
);
CREATE INDEX rec_cooc_partition_idx ON rec_cooc (partition);

CREATE TABLE rec_popularity (
    item      text    NOT NULL,
    partition integer NOT NULL,
    score     float8  NOT NULL,
    PRIMARY KEY (item, partition)
);
CREATE INDEX rec_popularity_partition_idx ON rec_popularity (partition);

-- Per UTC day counters, audited later against the batch replay's numbers.
CREATE TABLE rec_daily (
    day           date    NOT NULL,
    partition     integer NOT NULL,
    views         bigint  NOT NULL DEFAULT 0,
    clicks        bigint  NOT NULL DEFAULT 0,
    add_to_cart   bigint  NOT NULL DEFAULT 0,
    purchases     bigint  NOT NULL DEFAULT 0,
    revenue_cents bigint  NOT NULL DEFAULT 0,
    PRIMARY KEY (day, partition)
);

-- How fresh each partition's state is.
CREATE TABLE rec_partitions (
    partition     integer     PRIMARY KEY,
    last_event_at timestamptz
);
