-- Batch replays of the events topic (services/dashboard). Every run's results
-- are stored under its id; the API serves the run named by dashboard_current,
-- which changes only in the transaction that stores a successful run.

CREATE TABLE replay_runs (
    id            bigserial   PRIMARY KEY,
    trigger       text        NOT NULL CHECK (trigger IN ('manual', 'schedule', 'threshold')),
    from_time     timestamptz,             -- NULL: from the earliest offsets
    to_time       timestamptz,             -- NULL: up to the end offsets at the start
    state         text        NOT NULL DEFAULT 'queued'
                  CHECK (state IN ('queued', 'running', 'succeeded', 'failed')),
    start_offsets jsonb,                   -- {"<partition>": offset}
    end_offsets   jsonb,
    records       bigint,                  -- records in the range
    events        bigint,                  -- parsed events among them
    rejected      bigint,                  -- records that did not parse
    bytes         bigint,                  -- payload bytes read (for the size threshold)
    requested_at  timestamptz NOT NULL DEFAULT now(),
    started_at    timestamptz,
    finished_at   timestamptz,
    error         text
);
CREATE INDEX replay_runs_queued_idx ON replay_runs (id) WHERE state = 'queued';
-- Automatic triggers (schedule, threshold) coalesce: at most one of them waits
-- at a time, whichever instance fired it; a trigger during a run is served
-- once after it.
CREATE UNIQUE INDEX replay_runs_one_queued_automatic ON replay_runs ((true))
    WHERE state = 'queued' AND trigger <> 'manual';

CREATE TABLE dashboard_daily (
    run_id           bigint  NOT NULL REFERENCES replay_runs ON DELETE CASCADE,
    day              date    NOT NULL,
    active_users     bigint  NOT NULL,
    viewing_users    bigint  NOT NULL,
    purchasing_users bigint  NOT NULL,
    views            bigint  NOT NULL,
    clicks           bigint  NOT NULL,
    add_to_cart      bigint  NOT NULL,
    purchases        bigint  NOT NULL,
    revenue_cents    bigint  NOT NULL,
    PRIMARY KEY (run_id, day)
);

CREATE TABLE dashboard_top_products (
    run_id     bigint  NOT NULL REFERENCES replay_runs ON DELETE CASCADE,
    day        date    NOT NULL,
    by         text    NOT NULL CHECK (by IN ('views', 'purchases')),
    rank       integer NOT NULL,
    product_id text    NOT NULL,
    count      bigint  NOT NULL,
    PRIMARY KEY (run_id, day, by, rank)
);

-- At most one row: the run the API serves.
CREATE TABLE dashboard_current (
    singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    run_id    bigint  NOT NULL REFERENCES replay_runs
);
