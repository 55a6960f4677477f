-- Snapshots of the events topic's end offsets, one per sweeper round
-- (shared/src/claim_check/sweep.rs). A pending payload inserted after a
-- snapshot can only be referenced at or after its offsets: the sweeper reads
-- from there to find payloads whose writer died between the broker's
-- acknowledgement and the commit, and keeps them instead of deleting them.
CREATE TABLE claim_check_scans (
    topic    text        NOT NULL,
    offsets  bigint[]    NOT NULL,   -- per partition, index = partition
    taken_at timestamptz NOT NULL,
    PRIMARY KEY (topic, taken_at)
);
