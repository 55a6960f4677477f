//! Committing a batch as ranges, the same way in both modes: repeats of
//! event ids marked first (`dedupe`); the whole batch first; the events the
//! worker refuses are dead-lettered in the same commit (an outcome: nothing
//! is tried again for them); what fails for a moment is retried (state
//! reloaded first); what is refused for its data by an error whose event is
//! unknown (the database refusing the batch) is bisected until the one
//! event that causes it stands alone, and that event is dead-lettered
//! instead. Ranges keep per-partition order, so each commits on its own.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Range;
use std::time::Instant;

use anyhow::Context as _;
use chrono::Utc;
use sqlx::PgPool;

use super::batch::Batch;
use super::commit::{Backoff, Committed};
use super::dedupe::Dedupe;
use super::{Refusals, Worker};
use crate::consume::{Received, Rejection};
use crate::db::Failure;
use crate::dlq::{Sampler, SAMPLE_WINDOW};
use crate::shutdown::CancellationToken;

/// What one attempt at a range came to.
pub(super) enum Attempt {
    Committed,
    /// Another commit got there first (a zombie, or a lost acknowledgement).
    Fenced,
    /// The worker refused events, and a later copy of one of them in the
    /// range, skipped as a repeat, must be applied now: nothing was
    /// committed; the range is tried again at once (its refusals stand).
    Again,
    /// The data was refused; retrying cannot help.
    Refused(Rejection),
    /// It could not be done now; retry.
    Failed(anyhow::Error),
}

/// A mode's committer, seen range by range.
pub(super) trait Ranged<W: Worker>: Send {
    fn name(&self) -> &str;

    /// Tries to commit `range` of `batch` once.
    fn attempt(
        &mut self,
        worker: &mut W,
        batch: &mut Batch,
        range: Range<usize>,
    ) -> impl std::future::Future<Output = Attempt> + Send;

    /// The partitions whose state must be loaded again before applying.
    fn stale(&mut self) -> &mut Stale;

    /// The windows of recent event ids.
    fn dedupe(&mut self) -> &mut Dedupe;

    /// A failed attempt may have changed in-memory state: drop it, so that
    /// the next attempt starts from what is committed.
    fn forget(&mut self, worker: &mut W, batch: &Batch) {
        let stale = self.stale();
        for partition in batch.entry_partitions() {
            worker.unload(partition);
            stale.0.insert(partition);
        }
    }

    /// After a fenced attempt: where the batch's partitions restart.
    fn fenced(
        &mut self,
        worker: &mut W,
        batch: &Batch,
        shutdown: &CancellationToken,
    ) -> impl std::future::Future<Output = Committed> + Send;
}

/// Partitions whose in-memory state was dropped after a failed attempt.
#[derive(Debug, Default)]
pub(super) struct Stale(BTreeSet<i32>);

impl Stale {
    /// Loads every stale partition again (before the next attempt).
    pub async fn reload<W: Worker>(&mut self, worker: &mut W, pool: &PgPool) -> anyhow::Result<()> {
        for partition in self.0.clone() {
            worker
                .load(pool, partition)
                .await
                .with_context(|| format!("reloading partition {partition}"))?;
            self.0.remove(&partition);
        }
        Ok(())
    }

    /// `partition` was (re)loaded or left: nothing to reload.
    pub fn clear(&mut self, partition: i32) {
        self.0.remove(&partition);
    }
}

/// Commits every record of `batch`, range by range.
pub(super) async fn commit<W, C>(
    committer: &mut C,
    worker: &mut W,
    batch: &mut Batch,
    shutdown: &CancellationToken,
) -> Committed
where
    W: Worker,
    C: Ranged<W>,
{
    // Repeats are decided before anything applies, on the windows of
    // partitions that (re)started read first.
    let mut backoff = Backoff::new();
    while let Err(error) = committer.dedupe().read(shutdown).await {
        tracing::warn!(consumer = %committer.name(), error = format!("{error:#}"), "reading recent event ids failed; retrying");
        if !backoff.wait(shutdown).await {
            return Committed::Cancelled;
        }
    }
    committer.dedupe().mark(batch, 0);
    // Still to commit, in order (the next one last); a refused range is split.
    let whole = 0..batch.len();
    let mut ranges: Vec<Range<usize>> = Vec::new();
    ranges.push(whole);
    while let Some(range) = ranges.pop() {
        let mut backoff = Backoff::new();
        loop {
            match committer.attempt(worker, batch, range.clone()).await {
                Attempt::Committed => {
                    committer.dedupe().admit(batch, range.clone());
                    break;
                }
                Attempt::Again => committer.forget(worker, batch),
                Attempt::Fenced => {
                    let fenced = committer.fenced(worker, batch, shutdown).await;
                    if let Committed::Fenced(restarts) = &fenced {
                        for &(partition, next) in restarts {
                            committer.dedupe().restart(partition, next);
                        }
                    }
                    return fenced;
                }
                Attempt::Refused(rejection) => {
                    committer.forget(worker, batch);
                    match batch.bisect(range.clone()) {
                        Some((first, second)) => {
                            ranges.push(second);
                            ranges.push(first);
                        }
                        None => {
                            let event = batch.event_entries(range.clone()).into_values().next();
                            let name = committer.name().to_owned();
                            // Its repeats later in the batch are events now.
                            refuse(
                                &name,
                                committer.dedupe(),
                                batch,
                                range.start,
                                event.map(|i| (i, rejection)),
                            );
                            ranges.push(range);
                        }
                    }
                    break;
                }
                Attempt::Failed(error) => {
                    tracing::warn!(consumer = %committer.name(), error = format!("{error:#}"), "batch commit failed; retrying");
                    metrics::counter!("kappa_sink_commit_failures_total", "consumer" => committer.name().to_owned())
                        .increment(1);
                    committer.forget(worker, batch);
                    if !backoff.wait(shutdown).await {
                        return Committed::Cancelled;
                    }
                }
            }
        }
    }
    Committed::Done
}

