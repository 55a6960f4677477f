//! The Kappa audit: the streaming half (the recommendation service's per-day
//! counters, `rec_daily`) and the batch half (the current replay run's
//! per-day metrics, `dashboard_daily`) count the same stream, so over the
//! same records they must agree exactly.
//!
//! The two halves have read different amounts of the stream: the batch half
//! every partition from the offsets its results count from (its chain's full
//! run's start, for an incremental run) up to its snapshotted end offsets, the streaming half up to its committed positions
//! (`consumer_offsets`, committed in the transaction that adds to
//! `rec_daily`, and read here in one snapshot with the counters). The audit
//! compares them over what both have processed: per partition up to the
//! smaller of the two positions. Whichever half is ahead in a partition has
//! the records between the two positions taken out of its numbers: the audit
//! reads them from the topic (a short-lived reader, no group) and aggregates
//! them with the replay's own code ([`crate::reading::read_plan`]: parsing,
//! claim checks, the key rule and the duplicate-id window, which the replay
//! reader fills from the records before a range's start), so the
//! adjustment counts each record exactly as a replay would. Both numbers then
//! refer to the same offsets, and any difference is a real disagreement.
//! What the stream counted beyond a run is remembered between audits of that
//! run, so a later audit reads only what the stream added since.
//!
//! Both halves start at the topic's beginning (it keeps everything); were
//! records ever deleted by retention, a stream that counted them could not
//! be compared exactly with a run that starts after them.
//!
//! Measures are what both halves keep: views, clicks, add_to_cart,
//! purchases and revenue in cents (distinct users only the batch half knows).
//!
//! An audit over every day (no `from`/`to`) sets the
//! `kappa_dashboard_audit_drift{measure}` gauges and is what the page
//! shows; one runs by itself after every successful full replay.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use chrono::{NaiveDate, Utc};
use shared::config::KafkaConfig;
use shared::replay::{Plan, Progress, Span};
use shared::shutdown::CancellationToken;
use sqlx::PgPool;

use crate::store::{self, Run};

mod report;

pub use report::*;
use report::{counts, Counts};

/// Runs audits (one at a time per instance) and keeps the last one over
/// every day.
#[derive(Clone)]
pub struct Auditor {
    pub pool: PgPool,
    pub kafka: KafkaConfig,
    pub topic: String,
    /// The streaming consumer's name in `consumer_offsets`.
    pub consumer: String,
    pub readers: usize,
    pub shutdown: CancellationToken,
    last: Arc<Mutex<Option<Arc<AuditReport>>>>,
    /// Held for the length of an audit; guards the cache.
    running: Arc<tokio::sync::Mutex<StreamAhead>>,
}

/// What the streaming half counted beyond a run's end offsets, as far as
/// an earlier audit read it: the stream only moves on, so the next audit of
/// the same run reads only what the stream added since (the usual case: the
/// stream runs ahead of the last replay by hours of records).
#[derive(Default)]
struct StreamAhead {
    run_id: Option<i64>,
    /// Per partition, the offset counted up to (from the run's end offset).
    read_to: BTreeMap<i32, i64>,
    days: BTreeMap<NaiveDate, Counts>,
}

impl Auditor {
    pub fn new(
        pool: PgPool,
        kafka: KafkaConfig,
        consumer: String,
        readers: usize,
        shutdown: CancellationToken,
    ) -> Self {
        Auditor {
            pool,
            topic: kafka.events_topic.clone(),
            kafka,
            consumer,
            readers: readers.max(1),
            shutdown,
            last: Arc::default(),
            running: Arc::default(),
        }
    }

    /// The last audit over every day, if one ran.
    pub fn last(&self) -> Option<Arc<AuditReport>> {
        self.last.lock().expect("poisoned").clone()
    }

