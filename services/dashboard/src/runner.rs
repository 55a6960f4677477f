//! Runs queued replays one at a time across every dashboard instance: the
//! runner that holds the Postgres advisory lock takes queued runs oldest
//! first; the others wait. A run reads its snapshotted range, aggregates, and
//! stores its results (and, when it covers the topic, becomes current) in one
//! transaction, or is marked failed and changes nothing that is served.
//!
//! An automatic run (schedule, interval, threshold) is incremental when the
//! current run left its days' state in this aggregation version: it reads
//! only the records after the current run's end offsets, merges the state of
//! the days they touch, and carries the other days over, so its cost follows
//! the new data. Otherwise (no state yet, another version, or a run asked
//! for) it is a full replay from the earliest offsets.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use shared::config::KafkaConfig;
use shared::replay::{self, From, Progress, Windows};
use shared::shutdown::CancellationToken;
use sqlx::{PgConnection, PgPool};
use tokio::sync::Notify;

use crate::aggregate::Aggregate;
use crate::reading::{read_plan, Part};
use crate::store::{self, Run, RunKind, Trigger};

/// Progress of the runs this instance is executing, for the API.
pub type Registry = Arc<Mutex<HashMap<i64, Arc<Progress>>>>;

/// What the runner needs.
pub struct Runner {
    pub pool: PgPool,
    pub kafka: KafkaConfig,
    pub topic: String,
    pub keep_runs: i64,
    /// Readers sharing one replay.
    pub readers: usize,
    pub registry: Registry,
    pub wake: Arc<Notify>,
    /// Audits both halves after every successful full run.
    pub auditor: crate::audit::Auditor,
}

