//! The poll thread: polls, sorts, tags and forwards; nothing else. It is a
//! plain thread because librdkafka's poll (and the rebalance callbacks it
//! runs) block; it never enters the async runtime.

use std::collections::{BTreeMap, VecDeque};
use std::sync::mpsc::Receiver;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::consumer::Consumer as _;
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::Offset;
use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::mpsc::Sender;

use super::batch::{Polled, Record};
use super::filter::Filter;
use super::rebalance::Consumer;
use crate::consume::{Received, Rejection};
use crate::event::Envelope;
use crate::shutdown::CancellationToken;

/// A run of skipped records is handed on once it is this long, or
/// [`SKIP_FLUSH`] after it began, or when its partition's next record for
/// the worker comes: one message to the applier per run, not per record.
const SKIP_RUN: u64 = 4096;
const SKIP_FLUSH: Duration = Duration::from_millis(20);
const SKIP_CHECK_EVERY: u32 = 256;
/// Polls that found nothing (100 ms each) before this thread's heap is
/// collected, once a busy spell is over.
const COLLECT_AFTER_IDLE_POLLS: u32 = 20;

/// What the poll thread hands the applier.
// `CaughtUp` is rare: boxing records to shrink it would cost an allocation each.
#[allow(clippy::large_enum_variant)]
pub(crate) enum Fetched {
    Polled(Polled),
    /// A poll found nothing new after records were skipped: their offsets
    /// may commit now, the worker has read all there is.
    CaughtUp,
}

/// A request to move a partition's position back (after a fenced commit);
/// records of the partition polled before it are from the old epoch.
pub(crate) struct Seek {
    pub partition: i32,
    pub offset: Option<i64>,
    pub epoch: u64,
}

/// Runs until the applier drops its end of `records`.
pub(crate) fn run(
    consumer: Arc<Consumer>,
    records: Sender<Fetched>,
    seeks: Receiver<Seek>,
    filter: Filter,
    shutdown: CancellationToken,
) {
    let context = consumer.context();
    let topic = context.topic.clone();
    // Held back while the channel is full.
    let mut waiting: VecDeque<Fetched> = VecDeque::new();
    let mut skips = Skips::default();
    // Records were skipped since the last `CaughtUp`.
    let mut skipped = false;
    // Records were polled since this thread's heap was last collected, and
    // polls in a row that found nothing.
    let (mut busy, mut idle_polls) = (false, 0u32);
    loop {
        // A seek is a barrier: what was polled before it is of the old epoch.
        while let Ok(seek) = seeks.try_recv() {
            let to = seek.offset.map_or(Offset::Beginning, Offset::Offset);
            if let Err(error) = consumer.seek(&topic, seek.partition, to, Duration::from_secs(10)) {
                tracing::warn!(consumer = %context.name, partition = seek.partition, %error, "seek failed");
            }
            context.epochs.set(seek.partition, seek.epoch);
            waiting.retain(|f| !matches!(f, Fetched::Polled(p) if p.partition == seek.partition));
            skips.runs.remove(&seek.partition);
        }
        if records.is_closed() {
            break;
        }
        // Forward what is held back; the bound of the channel is the
        // backpressure (polling stops until the applier catches up).
        if let Some(polled) = waiting.pop_front() {
            match records.try_send(polled) {
                Ok(()) => continue,
                Err(TrySendError::Full(polled)) => {
                    waiting.push_front(polled);
                    std::thread::sleep(Duration::from_millis(2));
                    continue;
                }
                Err(TrySendError::Closed(_)) => break,
            }
        }
        match consumer.poll(Duration::from_millis(100)) {
            // Shutting down: stop forwarding; what is dropped here was never
            // committed, so the next owner reads it again.
            Some(Ok(_)) if shutdown.is_cancelled() => {}
            Some(Ok(message)) => {
                (busy, idle_polls) = (true, 0);
                let (partition, offset) = (message.partition(), message.offset());
                let epoch = context.epochs.of(partition);
                match filter.sort(&message) {
                    None => {
                        skipped = true;
                        if let Some(run) = skips.note(partition, offset, epoch) {
                            waiting.push_back(Fetched::Polled(run));
                        }
                    }
                    Some(sorted) => {
                        waiting.extend(skips.take(partition).map(Fetched::Polled));
                        waiting.push_back(Fetched::Polled(tag(&message, sorted, epoch)));
                    }
                }
            }
            Some(Err(error)) => tracing::warn!(consumer = %context.name, %error, "consumer error"),
            // Nothing new: what was skipped is handed on now, and may commit.
            None => {
                waiting.extend(skips.take_all().into_iter().map(Fetched::Polled));
                if std::mem::take(&mut skipped) {
                    waiting.push_back(Fetched::CaughtUp);
                }
                // The records this thread allocated are freed by the
                // applier once committed; that memory comes back here only
                // when this thread allocates again, or when it collects.
                idle_polls += 1;
                if busy && idle_polls >= COLLECT_AFTER_IDLE_POLLS {
                    busy = false;
                    crate::memory::collect_thread();
                }
            }
        }
        if skips.due() {
            waiting.extend(skips.take_all().into_iter().map(Fetched::Polled));
        }
    }
    // Leave the group now (the last revocation finds nothing in hand).
    consumer.unsubscribe();
    tracing::info!(consumer = %context.name, "poll thread stopped");
}

