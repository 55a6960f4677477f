//! Event ids are idempotent. The same id can reach a partition twice, at two
//! offsets: a client retrying what the gateway answered 503 for (a message
//! that timed out may still have been written), an outbox relay killed
//! between publishing and marking, a redrive of an event that did apply.
//! Each is applied once.
//!
//! The rule: a record whose event id this consumer *admitted* (applied, or
//! skipped as a repeat) at one of the `kafka.dedupe_window` offsets before it
//! in its partition is a repeat: acknowledged (its offset commits), not
//! applied, counted in `kappa_sink_duplicates_skipped_total`. Events without
//! an id get one derived from where they were first written: never a repeat
//! where they were written, but a redrive's copy carries that place
//! (`redrive.origin.*`), so every copy of one record is the same event
//! ([`crate::consume::Received::given_id`]).
//!
//! The window is a function of the topic, which keeps it consistent with the
//! committed offsets in both modes without storing a single id: when a
//! partition is assigned, or restarts at its stored position after a fenced
//! commit, its window is rebuilt from the window's records before that
//! position (a short-lived reader, before the partition's next batch). What
//! the topic cannot tell is which of those records this consumer
//! dead-lettered (a claim check missing, an event the database or the worker
//! refused): their ids stay out of the window, so the same event sent again
//! once the cause is fixed (a redrive) is applied. Their offsets go to
//! `dead_lettered_offsets` with the commit (Postgres mode: in its
//! transaction; Kafka mode: just before the Kafka transaction, so a row may
//! outlive a transaction that aborted; it can only keep an id out of a
//! window, i.e. let a repeat through as before, never skip an event), and
//! are pruned once outside the window.
//!
//! Within a batch, the windows and the batch's earlier events decide; a
//! window takes a range's ids once the range committed, and an event
//! refused later in the batch has the decisions after it taken again.
//! Memory: at most `dedupe_window` ids per owned partition (under 100 bytes
//! each).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::ops::Range;
use std::time::Instant;

use sqlx::{PgConnection, PgPool};

use rdkafka::message::Message;

use super::batch::{Batch, Slot};
use super::filter::Filter;
use super::Setup;
use crate::config::KafkaConfig;
use crate::shutdown::CancellationToken;
use crate::window::Window;

/// A committer's windows, one per owned partition.
pub(super) struct Dedupe {
    size: u64,
    kafka: KafkaConfig,
    pool: PgPool,
    consumer: String,
    topic: String,
    /// What the worker reads: only its events' ids enter a window.
    filter: Filter,
    windows: BTreeMap<i32, Window>,
    /// Partitions (re)started whose window is still to be read: where each
    /// starts (`None`: at its beginning).
    unread: BTreeMap<i32, Option<i64>>,
}

impl Dedupe {
    pub fn new(setup: &Setup, filter: Filter) -> Self {
        Self {
            filter,
            size: setup.kafka.dedupe_window,
            kafka: setup.kafka.clone(),
            pool: setup.pool.clone(),
            consumer: setup.options.group.clone(),
            topic: setup.options.topic.clone(),
            windows: BTreeMap::new(),
            unread: BTreeMap::new(),
        }
    }

    /// `partition` (re)starts at `next`: its window is read again before
    /// its next batch.
    pub fn restart(&mut self, partition: i32, next: Option<i64>) {
        self.windows.remove(&partition);
        if self.size > 0 {
            self.unread.insert(partition, next);
        }
    }

    /// `partition` left this instance.
    pub fn forget(&mut self, partition: i32) {
        self.windows.remove(&partition);
        self.unread.remove(&partition);
    }

    /// Reads the windows of the partitions that (re)started, all with one
    /// reader: the ids of the records before where each starts, but those
    /// this consumer dead-lettered.
    pub async fn read(&mut self, shutdown: &CancellationToken) -> anyhow::Result<()> {
        if self.unread.is_empty() {
            return Ok(());
        }
        let partitions: Vec<i32> = self.unread.keys().copied().collect();
        let rows: Vec<(i32, i64)> = sqlx::query_as(
            "SELECT partition, \"offset\" FROM dead_lettered_offsets
             WHERE consumer = $1 AND topic = $2 AND partition = ANY($3)",
        )
        .bind(&self.consumer)
        .bind(&self.topic)
        .bind(&partitions)
        .fetch_all(&self.pool)
        .await?;
        let dead: HashSet<(i32, i64)> = rows.into_iter().collect();
        let starts: BTreeMap<i32, i64> = self
            .unread
            .iter()
            .map(|(&p, &next)| (p, next.unwrap_or(0)))
            .collect();
        let (kafka, topic, size, shutdown, filter) = (
            self.kafka.clone(),
            self.topic.clone(),
            self.size,
            shutdown.clone(),
            self.filter,
        );
        let started = Instant::now();
        let windows = tokio::task::spawn_blocking(move || {
            crate::replay::windows_before(&kafka, &topic, &starts, size, &shutdown, |message| {
                let origin = (message.partition(), message.offset());
                filter
                    .admitted_id(message)
                    .filter(|_| !dead.contains(&origin))
            })
        })
        .await??;
        tracing::info!(
            consumer = %self.consumer,
            ?partitions,
            ids = windows.values().map(Window::ids).sum::<usize>(),
            ms = started.elapsed().as_millis() as u64,
            "read the recent event ids of (re)started partitions"
        );
        self.windows.extend(windows);
        self.unread.clear();
        Ok(())
    }

