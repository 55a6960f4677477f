-- Incremental batch runs (services/dashboard): an automatic run reads only
-- the records after the current run's end offsets and merges them into the
-- per-day state the current run left, so its cost follows the new data, not
-- the topic's history.
--
-- kind: 'full' (from the earliest offsets), 'incremental' (after its base
-- run's end offsets, merged into the base's state) or 'range' (a custom
-- time range, served by id only); NULL while an automatic run waits (it is
-- decided when the run starts). aggregation_version: the version of what
-- the run computed (dashboard::aggregate::VERSION): a run never merges
-- into a state another version made.
-- covered_from: per partition, the offset a run's results count from (a
-- full run's start offsets; an incremental run's base's covered_from), what
-- the Kappa audit compares the stream with; NULL for a custom range.
ALTER TABLE replay_runs
    ADD COLUMN kind text CHECK (kind IN ('full', 'incremental', 'range')),
    ADD COLUMN base_run_id bigint,
    ADD COLUMN aggregation_version integer,
    ADD COLUMN covered_from jsonb;
UPDATE replay_runs
   SET kind = CASE WHEN from_time IS NULL AND to_time IS NULL THEN 'full' ELSE 'range' END
 WHERE trigger = 'manual' OR state <> 'queued';
UPDATE replay_runs SET covered_from = start_offsets WHERE kind = 'full';

-- The mergeable state of every day the current run counted (distinct users
-- as sets and every product's counts, which the stored results, a count and
-- a top 20, cannot be merged from), encoded by the service
-- (services/dashboard/src/aggregate.rs). It belongs to the run named in
-- dashboard_current, made by state_version; it changes only in the
-- transaction that makes a run current. NULL state_version: no state (runs
-- made before it existed), the next automatic run is full.
CREATE TABLE dashboard_day_state (
    day   date  PRIMARY KEY,
    state bytea NOT NULL
);
ALTER TABLE dashboard_current ADD COLUMN state_version integer;
-- Where the current run's repeat detection ended (shared::replay::Windows,
-- encoded: per partition the event ids admitted at the kafka.dedupe_window
-- offsets before its end). An incremental run goes on from it instead of
-- reading those records again; NULL (or another window size): it reads them.
ALTER TABLE dashboard_current ADD COLUMN windows bytea;

-- A trigger beside the cron schedule: every `dashboard.interval` after the
-- last successful run.
ALTER TABLE replay_runs DROP CONSTRAINT replay_runs_trigger_check,
    ADD CONSTRAINT replay_runs_trigger_check
        CHECK (trigger IN ('manual', 'schedule', 'interval', 'threshold'));
