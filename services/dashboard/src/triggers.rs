//! What starts a run besides a request: a cron schedule, an interval since
//! the last successful run, and a threshold of new data on the topic since
//! the current run's end (the article's batching rule, "100 MB of data or
//! every 12 hours"). Such a run is incremental when it can be (see
//! `runner`). Automatic triggers coalesce in the database (one waiting
//! automatic run at most, across instances), so a trigger that fires during
//! a run is served once, after it.
//!
//! The threshold counts what was appended after the current run's end
//! offsets: records from the offsets, bytes by reading the new records'
//! payloads once (Kafka keeps no byte count of a range); each check reads
//! only what arrived since the one before.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;
use shared::config::KafkaConfig;
use shared::replay::{self, From, Plan};
use shared::shutdown::CancellationToken;
use sqlx::PgPool;
use tokio::sync::Notify;

use crate::store::{self, RunKind, Trigger};

/// What the triggers saw last, for `GET /api/triggers`: each rule, its
/// current value, and what fires next.
#[derive(Debug, Clone, Default, Serialize, utoipa::ToSchema)]
pub struct TriggerStatus {
    /// The cron schedule (with seconds, UTC); none: no scheduled runs.
    pub schedule: Option<String>,
    /// When the schedule fires next.
    pub next_scheduled_at: Option<DateTime<Utc>>,
    /// The interval after the last successful run (`dashboard.interval`,
    /// e.g. "12h"); none: off.
    pub interval: Option<String>,
    /// When the interval fires next.
    pub next_interval_at: Option<DateTime<Utc>>,
    /// New records after the current run's end that start a run; 0: off.
    pub threshold_events: u64,
    /// New payload bytes after the current run's end that start a run; 0: off.
    pub threshold_bytes: u64,
    /// Threshold checks done since start-up.
    pub checks: u64,
    pub last_check_at: Option<DateTime<Utc>>,
    /// The run new data counts from (the current run); none: from the
    /// earliest offsets.
    pub since_run: Option<i64>,
    /// Records appended after that run's end, at the last check (`None`
    /// while a run was queued or running).
    pub new_records: Option<u64>,
    /// Their payload bytes, as read (counted only while `threshold_bytes` is on).
    pub new_bytes: Option<u64>,
    /// Records still to come before the record threshold fires.
    pub records_to_threshold: Option<u64>,
    /// Bytes still to come before the byte threshold fires.
    pub bytes_to_threshold: Option<u64>,
    /// The next time-based trigger (schedule or interval) and when.
    pub next_timed: Option<NextTimed>,
    /// What the next automatic run will be: `incremental` (the current run
    /// left its days' state in this version) or `full`.
    #[schema(value_type = Option<RunKind>)]
    pub next_run_kind: Option<&'static str>,
}

/// A time-based trigger and when it fires.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct NextTimed {
    #[schema(value_type = Trigger)]
    pub trigger: &'static str,
    pub at: DateTime<Utc>,
}

impl TriggerStatus {
    /// The earlier of the schedule's and the interval's next firing.
    fn update_next_timed(&mut self) {
        let timed = [
            (Trigger::Schedule, self.next_scheduled_at),
            (Trigger::Interval, self.next_interval_at),
        ];
        self.next_timed = timed
            .into_iter()
            .filter_map(|(trigger, at)| Some((trigger, at?)))
            .min_by_key(|(_, at)| *at)
            .map(|(trigger, at)| NextTimed {
                trigger: trigger.as_str(),
                at,
            });
    }
}

/// The status shared with the HTTP handlers.
pub type SharedStatus = Arc<Mutex<TriggerStatus>>;

pub struct Triggers {
    pub pool: PgPool,
    pub kafka: KafkaConfig,
    pub topic: String,
    pub schedule: Option<cron::Schedule>,
    pub interval: Option<Duration>,
    pub threshold_bytes: u64,
    pub threshold_events: u64,
    pub check_interval: Duration,
    pub wake: Arc<Notify>,
    pub status: SharedStatus,
}

/// New data after the current run, at one check.
struct NewData {
    since_run: Option<i64>,
    records: u64,
    /// `None` while the byte rule is off.
    bytes: Option<u64>,
    next_run_kind: RunKind,
}

