-- Duplicate event ids (shared::worker::dedupe): a worker rebuilds its window
-- of recent event ids from the topic itself, leaving out the records it
-- dead-lettered, so that the same event sent again once the cause is fixed
-- (a redrive) is applied, not skipped as a repeat. Those records' offsets,
-- per consumer and partition, recorded with the commit that dead-lettered
-- them (only records that carry an id); rows older than the window are pruned.
CREATE TABLE dead_lettered_offsets (
    consumer  text    NOT NULL,
    topic     text    NOT NULL,
    partition integer NOT NULL CHECK (partition >= 0),
    "offset"  bigint  NOT NULL CHECK ("offset" >= 0),
    PRIMARY KEY (consumer, topic, partition, "offset")
);