    /// Compares both halves over the days `from..=to` (each end optional).
    pub async fn audit(
        &self,
        from: Option<NaiveDate>,
        to: Option<NaiveDate>,
    ) -> Result<AuditReport, AuditError> {
        if let (Some(f), Some(t)) = (from, to) {
            if t < f {
                return Err(AuditError::BadRange(format!(
                    "`to` ({t}) must not be before `from` ({f})"
                )));
            }
        }
        let mut ahead_cache = self.running.lock().await;
        let run = store::current(&self.pool).await?.ok_or(AuditError::NoRun)?;
        let (positions, stream_days) = self.stream_state().await?;
        if positions.is_empty() {
            return Err(AuditError::StreamNotStarted {
                consumer: self.consumer.clone(),
                topic: self.topic.clone(),
            });
        }
        let batch_days = store::stored_days(&self.pool, run.id).await?;
        let partitions = align(&run, &positions);
        // The records between the two halves' positions, counted the way
        // the replay counts: taken out of the half that is ahead.
        let between = |side: Adjusted| -> BTreeMap<i32, Span> {
            partitions
                .iter()
                .filter(|p| p.adjusted == side)
                .map(|p| {
                    let (start, end) = (p.compared_end, p.compared_end + p.records_read as i64);
                    (p.partition, Span { start, end })
                })
                .collect()
        };
        let stream_extra = self
            .stream_ahead(&mut ahead_cache, run.id, between(Adjusted::Stream))
            .await?;
        let batch_extra = self
            .count(&Plan {
                topic: self.topic.clone(),
                spans: between(Adjusted::Batch),
            })
            .await?;
        let mut stream = stream_days;
        subtract(&mut stream, &stream_extra);
        let mut batch: BTreeMap<NaiveDate, Counts> = batch_days
            .iter()
            .map(|(d, day)| (*d, counts(day)))
            .collect();
        subtract(&mut batch, &batch_extra);

        let in_range = |d: &NaiveDate| from.is_none_or(|f| *d >= f) && to.is_none_or(|t| *d <= t);
        let mut dates: Vec<NaiveDate> = stream.keys().chain(batch.keys()).copied().collect();
        dates.sort_unstable();
        dates.dedup();
        let days: Vec<AuditDay> = dates
            .into_iter()
            .filter(in_range)
            .map(|d| {
                let (s, b) = (stream.get(&d), batch.get(&d));
                AuditDay::new(
                    d,
                    s.copied().unwrap_or_default(),
                    b.copied().unwrap_or_default(),
                )
            })
            .filter(|d| d.measures().iter().any(|c| c.stream != 0 || c.batch != 0))
            .collect();
        let drift = Drift::of(&days);
        let report = AuditReport {
            audited_at: Utc::now(),
            run_id: run.id,
            consumer: self.consumer.clone(),
            topic: self.topic.clone(),
            records_read: partitions.iter().map(|p| p.records_read).sum(),
            partitions,
            from,
            to,
            days,
            zero_drift: drift.is_zero(),
            drift,
        };
        if from.is_none() && to.is_none() {
            for (measure, value) in drift.by_measure() {
                metrics::gauge!("kappa_dashboard_audit_drift", "measure" => measure)
                    .set(value as f64);
            }
            metrics::gauge!("kappa_dashboard_audit_last_timestamp_seconds")
                .set(report.audited_at.timestamp() as f64);
            *self.last.lock().expect("poisoned") = Some(Arc::new(report.clone()));
        }
        Ok(report)
    }