    /// Marks the repeats of `batch` from entry `from` on (the entries
    /// before it are committed, and in the windows): an event whose id its
    /// partition's window holds, or an earlier one of these entries within
    /// the window's reach.
    /// Returns the first entry that was a repeat and is an event now.
    pub fn mark(&self, batch: &mut Batch, from: usize) -> Option<usize> {
        if self.size == 0 {
            return None;
        }
        let mut in_batch: HashMap<i32, Window> = HashMap::new();
        batch.sift(from, |partition, offset, id| {
            let earlier = in_batch
                .entry(partition)
                .or_insert_with(|| Window::new(self.size))
                .repeat(id, offset);
            earlier
                || self
                    .windows
                    .get(&partition)
                    .is_some_and(|window| window.seen(&id, offset))
        })
    }

    /// The committed `range` enters the windows: its events and repeats,
    /// not its dead letters.
    pub fn admit(&mut self, batch: &Batch, range: Range<usize>) {
        for entry in &batch.entries[range] {
            let (Some(id), Slot::Event | Slot::Repeat(_)) = (entry.id, &entry.slot) else {
                continue;
            };
            if let Some(window) = self.windows.get_mut(&entry.partition) {
                window.admit(id, entry.offset);
            }
        }
    }

    /// Whether `range` dead-lettered a record that carries an id.
    pub fn has_dead(&self, batch: &Batch, range: Range<usize>) -> bool {
        !self.dead(batch, range).is_empty()
    }

    /// Records, with the commit of `range`, the offsets of its dead letters
    /// that carry an id (only those could be in a window), and forgets the
    /// ones no window reaches any more. No statement when there are none.
    pub async fn record_dead(
        &self,
        conn: &mut PgConnection,
        batch: &Batch,
        range: Range<usize>,
    ) -> sqlx::Result<()> {
        let (partitions, offsets): (Vec<i32>, Vec<i64>) =
            self.dead(batch, range.clone()).into_iter().unzip();
        if partitions.is_empty() {
            return Ok(());
        }
        sqlx::query(
            "INSERT INTO dead_lettered_offsets (consumer, topic, partition, \"offset\")
             SELECT $1, $2, p, o FROM UNNEST($3::int[], $4::bigint[]) AS d(p, o)
             ON CONFLICT DO NOTHING",
        )
        .bind(&self.consumer)
        .bind(&self.topic)
        .bind(&partitions)
        .bind(&offsets)
        .execute(&mut *conn)
        .await?;
        let size = i64::try_from(self.size).unwrap_or(i64::MAX);
        let (pruned, floors): (Vec<i32>, Vec<i64>) = batch
            .steps(range)
            .into_iter()
            .filter(|(p, _)| partitions.contains(p))
            .map(|(p, step)| (p, step.next.saturating_sub(size)))
            .unzip();
        sqlx::query(
            "DELETE FROM dead_lettered_offsets d
             USING UNNEST($3::int[], $4::bigint[]) AS f(p, floor)
             WHERE d.consumer = $1 AND d.topic = $2 AND d.partition = f.p AND d.\"offset\" < f.floor",
        )
        .bind(&self.consumer)
        .bind(&self.topic)
        .bind(&pruned)
        .bind(&floors)
        .execute(&mut *conn)
        .await?;
        Ok(())
    }

    /// (partition, offset) of `range`'s dead letters that carry an id.
    fn dead(&self, batch: &Batch, range: Range<usize>) -> Vec<(i32, i64)> {
        if self.size == 0 {
            return Vec::new();
        }
        batch.entries[range]
            .iter()
            .filter(|e| e.id.is_some())
            .filter(|e| matches!(e.slot, Slot::Dead { .. }))
            .map(|e| (e.partition, e.offset))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::consume::Rejection;
    use crate::worker::batch::tests::polled;

    fn offsets(batch: &Batch) -> Vec<i64> {
        batch.events.iter().map(|e| e.offset).collect()
    }

    #[test]
    fn repeats_leave_the_events_and_return_when_the_first_copy_is_refused() {
        let mut batch = Batch::default();
        for (offset, event_id) in [(0, Some(7)), (1, None), (2, Some(7)), (3, Some(8))] {
            batch.push(polled(offset, event_id));
        }
        let mut asked = Vec::new();
        batch.sift(0, |_, offset, _| {
            asked.push(offset);
            offset >= 2
        });
        assert_eq!(asked, vec![0, 2, 3], "events without an id never repeat");
        assert_eq!(offsets(&batch), vec![0, 1], "offsets 2 and 3 repeat");
        assert_eq!(batch.steps(0..4)[&0].repeats, 2);
        assert_eq!(batch.events_in(1..4).len(), 1);

        // The first copy refused: the decisions after it are taken again
        // (the second copy is an event now), the refused one keeps its event.
        let rejection = Rejection {
            code: "refused",
            reason: "test".into(),
        };
        batch.refuse(BTreeMap::from([(0, rejection)]));
        assert_eq!(
            batch.sift(1, |_, offset, _| offset == 3),
            Some(2),
            "the copy at offset 2 is revived"
        );
        assert_eq!(offsets(&batch), vec![1, 2]);
        assert!(matches!(batch.entries[0].slot, Slot::Dead { .. }));
        assert!(matches!(batch.entries[3].slot, Slot::Repeat(_)));
        assert_eq!(batch.events_in(1..4).len(), 2);
    }
}
