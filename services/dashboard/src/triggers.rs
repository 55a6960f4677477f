//! What starts a replay besides a request: a cron schedule, and a threshold
//! of new data on the topic since the last successful full run (the classic
//! batching rule, "every 100 MB or every night"). Automatic triggers coalesce
//! in the database (one waiting automatic run at most, across instances), so
//! a trigger that fires during a run is served once, after it.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;
use shared::config::KafkaConfig;
use shared::shutdown::CancellationToken;
use sqlx::PgPool;
use tokio::sync::Notify;

use crate::store::{self, Trigger};

/// Average record size assumed before any run measured one.
const DEFAULT_RECORD_BYTES: u64 = 200;

/// What the triggers saw last, for `GET /api/triggers`: when the next
/// scheduled run is due and how much new data the threshold check found.
#[derive(Debug, Clone, Default, Serialize, utoipa::ToSchema)]
pub struct TriggerStatus {
    /// The cron schedule (with seconds, UTC); none: no scheduled replays.
    pub schedule: Option<String>,
    /// When the schedule fires next.
    pub next_scheduled_at: Option<DateTime<Utc>>,
    /// New records since the last successful full run that start one; 0: off.
    pub threshold_events: u64,
    /// New bytes (estimated) since the last successful full run that start one; 0: off.
    pub threshold_bytes: u64,
    /// Threshold checks done since start-up.
    pub checks: u64,
    pub last_check_at: Option<DateTime<Utc>>,
    /// Records appended since the last successful full run, at the last check
    /// (`None` while a run was queued or running).
    pub new_records: Option<u64>,
    /// Their estimated size in bytes.
    pub new_bytes: Option<u64>,
}

/// The status shared with the HTTP handlers.
pub type SharedStatus = Arc<Mutex<TriggerStatus>>;

pub struct Triggers {
    pub pool: PgPool,
    pub kafka: KafkaConfig,
    pub topic: String,
    pub schedule: Option<cron::Schedule>,
    pub threshold_bytes: u64,
    pub threshold_events: u64,
    pub check_interval: Duration,
    pub wake: Arc<Notify>,
    pub status: SharedStatus,
}

impl Triggers {
    pub async fn run(self, shutdown: CancellationToken) {
        tokio::join!(self.on_schedule(&shutdown), self.on_threshold(&shutdown));
    }

    async fn fire(&self, trigger: Trigger) {
        match store::enqueue_automatic(&self.pool, trigger).await {
            Ok(Some(id)) => {
                tracing::info!(run = id, trigger = trigger.as_str(), "replay queued");
                self.wake.notify_one();
            }
            Ok(None) => tracing::debug!(
                trigger = trigger.as_str(),
                "an automatic replay is already waiting; it serves this trigger"
            ),
            Err(error) => {
                tracing::warn!(%error, trigger = trigger.as_str(), "could not queue a replay")
            }
        }
    }

    async fn on_schedule(&self, shutdown: &CancellationToken) {
        let Some(schedule) = &self.schedule else {
            return;
        };
        while let Some(next) = schedule.upcoming(Utc).next() {
            self.status.lock().expect("poisoned").next_scheduled_at = Some(next);
            let wait = (next - Utc::now()).to_std().unwrap_or_default();
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(wait) => self.fire(Trigger::Schedule).await,
            }
        }
    }

    async fn on_threshold(&self, shutdown: &CancellationToken) {
        if self.threshold_bytes == 0 && self.threshold_events == 0 {
            return;
        }
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(self.check_interval) => {}
            }
            let checked = self.new_data().await;
            {
                let mut status = self.status.lock().expect("poisoned");
                status.checks += 1;
                status.last_check_at = Some(Utc::now());
                let seen = checked.as_ref().ok().copied().flatten();
                status.new_records = seen.map(|(records, _)| records);
                status.new_bytes = seen.map(|(_, bytes)| bytes);
            }
            match checked {
                Ok(Some((records, bytes))) => {
                    let by_events = self.threshold_events > 0 && records >= self.threshold_events;
                    let by_bytes = self.threshold_bytes > 0 && bytes >= self.threshold_bytes;
                    if by_events || by_bytes {
                        tracing::info!(records, bytes, "new data passed the threshold");
                        self.fire(Trigger::Threshold).await;
                    }
                }
                Ok(None) => {}
                Err(error) => {
                    tracing::warn!(error = format!("{error:#}"), "threshold check failed")
                }
            }
        }
    }

    /// Records and (estimated) bytes appended since the last successful full run;
    /// `None` while a run is queued or running.
    async fn new_data(&self) -> anyhow::Result<Option<(u64, u64)>> {
        if store::busy(&self.pool).await? {
            return Ok(None);
        }
        let marks = shared::kafka::watermarks(&self.kafka, &self.topic).await?;
        let last = store::last_success(&self.pool).await?;
        let covered: i64 = match last.as_ref().and_then(|r| r.end_offsets.as_ref()) {
            Some(ends) => ends
                .as_object()
                .map_or(0, |m| m.values().filter_map(|v| v.as_i64()).sum()),
            None => marks.iter().map(|(low, _)| low).sum(),
        };
        let records = (marks.iter().map(|(_, high)| high).sum::<i64>() - covered).max(0) as u64;
        // Kafka does not say how many bytes a range holds: use the last run's
        // measured average record size.
        let average = last
            .and_then(|r| Some((r.bytes? as u64, r.records? as u64)))
            .filter(|(_, n)| *n > 0)
            .map_or(DEFAULT_RECORD_BYTES, |(bytes, n)| bytes / n);
        Ok(Some((records, records * average)))
    }
}