    /// The streaming consumer's committed positions and its per-day
    /// counters, read in one snapshot (the worker commits both in one
    /// transaction, so they always belong together).
    async fn stream_state(
        &self,
    ) -> Result<(BTreeMap<i32, i64>, BTreeMap<NaiveDate, Counts>), AuditError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            .execute(&mut *tx)
            .await?;
        let positions: Vec<(i32, i64)> = sqlx::query_as(
            "SELECT partition, next_offset FROM consumer_offsets WHERE consumer = $1 AND topic = $2",
        )
        .bind(&self.consumer)
        .bind(&self.topic)
        .fetch_all(&mut *tx)
        .await?;
        let rows: Vec<(NaiveDate, i64, i64, i64, i64, i64)> = sqlx::query_as(
            "SELECT day, sum(views)::int8, sum(clicks)::int8, sum(add_to_cart)::int8,
                    sum(purchases)::int8, sum(revenue_cents)::int8
             FROM rec_daily GROUP BY day",
        )
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        let days = rows
            .into_iter()
            .map(|(d, a, b, c, e, f)| (d, [a, b, c, e, f]))
            .collect();
        Ok((positions.into_iter().collect(), days))
    }

    /// The per-day measures of the records in `wanted` (the stream's part
    /// beyond the run's end offsets), reading only what `cache` lacks.
    async fn stream_ahead(
        &self,
        cache: &mut StreamAhead,
        run_id: i64,
        wanted: BTreeMap<i32, Span>,
    ) -> anyhow::Result<BTreeMap<NaiveDate, Counts>> {
        let reusable = cache.run_id == Some(run_id)
            && cache.read_to.iter().all(|(p, at)| {
                wanted
                    .get(p)
                    .is_some_and(|span| span.start <= *at && *at <= span.end)
            });
        if !reusable {
            *cache = StreamAhead {
                run_id: Some(run_id),
                ..StreamAhead::default()
            };
        }
        let spans = wanted
            .iter()
            .map(|(p, span)| {
                let start = cache.read_to.get(p).copied().unwrap_or(span.start);
                (
                    *p,
                    Span {
                        start,
                        end: span.end,
                    },
                )
            })
            .collect();
        let new = self
            .count(&Plan {
                topic: self.topic.clone(),
                spans,
            })
            .await?;
        for (day, counts) in new {
            let sum = cache.days.entry(day).or_default();
            for (s, c) in sum.iter_mut().zip(counts) {
                *s = s.saturating_add(c);
            }
        }
        cache.read_to = wanted.iter().map(|(p, span)| (*p, span.end)).collect();
        Ok(cache.days.clone())
    }

    /// The per-day measures of the records in `plan`, as a replay counts them.
    async fn count(&self, plan: &Plan) -> anyhow::Result<BTreeMap<NaiveDate, Counts>> {
        if plan.total() == 0 {
            return Ok(BTreeMap::new());
        }
        let progress = Progress::new(plan.total());
        let part = crate::reading::read_plan(
            &self.kafka,
            &self.pool,
            plan,
            shared::replay::Windows::default(),
            self.readers,
            &progress,
            &self.shutdown,
        )
        .await?;
        Ok(part
            .aggregate
            .finish()
            .days
            .into_iter()
            .map(|(d, r)| (d, counts(&r.day)))
            .collect())
    }

    /// An audit over every day, logged (after a replay: best effort).
    pub async fn audit_and_log(&self) {
        match self.audit(None, None).await {
            Ok(report) if report.zero_drift => tracing::info!(
                run = report.run_id,
                days = report.days.len(),
                records_read = report.records_read,
                "Kappa audit: both halves agree"
            ),
            Ok(report) => {
                let first: Vec<String> = report
                    .mismatches()
                    .take(5)
                    .map(|(d, m, c)| format!("{d} {m}: stream {} batch {}", c.stream, c.batch))
                    .collect();
                tracing::warn!(run = report.run_id, drift = ?report.drift, ?first, "Kappa audit: the halves disagree");
            }
            Err(AuditError::StreamNotStarted { consumer, .. }) => {
                tracing::debug!(
                    consumer,
                    "Kappa audit skipped: the streaming consumer has committed nothing"
                )
            }
            Err(AuditError::Failed(error)) => {
                tracing::warn!(error = format!("{error:#}"), "Kappa audit failed")
            }
            Err(other) => tracing::debug!(?other, "Kappa audit skipped"),
        }
    }
}

