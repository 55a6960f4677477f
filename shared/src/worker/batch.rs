//! A batch in hand: records in the order they were polled (per partition,
//! offset order), each an event for the worker, a repeat of an event id
//! (skipped), or a record bound for the DLQ. Ranges of a batch keep
//! per-partition order, so a prefix of a batch can commit on its own (what
//! bisecting a refused batch relies on).

use std::collections::BTreeMap;
use std::ops::Range;
use std::time::{Duration, Instant};

use rdkafka::message::OwnedMessage;
use uuid::Uuid;

use crate::consume::{Received, Rejection};

/// One polled record, tagged with its partition's epoch at poll time.
pub(crate) struct Polled {
    pub epoch: u64,
    pub partition: i32,
    pub offset: i64,
    /// When the poll thread fetched it: the record's arrival here, from
    /// which commit latency is measured (its timestamp is the event time).
    pub fetched: Instant,
    /// The id the producer gave the event (a claim-checked one's envelope
    /// says it), as read from the topic: what repeats are told by.
    pub id: Option<Uuid>,
    pub record: Record,
}

/// What a polled record is.
pub(crate) enum Record {
    Event(Received),
    /// A claim-checked envelope the worker wants: resolved before applying;
    /// the original message is kept for the DLQ.
    Claimed(Received, OwnedMessage),
    /// Bound for the DLQ.
    Rejected(OwnedMessage, Rejection),
}

