//! A batch in hand: records in the order they were polled (per partition,
//! offset order), each an event for the worker, a repeat of an event id
//! (skipped), or a record bound for the DLQ; and, per partition, how far the
//! records that are not the worker's reach. Ranges of a batch keep
//! per-partition order, so a prefix of a batch can commit on its own (what
//! bisecting a batch the database refused relies on).

use std::collections::BTreeMap;
use std::ops::Range;
use std::time::{Duration, Instant};

use rdkafka::message::OwnedMessage;
use uuid::Uuid;

use crate::consume::{Received, Rejection};

/// One polled record (or run of skipped records), tagged with its
/// partition's epoch at poll time.
pub(crate) struct Polled {
    pub epoch: u64,
    pub partition: i32,
    /// The record's offset; a skipped run's last one.
    pub offset: i64,
    /// When the poll thread fetched it: the record's arrival here, from
    /// which commit latency is measured (its timestamp is the event time).
    pub fetched: Instant,
    /// The id the producer gave the event (a claim-checked one's envelope
    /// says it), as read from the topic: what repeats are told by.
    pub id: Option<Uuid>,
    pub record: Record,
}

/// What a polled record is. Each record for the worker comes with the
/// record as read: its dead letter copies it byte for byte.
pub(crate) enum Record {
    Event(Received, OwnedMessage),
    /// A claim-checked envelope the worker wants: resolved before applying.
    Claimed(Received, OwnedMessage),
    /// Bound for the DLQ.
    Rejected(OwnedMessage, Rejection),
    /// This many records that are not the worker's, up to the offset.
    Skipped(u64),
}

/// Where an entry's record went.
pub(crate) enum Slot {
    /// An event for the worker: the next of [`Batch::events`] (events are
    /// kept in entry order, one per `Event` slot).
    Event,
    /// A claim-checked envelope to resolve before the batch applies.
    Claimed(Box<Received>),
    /// A dead letter (a rejection, an unresolvable claim check, an event
    /// the worker or the database refused), and whether the DLQ
    /// acknowledged it already.
    Dead { rejection: Rejection, sent: bool },
    /// An event whose id was applied within the window: acknowledged, not
    /// applied. Kept, since a refusal of the earlier copy makes it an event
    /// again.
    Repeat(Box<Received>),
}

/// One record's place in the batch.
pub(crate) struct Entry {
    pub partition: i32,
    pub offset: i64,
    pub fetched: Instant,
    pub id: Option<Uuid>,
    /// The record as read.
    pub message: OwnedMessage,
    pub slot: Slot,
}

/// Per partition of a range: the offset after its last record, events
/// applied, records dead-lettered, repeats skipped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Step {
    pub next: i64,
    pub applied: i64,
    pub dead: i64,
    pub repeats: i64,
}

/// The records in hand (the runtime's own; public only as the committers'
/// parameter).
#[doc(hidden)]
#[derive(Default)]
pub struct Batch {
    pub(crate) entries: Vec<Entry>,
    /// The events of the `Event` slots, in entry order.
    pub(crate) events: Vec<Received>,
    /// When the first entry came: the batch closes `max_batch_ms` later.
    pub(crate) opened: Option<Instant>,
    /// Per partition, the offset after the last record that was not the
    /// worker's, when no entry of the partition came after it. Such records
    /// have no entry: their offsets move with the batch's last range (once
    /// every entry before them committed).
    skipped: BTreeMap<i32, i64>,
    skipped_count: u64,
    /// When the first of them came, while the batch has no entry: its
    /// offsets are committed within the skip interval even if none comes.
    skipped_since: Option<Instant>,
}

impl Batch {
    pub(crate) fn push(&mut self, polled: Polled) {
        let Polled {
            partition,
            offset,
            fetched,
            id,
            record,
            ..
        } = polled;
        if !matches!(record, Record::Skipped(_)) {
            // Its entry carries the partition past what was skipped before it.
            self.skipped.remove(&partition);
        }
        let (slot, message) = match record {
            Record::Skipped(count) => {
                self.skipped.insert(partition, offset + 1);
                self.skipped_count += count;
                self.skipped_since.get_or_insert(fetched);
                return;
            }
            Record::Event(event, message) => {
                self.events.push(event);
                (Slot::Event, message)
            }
            Record::Claimed(event, message) => (Slot::Claimed(Box::new(event)), message),
            Record::Rejected(message, rejection) => (
                Slot::Dead {
                    rejection,
                    sent: false,
                },
                message,
            ),
        };
        self.entries.push(Entry {
            partition,
            offset,
            fetched,
            id,
            message,
            slot,
        });
        self.opened.get_or_insert_with(Instant::now);
    }