impl Runner {
    /// Serves queued runs until shutdown.
    pub async fn run(self, shutdown: CancellationToken) {
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
            if let Err(error) = self.serve_queue(&shutdown).await {
                tracing::warn!(
                    error = format!("{error:#}"),
                    "replay runner failed; retrying"
                );
            }
        }
    }

    /// Under the lock, runs every queued run.
    async fn serve_queue(&self, shutdown: &CancellationToken) -> anyhow::Result<()> {
        let mut lock_conn = self.pool.acquire().await?;
        if !store::try_lock(&mut lock_conn).await? {
            return Ok(());
        }
        let result = async {
            let interrupted = store::fail_interrupted(&mut lock_conn).await?;
            if interrupted > 0 {
                tracing::warn!(interrupted, "marked runs of a stopped process as failed");
            }
            while !shutdown.is_cancelled() {
                let Some(run) = store::claim_next(&mut lock_conn).await? else {
                    break;
                };
                self.execute(run, shutdown).await;
            }
            anyhow::Ok(())
        }
        .await;
        store::unlock(&mut lock_conn).await?;
        result
    }

    async fn execute(&self, run: Run, shutdown: &CancellationToken) {
        let id = run.id;
        tracing::info!(run = id, trigger = run.trigger.as_str(), "run started");
        let started = Instant::now();
        match self.replay(&run, shutdown).await {
            Ok((events, records)) => {
                let secs = started.elapsed().as_secs_f64();
                metrics::histogram!("kappa_replay_duration_seconds").record(secs);
                metrics::gauge!("kappa_replay_events_per_second")
                    .set(records as f64 / secs.max(1e-9));
                metrics::gauge!("kappa_replay_last_success_timestamp_seconds")
                    .set(chrono::Utc::now().timestamp() as f64);
                tracing::info!(
                    run = id,
                    events,
                    records,
                    seconds = secs,
                    "replay succeeded"
                );
                if run.covers_topic() {
                    // The batch half just moved: compare it with the stream
                    // (in the background; the next run need not wait).
                    let auditor = self.auditor.clone();
                    tokio::spawn(async move {
                        auditor.audit_and_log().await;
                        // What the audit read goes back too (it may end
                        // after the run's own release below).
                        release_memory().await;
                    });
                }
            }
            Err(error) => {
                let message = format!("{error:#}");
                tracing::warn!(run = id, error = %message, "replay failed");
                metrics::counter!("kappa_replay_failures_total").increment(1);
                if let Err(e) = store::fail(&self.pool, id, &message).await {
                    tracing::error!(run = id, error = %e, "could not mark the run failed");
                }
            }
        }
        self.registry.lock().expect("poisoned").remove(&id);
        // The run's maps and the readers' fetch buffers are freed: give
        // them back, so that the idle service is small again.
        release_memory().await;
    }

    /// Plans, reads and aggregates the run's range, then stores the results.
    async fn replay(&self, run: &Run, shutdown: &CancellationToken) -> anyhow::Result<(u64, u64)> {
        let (plan, base) = self.plan(run).await?;
        let progress = Progress::new(plan.total());
        self.registry
            .lock()
            .expect("poisoned")
            .insert(run.id, progress.clone());
        let read = progress.clone();
        // Progress for /metrics while the run lasts; the reporter writes the
        // final 1.0 itself, so no late tick of it can overwrite that.
        let (finished, finish) = tokio::sync::oneshot::channel::<()>();
        let mut gauge = {
            let progress = progress.clone();
            AbortOnDrop(tokio::spawn(async move {
                tokio::pin!(finish);
                loop {
                    metrics::gauge!("kappa_replay_progress").set(progress.view().fraction);
                    tokio::select! {
                        _ = &mut finish => break,
                        _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                    }
                }
                metrics::gauge!("kappa_replay_progress").set(1.0);
            }))
        };
        // The run's large statements (its windows, its days' state) on a
        // connection of its own, closed with the run: the megabytes its
        // buffers grew to go with it, not into the pool.
        let mut conn = self.pool.acquire().await?.detach();
        let known = windows_after(&mut conn, base.as_ref()).await?;
        let Part {
            mut aggregate,
            events,
            rejected,
            windows,
            ..
        } = read_plan(
            &self.kafka,
            &self.pool,
            &plan,
            known,
            self.readers,
            &progress,
            shutdown,
        )
        .await?;
        let _ = finished.send(());
        let _ = (&mut gauge.0).await;
        let read_at = Instant::now();
        if base.is_some() {
            merge_stored_days(&mut conn, &mut aggregate).await?;
        }
        let merged_at = Instant::now();
        // What a run that becomes current leaves for the next one.
        let (states, windows) = if run.covers_topic() {
            let days = aggregate.days().into_iter();
            let states = days.map(|day| (day, aggregate.encode_day(day))).collect();
            (states, windows.encode())
        } else {
            Default::default()
        };
        let outcome = store::Outcome {
            results: aggregate.finish(),
            counts: store::Counts {
                events,
                rejected,
                bytes: read.bytes(),
            },
            states,
            windows,
            base: base.map(|b| b.id),
        };
        let encoded_at = Instant::now();
        store::succeed(&mut conn, run, &outcome, self.keep_runs).await?;
        sqlx::Connection::close(conn).await?;
        let state_bytes: usize = outcome.states.iter().map(|(_, s)| s.len()).sum();
        tracing::info!(
            run = run.id,
            merge_seconds = (merged_at - read_at).as_secs_f64(),
            finish_seconds = (encoded_at - merged_at).as_secs_f64(),
            store_seconds = encoded_at.elapsed().as_secs_f64(),
            state_bytes,
            window_bytes = outcome.windows.len(),
            "run stored"
        );
        Ok((events, events + rejected))
    }

    /// Decides what the run reads and records it: after the current run's
    /// end (incremental: an automatic run, when the current run left its
    /// state in this version), the whole topic, or the asked range. Returns
    /// the plan and the run it continues.
    async fn plan(&self, run: &Run) -> anyhow::Result<(replay::Plan, Option<Run>)> {
        let base = match run.trigger {
            Trigger::Manual => None,
            Trigger::Schedule | Trigger::Interval | Trigger::Threshold => {
                store::chain_base(&self.pool).await?
            }
        };
        let from = run.from_time.map_or(From::Earliest, From::Time);
        let (kafka, topic, to) = (self.kafka.clone(), self.topic.clone(), run.to_time);
        let plan =
            tokio::task::spawn_blocking(move || replay::plan(&kafka, &topic, from, to)).await??;
        let (plan, kind) = match &base {
            Some(base) => (plan.after(&base.ends()), RunKind::Incremental),
            None if run.covers_topic() => (plan, RunKind::Full),
            None => (plan, RunKind::Range),
        };
        let start: BTreeMap<i32, i64> = plan.spans.iter().map(|(p, s)| (*p, s.start)).collect();
        let end: BTreeMap<i32, i64> = plan.spans.iter().map(|(p, s)| (*p, s.end)).collect();
        let range = store::Range {
            kind,
            base: base.as_ref(),
            start: &start,
            end: &end,
            records: plan.total(),
        };
        store::record_range(&self.pool, run.id, range).await?;
        tracing::info!(
            run = run.id,
            kind = kind.as_str(),
            base = base.as_ref().map(|b| b.id),
            records = plan.total(),
            "run planned"
        );
        Ok((plan, base))
    }
}

/// Where `base`'s repeat detection ended, for a run that goes on from it
/// instead of reading the window's records before its start again; none
/// stored (or unreadable): nothing known, the run reads them.
async fn windows_after(conn: &mut PgConnection, base: Option<&Run>) -> anyhow::Result<Windows> {
    if base.is_none() {
        return Ok(Windows::default());
    }
    let stored = store::windows(conn).await?;
    Ok(stored
        .and_then(|bytes| Windows::decode(&bytes))
        .unwrap_or_default())
}

/// Adds the stored state of the days `aggregate` touched: those days then
/// hold what a full replay would have counted.
async fn merge_stored_days(
    conn: &mut PgConnection,
    aggregate: &mut Aggregate,
) -> anyhow::Result<()> {
    for (day, state) in store::day_states(conn, &aggregate.days()).await? {
        aggregate
            .merge_encoded(day, &state)
            .map_err(|e| anyhow::anyhow!("{e}; a full replay (POST /api/replays) rebuilds it"))?;
    }
    Ok(())
}

/// Returns what a run or an audit freed to the OS.
async fn release_memory() {
    if let Err(error) = shared::memory::release_everywhere().await {
        tracing::warn!(%error, "returning memory to the OS failed");
    }
}

/// Stops a background task when the scope that started it ends, however it ends.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