/// Where an entry's record went.
pub(crate) enum Slot {
    /// Index into [`Batch::events`].
    Event(usize),
    /// A claim-checked envelope to resolve before the batch applies.
    Claimed {
        event: Box<Received>,
        message: OwnedMessage,
    },
    /// A dead letter, and whether the DLQ acknowledged it already.
    Dead {
        message: OwnedMessage,
        rejection: Rejection,
        sent: bool,
    },
    /// An event the database refused: dead-lettered by origin.
    Refused {
        event: usize,
        rejection: Rejection,
        sent: bool,
    },
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
    /// The events, in entry order: a range of entries holds a contiguous run.
    pub(crate) events: Vec<Received>,
    pub(crate) opened: Option<Instant>,
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
        let slot = match record {
            Record::Event(event) => {
                self.events.push(event);
                Slot::Event(self.events.len() - 1)
            }
            Record::Claimed(event, message) => Slot::Claimed {
                event: Box::new(event),
                message,
            },
            Record::Rejected(message, rejection) => Slot::Dead {
                message,
                rejection,
                sent: false,
            },
        };
        self.entries.push(Entry {
            partition,
            offset,
            fetched,
            id,
            slot,
        });
        self.opened.get_or_insert_with(Instant::now);
    }

    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// When the batch must close because of its age.
    pub(crate) fn deadline(&self, max_age: Duration) -> Option<Instant> {
        self.opened.map(|opened| opened + max_age)
    }

    /// The partitions with records in the batch.
    pub(crate) fn partitions(&self) -> Vec<i32> {
        let mut partitions: Vec<i32> = self.entries.iter().map(|e| e.partition).collect();
        partitions.sort_unstable();
        partitions.dedup();
        partitions
    }

    /// When each record of `range` was fetched.
    pub(crate) fn fetched_in(&self, range: Range<usize>) -> impl Iterator<Item = Instant> + '_ {
        self.entries[range].iter().map(|e| e.fetched)
    }

    /// The events of `range` that the worker applies: refused ones left out
    /// (a refused event is always alone in its range).
    pub(crate) fn events_in(&self, range: Range<usize>) -> &[Received] {
        let indexes: Vec<usize> = self.entries[range]
            .iter()
            .filter_map(|e| match e.slot {
                Slot::Event(i) => Some(i),
                _ => None,
            })
            .collect();
        match (indexes.first(), indexes.last()) {
            (Some(&first), Some(&last)) => &self.events[first..=last],
            _ => &[],
        }
    }

    /// Per partition of `range`: where it ends and what it counts.
    pub(crate) fn steps(&self, range: Range<usize>) -> BTreeMap<i32, Step> {
        let mut steps: BTreeMap<i32, Step> = BTreeMap::new();
        for entry in &self.entries[range] {
            let step = steps.entry(entry.partition).or_insert(Step {
                next: entry.offset + 1,
                applied: 0,
                dead: 0,
                repeats: 0,
            });
            step.next = step.next.max(entry.offset + 1);
            match entry.slot {
                Slot::Event(_) | Slot::Claimed { .. } => step.applied += 1,
                Slot::Dead { .. } | Slot::Refused { .. } => step.dead += 1,
                Slot::Repeat(_) => step.repeats += 1,
            }
        }
        steps
    }

    /// Splits `range` in two, each with at least one event, or `None` when
    /// it holds fewer than two events.
    pub(crate) fn bisect(&self, range: Range<usize>) -> Option<(Range<usize>, Range<usize>)> {
        let events: Vec<usize> = range
            .clone()
            .filter(|&i| matches!(self.entries[i].slot, Slot::Event(_)))
            .collect();
        if events.len() < 2 {
            return None;
        }
        let cut = events[events.len() / 2];
        Some((range.start..cut, cut..range.end))
    }

    /// Marks the only event of `range` as refused by the database.
    pub(crate) fn refuse(&mut self, range: Range<usize>, rejection: Rejection) {
        for entry in &mut self.entries[range] {
            if let Slot::Event(event) = entry.slot {
                entry.slot = Slot::Refused {
                    event,
                    rejection,
                    sent: false,
                };
                return;
            }
        }
    }

    /// The claim-checked envelopes waiting to be resolved: (entry, event).
    pub(crate) fn claimed(&self) -> Vec<(usize, &Received)> {
        self.entries
            .iter()
            .enumerate()
            .filter_map(|(i, e)| match &e.slot {
                Slot::Claimed { event, .. } => Some((i, &**event)),
                _ => None,
            })
            .collect()
    }

    /// Replaces every claimed entry by its resolved event or a dead letter,
    /// keeping the batch's order (and the events' contiguity).
    pub(crate) fn settle(&mut self, mut resolved: BTreeMap<usize, Result<Received, Rejection>>) {
        let mut old_events = std::mem::take(&mut self.events)
            .into_iter()
            .map(Some)
            .collect::<Vec<_>>();
        for (i, entry) in self.entries.iter_mut().enumerate() {
            let slot = std::mem::replace(&mut entry.slot, Slot::Event(usize::MAX));
            entry.slot = match slot {
                Slot::Event(index) => {
                    let event = old_events[index].take().expect("each event once");
                    self.events.push(event);
                    Slot::Event(self.events.len() - 1)
                }
                Slot::Claimed { event, message } => match resolved.remove(&i) {
                    Some(Ok(event)) => {
                        self.events.push(event);
                        Slot::Event(self.events.len() - 1)
                    }
                    Some(Err(rejection)) => Slot::Dead {
                        message,
                        rejection,
                        sent: false,
                    },
                    // Not resolved (not wanted): passed on as the envelope.
                    None => {
                        self.events.push(*event);
                        Slot::Event(self.events.len() - 1)
                    }
                },
                other => other,
            };
        }
    }

    /// Decides again, for each event from entry `from` on, whether it is a
    /// repeat (`repeat` says, given its partition, offset and id; events
    /// without an id never are); entries before `from` keep what they are.
    /// Every entry keeps its place, and the events their contiguity.
    pub(crate) fn sift(&mut self, from: usize, mut repeat: impl FnMut(i32, i64, Uuid) -> bool) {
        let mut old_events = std::mem::take(&mut self.events)
            .into_iter()
            .map(Some)
            .collect::<Vec<_>>();
        let events = &mut self.events;
        let mut keep = |event: Received| {
            events.push(event);
            events.len() - 1
        };
        for (i, entry) in self.entries.iter_mut().enumerate() {
            let slot = std::mem::replace(&mut entry.slot, Slot::Event(usize::MAX));
            let event = match slot {
                Slot::Event(index) => old_events[index].take().expect("each event once"),
                Slot::Repeat(event) if i < from => {
                    entry.slot = Slot::Repeat(event);
                    continue;
                }
                Slot::Repeat(event) => *event,
                Slot::Refused {
                    event,
                    rejection,
                    sent,
                } => {
                    let event = old_events[event].take().expect("each event once");
                    entry.slot = Slot::Refused {
                        event: keep(event),
                        rejection,
                        sent,
                    };
                    continue;
                }
                other => {
                    entry.slot = other;
                    continue;
                }
            };
            let repeated = i >= from
                && entry
                    .id
                    .is_some_and(|id| repeat(entry.partition, entry.offset, id));
            entry.slot = if repeated {
                Slot::Repeat(Box::new(event))
            } else {
                Slot::Event(keep(event))
            };
        }
    }

    /// Drops everything (after a commit, or when fenced).
    pub(crate) fn clear(&mut self) {
        self.entries.clear();
        self.events.clear();
        self.opened = None;
    }
}