    /// Records in hand for the worker (skipped ones are not counted).
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    /// Nothing to commit: no entry, no skipped offset.
    pub(crate) fn holds_nothing(&self) -> bool {
        self.entries.is_empty() && self.skipped.is_empty()
    }

    /// When the batch must close: `max_age` after its first entry, or, with
    /// only skipped records, `skip_age` after the first of them.
    pub(crate) fn deadline(&self, max_age: Duration, skip_age: Duration) -> Option<Instant> {
        match (self.opened, self.skipped_since) {
            (Some(opened), _) => Some(opened + max_age),
            (None, Some(since)) => Some(since + skip_age),
            (None, None) => None,
        }
    }

    /// Every partition the batch moves (its entries' and its skipped ones').
    pub(crate) fn partitions(&self) -> Vec<i32> {
        let mut partitions = self.entry_partitions();
        partitions.extend(self.skipped.keys());
        partitions.sort_unstable();
        partitions.dedup();
        partitions
    }

    /// The partitions with entries: those whose state applying may touch.
    pub(crate) fn entry_partitions(&self) -> Vec<i32> {
        let mut partitions: Vec<i32> = self.entries.iter().map(|e| e.partition).collect();
        partitions.sort_unstable();
        partitions.dedup();
        partitions
    }

    /// When each record of `range` was fetched.
    pub(crate) fn fetched_in(&self, range: Range<usize>) -> impl Iterator<Item = Instant> + '_ {
        self.entries[range].iter().map(|e| e.fetched)
    }

    /// The events of `range` that the worker applies.
    pub(crate) fn events_in(&self, range: Range<usize>) -> &[Received] {
        let before = self.events_before(range.start);
        let within = self.entries[range]
            .iter()
            .filter(|e| matches!(e.slot, Slot::Event))
            .count();
        &self.events[before..before + within]
    }

    /// How many `Event` slots come before entry `index`.
    fn events_before(&self, index: usize) -> usize {
        self.entries[..index]
            .iter()
            .filter(|e| matches!(e.slot, Slot::Event))
            .count()
    }

    /// Whether `range` is the batch's last: the one the skipped offsets
    /// move with.
    fn is_last(&self, range: &Range<usize>) -> bool {
        range.end == self.entries.len()
    }

    /// Per partition of `range`: where it ends and what it counts (the
    /// last range also takes the skipped records' offsets).
    pub(crate) fn steps(&self, range: Range<usize>) -> BTreeMap<i32, Step> {
        let mut steps: BTreeMap<i32, Step> = BTreeMap::new();
        let empty = |next| Step {
            next,
            applied: 0,
            dead: 0,
            repeats: 0,
        };
        if self.is_last(&range) {
            for (&partition, &next) in &self.skipped {
                steps.insert(partition, empty(next));
            }
        }
        for entry in &self.entries[range] {
            let step = steps
                .entry(entry.partition)
                .or_insert_with(|| empty(entry.offset + 1));
            step.next = step.next.max(entry.offset + 1);
            match entry.slot {
                Slot::Event | Slot::Claimed(_) => step.applied += 1,
                Slot::Dead { .. } => step.dead += 1,
                Slot::Repeat(_) => step.repeats += 1,
            }
        }
        steps
    }

    /// Records of `range` skipped as not the worker's.
    pub(crate) fn skipped_in(&self, range: &Range<usize>) -> u64 {
        if self.is_last(range) {
            self.skipped_count
        } else {
            0
        }
    }

    /// Splits `range` in two, each with at least one event, or `None` when
    /// it holds fewer than two events.
    pub(crate) fn bisect(&self, range: Range<usize>) -> Option<(Range<usize>, Range<usize>)> {
        let events: Vec<usize> = range
            .clone()
            .filter(|&i| matches!(self.entries[i].slot, Slot::Event))
            .collect();
        if events.len() < 2 {
            return None;
        }
        let cut = events[events.len() / 2];
        Some((range.start..cut, cut..range.end))
    }

    /// Marks the events at `refused` (entry index, rejection) dead letters.
    pub(crate) fn refuse(&mut self, mut refused: BTreeMap<usize, Rejection>) {
        self.reslot(|i, _, slot, event| match (slot, refused.remove(&i)) {
            (Slot::Event, Some(rejection)) => (
                Slot::Dead {
                    rejection,
                    sent: false,
                },
                None,
            ),
            (slot, _) => (slot, event),
        });
    }

    /// The entry index of each event of `range`, by (partition, offset).
    pub(crate) fn event_entries(&self, range: Range<usize>) -> BTreeMap<(i32, i64), usize> {
        range
            .filter(|&i| matches!(self.entries[i].slot, Slot::Event))
            .map(|i| ((self.entries[i].partition, self.entries[i].offset), i))
            .collect()
    }

    /// The claim-checked envelopes waiting to be resolved: (entry, event).
    pub(crate) fn claimed(&self) -> Vec<(usize, &Received)> {
        self.entries
            .iter()
            .enumerate()
            .filter_map(|(i, e)| match &e.slot {
                Slot::Claimed(event) => Some((i, &**event)),
                _ => None,
            })
            .collect()
    }

    /// Replaces every claimed entry by its resolved event or a dead letter.
    pub(crate) fn settle(&mut self, mut resolved: BTreeMap<usize, Result<Received, Rejection>>) {
        self.reslot(|i, _, slot, event| match slot {
            Slot::Claimed(envelope) => match resolved.remove(&i) {
                Some(Ok(event)) => (Slot::Event, Some(event)),
                Some(Err(rejection)) => (
                    Slot::Dead {
                        rejection,
                        sent: false,
                    },
                    None,
                ),
                // Not resolved: handed over as the envelope.
                None => (Slot::Event, Some(*envelope)),
            },
            slot => (slot, event),
        });
    }

    /// Decides again, for each event from entry `from` on, whether it is a
    /// repeat (`repeat` says, given its partition, offset and id; events
    /// without an id never are); entries before `from` keep what they are.
    /// Returns the first entry that was a repeat and is an event now.
    pub(crate) fn sift(
        &mut self,
        from: usize,
        mut repeat: impl FnMut(i32, i64, Uuid) -> bool,
    ) -> Option<usize> {
        let mut revived = None;
        self.reslot(|i, entry, slot, event| {
            let (was_repeat, event) = match slot {
                Slot::Event => (false, event.expect("an event slot has its event")),
                Slot::Repeat(event) if i >= from => (true, *event),
                slot => return (slot, event),
            };
            let repeated = i >= from
                && entry
                    .id
                    .is_some_and(|id| repeat(entry.partition, entry.offset, id));
            if repeated {
                (Slot::Repeat(Box::new(event)), None)
            } else {
                if was_repeat {
                    revived.get_or_insert(i);
                }
                (Slot::Event, Some(event))
            }
        });
        revived
    }

    /// Gives every entry its slot again, as `decide` says from its index,
    /// the entry, its slot and (for an `Event` slot) its event; the events
    /// are rebuilt in entry order, one per `Event` slot.
    fn reslot(
        &mut self,
        mut decide: impl FnMut(usize, &Entry, Slot, Option<Received>) -> (Slot, Option<Received>),
    ) {
        let mut old = std::mem::take(&mut self.events).into_iter();
        for (i, entry) in self.entries.iter_mut().enumerate() {
            let slot = std::mem::replace(&mut entry.slot, Slot::Event);
            let event = match slot {
                Slot::Event => Some(old.next().expect("an event per event slot")),
                _ => None,
            };
            let (slot, event) = decide(i, entry, slot, event);
            debug_assert_eq!(matches!(slot, Slot::Event), event.is_some());
            self.events.extend(event);
            entry.slot = slot;
        }
    }

    /// Drops everything (after a commit, or when fenced).
    pub(crate) fn clear(&mut self) {
        self.entries.clear();
        self.events.clear();
        self.opened = None;
        self.skipped.clear();
        self.skipped_count = 0;
        self.skipped_since = None;
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::event::parse;

    /// A record for partition 0 at `offset` (an event for the worker).
    pub(crate) fn polled(offset: i64, event_id: Option<u128>) -> Polled {
        let payload = format!(
            r#"{{"type":"interaction","user_id":"u1","product_id":"p{offset}","action":"view"}}"#
        );
        let envelope = parse(payload.as_bytes()).unwrap();
        let message = OwnedMessage::new(
            Some(payload.into_bytes()),
            Some(b"u1".to_vec()),
            "t".into(),
            rdkafka::Timestamp::NotAvailable,
            0,
            offset,
            None,
        );
        Polled {
            epoch: 1,
            partition: 0,
            offset,
            fetched: Instant::now(),
            id: event_id.map(Uuid::from_u128),
            record: Record::Event(
                Received {
                    envelope,
                    topic: "t".into(),
                    partition: 0,
                    offset,
                    timestamp: None,
                    copy_of: None,
                },
                message,
            ),
        }
    }

    fn skipped(partition: i32, through: i64, count: u64) -> Polled {
        Polled {
            epoch: 1,
            partition,
            offset: through,
            fetched: Instant::now(),
            id: None,
            record: Record::Skipped(count),
        }
    }

    fn offsets(events: &[Received]) -> Vec<i64> {
        events.iter().map(|e| e.offset).collect()
    }

    #[test]
    fn skipped_records_move_with_the_last_range_only() {
        let mut batch = Batch::default();
        batch.push(polled(3, None));
        batch.push(skipped(0, 9, 6));
        batch.push(skipped(4, 120, 100));
        batch.push(polled(10, None));
        assert_eq!(batch.len(), 2, "skipped records are not entries");
        assert_eq!(batch.partitions(), vec![0, 4]);
        assert_eq!(batch.entry_partitions(), vec![0]);
        // The first range ends before the skipped run: it moves to 4 only.
        assert_eq!(batch.steps(0..1)[&0].next, 4);
        assert!(!batch.steps(0..1).contains_key(&4));
        assert_eq!(batch.skipped_in(&(0..1)), 0);
        let last = batch.steps(1..2);
        assert_eq!((last[&0].next, last[&4].next), (11, 121));
        assert_eq!(last[&4].applied + last[&4].dead + last[&4].repeats, 0);
        assert_eq!(batch.skipped_in(&(1..2)), 106);
        assert_eq!(batch.steps(0..2)[&0].applied, 2);
    }

    #[test]
    fn a_batch_of_skipped_records_only_closes_after_the_skip_age() {
        let mut batch = Batch::default();
        assert!(batch.holds_nothing());
        batch.push(skipped(2, 50, 51));
        assert!(!batch.holds_nothing() && batch.entries.is_empty());
        let since = batch.skipped_since.unwrap();
        let (age, skip_age) = (Duration::from_millis(5), Duration::from_secs(1));
        assert_eq!(batch.deadline(age, skip_age), Some(since + skip_age));
        assert_eq!(batch.steps(0..0)[&2].next, 51);
        batch.push(polled(7, None));
        assert_eq!(
            batch.deadline(age, skip_age),
            Some(batch.opened.unwrap() + age),
            "an entry closes it at its own age"
        );
        batch.clear();
        assert!(batch.holds_nothing() && batch.deadline(age, skip_age).is_none());
    }

    #[test]
    fn refused_events_leave_the_events_and_count_as_dead() {
        let mut batch = Batch::default();
        for offset in 0..5 {
            batch.push(polled(offset, None));
        }
        let found = batch.event_entries(0..5);
        let rejection = |r: &str| Rejection {
            code: "unknown_user",
            reason: r.into(),
        };
        batch.refuse(BTreeMap::from([
            (found[&(0, 1)], rejection("one")),
            (found[&(0, 3)], rejection("three")),
        ]));
        assert_eq!(offsets(batch.events_in(0..5)), vec![0, 2, 4]);
        assert_eq!(offsets(batch.events_in(2..5)), vec![2, 4]);
        let step = batch.steps(0..5)[&0];
        assert_eq!((step.next, step.applied, step.dead), (5, 3, 2));
        assert!(matches!(
            &batch.entries[3].slot,
            Slot::Dead { rejection, sent: false } if rejection.reason == "three"
        ));
        assert!(batch.bisect(3..4).is_none(), "no event left in it");
    }
}
