-- MapReduce page counts. A job is a snapshot of offset ranges of the input
-- topic, split into chunks (map tasks); mappers publish per-page counts and
-- one end-of-chunk marker per shuffle partition; reducers sum per page and
-- record markers, in the transactions that commit their offsets; a shuffle
-- partition is final when it has every chunk's marker, the job when every
-- partition is final.

CREATE TABLE pagecount_jobs (
    id                 bigserial   PRIMARY KEY,
    -- running, succeeded, cancelled
    state              text        NOT NULL CHECK (state IN ('running', 'succeeded', 'cancelled')),
    input_topic        text        NOT NULL,
    -- [{partition, start, end}] as snapshotted at creation.
    ranges             jsonb       NOT NULL,
    lines_total        bigint      NOT NULL,
    chunk_lines        integer     NOT NULL,
    chunks_total       integer     NOT NULL,
    shuffle_partitions integer     NOT NULL,
    combiner           boolean     NOT NULL,
    created_at         timestamptz NOT NULL DEFAULT now(),
    -- The last chunk marker a reducer recorded, and the job's end.
    mapped_at          timestamptz,
    finished_at        timestamptz
);

-- Each chunk's marker as each shuffle partition's reducer saw it.
CREATE TABLE pagecount_chunks (
    job_id            bigint      NOT NULL REFERENCES pagecount_jobs (id) ON DELETE CASCADE,
    chunk             integer     NOT NULL,
    shuffle_partition integer     NOT NULL,
    lines             bigint      NOT NULL,
    rejected          bigint      NOT NULL,
    records           bigint      NOT NULL,
    bytes             bigint      NOT NULL,
    arrived_at        timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (job_id, chunk, shuffle_partition)
);

-- Counts per page (a page always meets the same shuffle partition).
CREATE TABLE pagecount_pages (
    job_id bigint NOT NULL REFERENCES pagecount_jobs (id) ON DELETE CASCADE,
    page   text   NOT NULL,
    count  bigint NOT NULL,
    PRIMARY KEY (job_id, page)
);
CREATE INDEX pagecount_pages_top ON pagecount_pages (job_id, count DESC, page);

CREATE TABLE pagecount_partitions (
    job_id            bigint      NOT NULL REFERENCES pagecount_jobs (id) ON DELETE CASCADE,
    shuffle_partition integer     NOT NULL,
    final_at          timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (job_id, shuffle_partition)
);
