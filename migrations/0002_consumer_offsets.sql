-- Exactly-once sinks (shared::sink): per consumer and partition, the next
-- offset to read, committed in the same transaction as the results it covers.
-- Postgres is the truth; offsets committed to Kafka are for lag tooling only.
CREATE TABLE consumer_offsets (
    consumer      text        NOT NULL,
    topic         text        NOT NULL,
    partition     integer     NOT NULL CHECK (partition >= 0),
    next_offset   bigint      NOT NULL CHECK (next_offset >= 0),
    -- Events applied and messages dead-lettered through these commits: exact
    -- counts, since they move in the same transactions as the offsets.
    applied       bigint      NOT NULL DEFAULT 0,
    dead_lettered bigint      NOT NULL DEFAULT 0,
    updated_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer, topic, partition)
);