/// One record for the worker, tagged.
fn tag(message: &BorrowedMessage<'_>, sorted: Result<Received, Rejection>, epoch: u64) -> Polled {
    let mut id = None;
    let record = match sorted {
        Ok(received) => {
            id = received.given_id();
            match &received.envelope {
                Envelope::Claimed(_) => Record::Claimed(received, message.detach()),
                _ => Record::Event(received, message.detach()),
            }
        }
        Err(rejection) => Record::Rejected(message.detach(), rejection),
    };
    Polled {
        epoch,
        partition: message.partition(),
        offset: message.offset(),
        fetched: Instant::now(),
        id,
        record,
    }
}

/// Runs of skipped records, per partition, not handed on yet.
#[derive(Default)]
struct Skips {
    runs: BTreeMap<i32, Run>,
    /// When the oldest run began.
    since: Option<Instant>,
    /// Records polled since [`Skips::due`] last read the clock.
    unchecked: u32,
}

struct Run {
    epoch: u64,
    last: i64,
    count: u64,
    began: Instant,
}

impl Skips {
    /// Notes a skipped record; returns a run to hand on now (a full one,
    /// or one of an older epoch of the partition).
    fn note(&mut self, partition: i32, offset: i64, epoch: u64) -> Option<Polled> {
        let mut done = None;
        if self.runs.get(&partition).is_some_and(|r| r.epoch != epoch) {
            done = self.take(partition);
        }
        // (The clock is read once a run, not once a record.)
        let run = self.runs.entry(partition).or_insert_with(|| Run {
            epoch,
            last: offset,
            count: 0,
            began: Instant::now(),
        });
        run.last = offset;
        run.count += 1;
        let began = run.began;
        self.since.get_or_insert(began);
        if run.count >= SKIP_RUN {
            // (An older epoch's run was handed on at once: never both.)
            return self.take(partition);
        }
        done
    }

    /// Whether the oldest run has waited long enough (asked every
    /// [`SKIP_CHECK_EVERY`] records: the clock is not read per record).
    fn due(&mut self) -> bool {
        self.unchecked += 1;
        if self.unchecked < SKIP_CHECK_EVERY {
            return false;
        }
        self.unchecked = 0;
        self.since
            .is_some_and(|since| since.elapsed() >= SKIP_FLUSH)
    }

    /// The partition's run, as one polled item.
    fn take(&mut self, partition: i32) -> Option<Polled> {
        let run = self.runs.remove(&partition)?;
        if self.runs.is_empty() {
            self.since = None;
        }
        Some(Polled {
            epoch: run.epoch,
            partition,
            offset: run.last,
            fetched: run.began,
            id: None,
            record: Record::Skipped(run.count),
        })
    }

    fn take_all(&mut self) -> Vec<Polled> {
        let partitions: Vec<i32> = self.runs.keys().copied().collect();
        partitions
            .into_iter()
            .filter_map(|p| self.take(p))
            .collect()
    }
}