/// Per partition, where each half is and up to where both compare.
fn align(run: &Run, positions: &BTreeMap<i32, i64>) -> Vec<PartitionOffsets> {
    // What the run's results count: from where its chain's full run
    // started, up to its own end.
    let (start, end) = (run.covered_from(), run.ends());
    let mut all: Vec<i32> = end.keys().chain(positions.keys()).copied().collect();
    all.sort_unstable();
    all.dedup();
    all.into_iter()
        .map(|partition| {
            let batch_start = start.get(&partition).copied().unwrap_or(0);
            // A partition the run did not know (added later): it read none of it.
            let batch_end = end.get(&partition).copied().unwrap_or(batch_start);
            let stream_next = positions.get(&partition).copied();
            let stream_at = stream_next.unwrap_or(batch_start).max(batch_start);
            let compared_end = stream_at.min(batch_end);
            let adjusted = match stream_at.cmp(&batch_end) {
                std::cmp::Ordering::Equal => Adjusted::None,
                std::cmp::Ordering::Greater => Adjusted::Stream,
                std::cmp::Ordering::Less => Adjusted::Batch,
            };
            PartitionOffsets {
                partition,
                batch_start,
                batch_end,
                stream_next,
                compared_end,
                adjusted,
                records_read: (stream_at.max(batch_end) - compared_end) as u64,
            }
        })
        .collect()
}

fn subtract(days: &mut BTreeMap<NaiveDate, Counts>, extra: &BTreeMap<NaiveDate, Counts>) {
    for (d, e) in extra {
        let day = days.entry(*d).or_default();
        for (v, x) in day.iter_mut().zip(e) {
            *v = v.saturating_sub(*x);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(start: &[(i32, i64)], end: &[(i32, i64)]) -> Run {
        let json = |m: &[(i32, i64)]| {
            Some(serde_json::Value::Object(
                m.iter()
                    .map(|(p, o)| (p.to_string(), serde_json::Value::from(*o)))
                    .collect(),
            ))
        };
        Run {
            id: 1,
            trigger: store::Trigger::Manual,
            from_time: None,
            to_time: None,
            state: store::RunState::Succeeded,
            start_offsets: json(start),
            end_offsets: json(end),
            records: None,
            events: None,
            rejected: None,
            bytes: None,
            requested_at: Utc::now(),
            started_at: None,
            finished_at: None,
            error: None,
            kind: Some(store::RunKind::Full),
            base_run_id: None,
            aggregation_version: Some(crate::aggregate::VERSION),
            covered_from: None,
        }
    }

    #[test]
    fn each_partition_compares_up_to_the_half_that_is_behind() {
        let run = run(&[(0, 0), (1, 0), (2, 5)], &[(0, 10), (1, 10), (2, 10)]);
        let positions = BTreeMap::from([(0, 14), (1, 7), (3, 2)]);
        let got: Vec<_> = align(&run, &positions)
            .iter()
            .map(|p| (p.partition, p.compared_end, p.adjusted, p.records_read))
            .collect();
        assert_eq!(
            got,
            vec![
                (0, 10, Adjusted::Stream, 4),
                (1, 7, Adjusted::Batch, 3),
                // Never committed by the stream: it counted nothing, the batch 5..10.
                (2, 5, Adjusted::Batch, 5),
                // Unknown to the run (added after it): the stream's 0..2 come out.
                (3, 0, Adjusted::Stream, 2),
            ]
        );
    }

    #[test]
    fn drift_sums_absolute_differences_per_measure() {
        let d = |s: &str| s.parse::<NaiveDate>().unwrap();
        let days = [
            AuditDay::new(d("2026-11-01"), [5, 1, 0, 2, 300], [5, 1, 0, 2, 300]),
            AuditDay::new(d("2026-11-02"), [7, 0, 0, 1, 100], [4, 0, 0, 2, 100]),
        ];
        let drift = Drift::of(&days);
        assert_eq!(
            (drift.views, drift.purchases, drift.revenue_cents),
            (3, 1, 0)
        );
        assert!(!drift.is_zero());
        assert_eq!(days[1].views.difference, 3);
        assert_eq!(days[1].purchases.difference, -1);
    }
}