/// Where the byte count has read to, for the run it counts from: the next
/// check reads only the records after it.
struct Measured {
    since_run: Option<i64>,
    read_to: BTreeMap<i32, i64>,
    bytes: u64,
}

impl Triggers {
    pub async fn run(self, shutdown: CancellationToken) {
        tokio::join!(
            self.on_schedule(&shutdown),
            self.on_interval(&shutdown),
            self.on_threshold(&shutdown)
        );
    }

    fn status(&self) -> std::sync::MutexGuard<'_, TriggerStatus> {
        self.status.lock().expect("poisoned")
    }

    async fn fire(&self, trigger: Trigger) {
        match store::enqueue_automatic(&self.pool, trigger).await {
            Ok(Some(id)) => {
                tracing::info!(run = id, trigger = trigger.as_str(), "run queued");
                self.wake.notify_one();
            }
            Ok(None) => tracing::debug!(
                trigger = trigger.as_str(),
                "an automatic run is already waiting; it serves this trigger"
            ),
            Err(error) => {
                tracing::warn!(%error, trigger = trigger.as_str(), "could not queue a run")
            }
        }
    }

    async fn on_schedule(&self, shutdown: &CancellationToken) {
        let Some(schedule) = &self.schedule else {
            return;
        };
        while let Some(next) = schedule.upcoming(Utc).next() {
            {
                let mut status = self.status();
                status.next_scheduled_at = Some(next);
                status.update_next_timed();
            }
            let wait = (next - Utc::now()).to_std().unwrap_or_default();
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(wait) => self.fire(Trigger::Schedule).await,
            }
        }
    }

    /// Fires `interval` after the last successful run (at once when none
    /// succeeded yet); after a firing whose run failed, again an interval
    /// after that firing. Looks again every check interval, since another
    /// trigger's run moves the time.
    async fn on_interval(&self, shutdown: &CancellationToken) {
        let Some(interval) = self.interval else {
            return;
        };
        let interval = chrono::TimeDelta::from_std(interval).unwrap_or(chrono::TimeDelta::MAX);
        let mut fired: Option<DateTime<Utc>> = None;
        loop {
            match self.interval_due(interval, fired).await {
                Ok(true) => {
                    self.fire(Trigger::Interval).await;
                    fired = Some(Utc::now());
                    continue;
                }
                Ok(false) => {}
                Err(error) => tracing::warn!(%error, "interval check failed"),
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(self.check_interval) => {}
            }
        }
    }

    /// Whether the interval is due now and no run waits or runs; shows when
    /// it is due.
    async fn interval_due(
        &self,
        interval: chrono::TimeDelta,
        fired: Option<DateTime<Utc>>,
    ) -> sqlx::Result<bool> {
        let last = store::current(&self.pool)
            .await?
            .and_then(|r| r.finished_at);
        let due = match last.max(fired) {
            Some(t) => t
                .checked_add_signed(interval)
                .unwrap_or(DateTime::<Utc>::MAX_UTC),
            None => Utc::now(),
        };
        {
            let mut status = self.status();
            status.next_interval_at = Some(due);
            status.update_next_timed();
        }
        Ok(due <= Utc::now() && !store::busy(&self.pool).await?)
    }

    async fn on_threshold(&self, shutdown: &CancellationToken) {
        if self.threshold_bytes == 0 && self.threshold_events == 0 {
            return;
        }
        let mut measured = None;
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(self.check_interval) => {}
            }
            let checked = self.new_data(&mut measured, shutdown).await;
            let seen = match &checked {
                Ok(seen) => seen.as_ref(),
                Err(error) => {
                    tracing::warn!(error = format!("{error:#}"), "threshold check failed");
                    None
                }
            };
            let remaining = |threshold: u64, value: Option<u64>| {
                value
                    .filter(|_| threshold > 0)
                    .map(|v| threshold.saturating_sub(v))
            };
            {
                let mut status = self.status();
                status.checks += 1;
                status.last_check_at = Some(Utc::now());
                status.new_records = seen.map(|s| s.records);
                status.new_bytes = seen.and_then(|s| s.bytes);
                status.records_to_threshold = remaining(self.threshold_events, status.new_records);
                status.bytes_to_threshold = remaining(self.threshold_bytes, status.new_bytes);
                if let Some(seen) = seen {
                    status.since_run = seen.since_run;
                    status.next_run_kind = Some(seen.next_run_kind.as_str());
                }
            }
            let Some(seen) = seen else { continue };
            let by_events = self.threshold_events > 0 && seen.records >= self.threshold_events;
            let by_bytes =
                self.threshold_bytes > 0 && seen.bytes.is_some_and(|b| b >= self.threshold_bytes);
            if by_events || by_bytes {
                tracing::info!(
                    records = seen.records,
                    bytes = seen.bytes,
                    "new data passed the threshold"
                );
                self.fire(Trigger::Threshold).await;
            }
        }
    }

    /// Records and payload bytes appended after the current run's end;
    /// `None` while a run is queued or running.
    async fn new_data(
        &self,
        measured: &mut Option<Measured>,
        shutdown: &CancellationToken,
    ) -> anyhow::Result<Option<NewData>> {
        if store::busy(&self.pool).await? {
            return Ok(None);
        }
        let chain = store::current_chain(&self.pool).await?;
        let next_run_kind = match chain {
            Some((_, true)) => RunKind::Incremental,
            _ => RunKind::Full,
        };
        let since_run = chain.as_ref().map(|(r, _)| r.id);
        let ends = chain.map(|(r, _)| r.ends()).unwrap_or_default();
        let (kafka, topic) = (self.kafka.clone(), self.topic.clone());
        let topic_now: Plan =
            tokio::task::spawn_blocking(move || replay::plan(&kafka, &topic, From::Earliest, None))
                .await??;
        let records = topic_now.clone().after(&ends).total();
        let bytes = if self.threshold_bytes > 0 {
            // A new current run: count again from its end.
            let measured = match measured {
                Some(m) if m.since_run == since_run => m,
                _ => measured.insert(Measured {
                    since_run,
                    read_to: ends,
                    bytes: 0,
                }),
            };
            let unread = topic_now.after(&measured.read_to);
            let (kafka, shutdown) = (self.kafka.clone(), shutdown.clone());
            let to_read = unread.clone();
            let bytes =
                tokio::task::spawn_blocking(move || replay::measure(&kafka, &to_read, &shutdown))
                    .await??;
            measured.bytes += bytes;
            measured.read_to = unread.spans.iter().map(|(p, s)| (*p, s.end)).collect();
            Some(measured.bytes)
        } else {
            None
        };
        Ok(Some(NewData {
            since_run,
            records,
            bytes,
            next_run_kind,
        }))
    }
}

