//! What a worker reads, decided record by record as records are polled: a
//! record of a type the worker does not read is skipped on its `type` alone
//! (`event::peek_type`, nothing else parsed); a record of a type it reads is
//! parsed and checked in full, and skipped when the worker does not want
//! that event. Skipped records never reach the applier one by one, and
//! their ids never enter the window of recent ids (live or rebuilt alike).

use rdkafka::message::{BorrowedMessage, Message};
use uuid::Uuid;

use super::Worker;
use crate::consume::{classify, Received, Rejection};
use crate::event::{peek_type, Envelope, Event, EventType};

/// A worker's [`Worker::READS`] and [`Worker::wants`], as a value the poll
/// thread and the window's reader can hold.
#[derive(Clone, Copy)]
pub(crate) struct Filter {
    reads: [bool; EventType::COUNT],
    wants: fn(&Event) -> bool,
}

impl Filter {
    pub fn of<W: Worker>() -> Self {
        let mut reads = [false; EventType::COUNT];
        for &t in W::READS {
            reads[t as usize] = true;
        }
        Self {
            reads,
            wants: W::wants,
        }
    }

    /// `None` when the record is not for the worker; else the event, or
    /// why it is rejected (bound for the DLQ).
    pub fn sort(&self, message: &BorrowedMessage<'_>) -> Option<Result<Received, Rejection>> {
        if let Some(t) = message.payload().and_then(peek_type) {
            if !self.reads[t as usize] {
                return None;
            }
        }
        let sorted = classify(message);
        if let Ok(received) = &sorted {
            if !self.wants(&received.envelope) {
                return None;
            }
        }
        Some(sorted)
    }

    /// Whether the worker reads this (valid) event.
    pub fn wants(&self, envelope: &Envelope) -> bool {
        self.reads[envelope.event_type() as usize]
            && match envelope {
                Envelope::Inline(event) => (self.wants)(event),
                Envelope::Claimed(_) => true,
            }
    }

    /// The id the window admits for this record: a wanted event's (a
    /// rejected record is a dead letter, never admitted).
    pub fn admitted_id(&self, message: &BorrowedMessage<'_>) -> Option<Uuid> {
        self.sort(message)?.ok()?.given_id()
    }
}