/// Takes the worker's refusals of `range` into the batch (see [`refuse`]);
/// whether the range must be applied again: a repeat of a refused event in
/// it, skipped by this attempt, is an event now.
pub(super) fn take_refusals(
    name: &str,
    dedupe: &Dedupe,
    batch: &mut Batch,
    range: Range<usize>,
    refusals: Refusals,
) -> bool {
    if refusals.is_empty() {
        return false;
    }
    let refused = refused_entries(name, batch, range.clone(), refusals);
    refuse(name, dedupe, batch, range.start, refused).is_some_and(|i| i < range.end)
}

/// Marks `refused` (entry, why) dead letters, counted and logged by code,
/// and decides again from entry `from` on which events are repeats (a
/// later copy of a refused event is one no more). Returns the first entry
/// that was a repeat and is an event now.
fn refuse(
    name: &str,
    dedupe: &Dedupe,
    batch: &mut Batch,
    from: usize,
    refused: impl IntoIterator<Item = (usize, Rejection)>,
) -> Option<usize> {
    static SAMPLER: Sampler = Sampler::new(SAMPLE_WINDOW);
    let refused: BTreeMap<usize, Rejection> = refused.into_iter().collect();
    for rejection in refused.values() {
        SAMPLER.log(Instant::now(), rejection.code, |more| match more {
            None => tracing::warn!(consumer = name, code = rejection.code, reason = %rejection.reason, "event refused; dead-lettering it (a sample: the rest of the interval is counted)"),
            Some(counts) => tracing::warn!(consumer = name, ?counts, "more events refused in the last interval"),
        });
        metrics::counter!("kappa_sink_refused_total", "consumer" => name.to_owned(), "code" => rejection.code)
            .increment(1);
    }
    batch.refuse(refused);
    dedupe.mark(batch, from)
}

/// The worker's refusals of `range` as (entry, rejection): a refusal of an
/// event that is not one of the range's is a bug of the worker's, logged
/// and ignored (the event stays applied, as the worker's effects say).
fn refused_entries(
    name: &str,
    batch: &Batch,
    range: Range<usize>,
    refusals: Refusals,
) -> Vec<(usize, Rejection)> {
    let entries = batch.event_entries(range);
    refusals
        .into_inner()
        .into_iter()
        .filter_map(|(partition, offset, refused)| {
            let found = entries.get(&(partition, offset)).copied();
            if found.is_none() {
                tracing::error!(
                    consumer = name,
                    partition,
                    offset,
                    code = refused.code,
                    "the worker refused an event that is not in its batch; ignored"
                );
            }
            Some((
                found?,
                Rejection {
                    code: refused.code,
                    reason: refused.reason,
                },
            ))
        })
        .collect()
}

/// Whether an error is about the data (permanent) rather than the moment.
pub(super) fn refusal(error: &anyhow::Error) -> Option<Rejection> {
    for cause in error.chain() {
        if let Some(refused) = cause.downcast_ref::<super::Refused>() {
            return Some(Rejection {
                code: refused.code,
                reason: refused.reason.clone(),
            });
        }
        // Refused data costs its event (a dead letter); anything else (a bug
        // in a statement, a lock, the server going away) must not: retried,
        // and /readyz says so.
        if let Some(error) = cause.downcast_ref::<sqlx::Error>() {
            if let Failure::Refused { code, message } = Failure::of(error) {
                return Some(Rejection {
                    code: "refused",
                    reason: format!("the database refused it: {message} ({code})"),
                });
            }
        }
    }
    None
}

/// The batch metrics of a committed range.
pub(super) fn record(name: &str, batch: &Batch, range: Range<usize>, started: Instant) {
    let steps = batch.steps(range.clone());
    let applied: i64 = steps.values().map(|s| s.applied).sum();
    let dead: i64 = steps.values().map(|s| s.dead).sum();
    let repeats: i64 = steps.values().map(|s| s.repeats).sum();
    let skipped = batch.skipped_in(&range);
    let name = name.to_owned();
    metrics::counter!("kappa_sink_skipped_total", "consumer" => name.clone()).increment(skipped);
    metrics::counter!("kappa_sink_events_applied_total", "consumer" => name.clone())
        .increment(applied as u64);
    metrics::counter!("kappa_sink_dead_lettered_total", "consumer" => name.clone())
        .increment(dead as u64);
    metrics::counter!("kappa_sink_duplicates_skipped_total", "consumer" => name.clone())
        .increment(repeats as u64);
    metrics::histogram!("kappa_sink_batch_size", "consumer" => name.clone())
        .record((applied + dead + repeats) as f64);
    metrics::histogram!("kappa_sink_commit_seconds", "consumer" => name.clone())
        .record(started.elapsed().as_secs_f64());
    // From arrival (fetch), not from event time: a backfill of last year's
    // events is not a year late. How far behind in event time the worker
    // is has its own gauge.
    let visible =
        metrics::histogram!("kappa_sink_fetch_to_commit_seconds", "consumer" => name.clone());
    for fetched in batch.fetched_in(range.clone()) {
        visible.record(fetched.elapsed().as_secs_f64());
    }
    if let Some(newest) = batch.events_in(range).iter().filter_map(Received::ts).max() {
        let lag = (Utc::now() - newest).num_milliseconds() as f64 / 1e3;
        metrics::gauge!("kappa_sink_event_time_lag_seconds", "consumer" => name).set(lag);
    }
}