/// Parses an interval such as "12h", "30m", "90s", "1d" or "1h30m"; empty: none.
pub fn parse_interval(text: &str) -> Result<Option<Duration>, String> {
    let text = text.trim();
    if text.is_empty() {
        return Ok(None);
    }
    let bad = || format!("`{text}` is not an interval such as 12h, 30m, 90s, 1d or 1h30m");
    let mut total = 0u64;
    let mut number = String::new();
    for c in text.chars() {
        if c.is_ascii_digit() {
            number.push(c);
            continue;
        }
        let unit = match c {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            'd' => 86_400,
            _ => return Err(bad()),
        };
        let n: u64 = number.parse().map_err(|_| bad())?;
        total = n
            .checked_mul(unit)
            .and_then(|s| total.checked_add(s))
            .ok_or_else(bad)?;
        number.clear();
    }
    if !number.is_empty() || total == 0 {
        return Err(bad());
    }
    Ok(Some(Duration::from_secs(total)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intervals_parse_in_their_units_and_refuse_the_rest() {
        let secs = |t: &str| parse_interval(t).map(|d| d.map(|d| d.as_secs()));
        assert_eq!(secs("12h"), Ok(Some(43_200)));
        assert_eq!(secs("1h30m"), Ok(Some(5_400)));
        assert_eq!(secs(" 1d "), Ok(Some(86_400)));
        assert_eq!(secs("90s"), Ok(Some(90)));
        assert_eq!(secs(""), Ok(None));
        for bad in [
            "12",
            "h",
            "0s",
            "12x",
            "1.5h",
            "-1h",
            "99999999999999999999d",
        ] {
            assert!(parse_interval(bad).is_err(), "{bad}");
        }
    }
}
