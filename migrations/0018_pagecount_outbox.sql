-- A job's map tasks go out through an outbox, written in the transaction that
-- creates the job: a coordinator killed after the commit leaves them to the
-- next relay, never a job whose tasks were not published.
CREATE TABLE pagecount_outbox (
    id         bigserial   PRIMARY KEY,
    job_id     bigint      NOT NULL REFERENCES pagecount_jobs (id) ON DELETE CASCADE,
    -- The record's key (the task's id).
    task_key   text        NOT NULL,
    -- The map_task event exactly as it goes on the tasks topic.
    payload    text        NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    sent_at    timestamptz
);
CREATE INDEX pagecount_outbox_unsent ON pagecount_outbox (id) WHERE sent_at IS NULL;
CREATE INDEX pagecount_outbox_job ON pagecount_outbox (job_id);
