//! The poll thread: polls, parses, tags and forwards; nothing else. It is a
//! plain thread because librdkafka's poll (and the rebalance callbacks it
//! runs) block; it never enters the async runtime.

use std::collections::VecDeque;
use std::sync::mpsc::Receiver;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::consumer::Consumer as _;
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::Offset;
use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::mpsc::Sender;

use super::batch::{Polled, Record};
use super::rebalance::Consumer;
use crate::consume::classify;
use crate::event::{Envelope, EventType};
use crate::shutdown::CancellationToken;

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
    records: Sender<Polled>,
    seeks: Receiver<Seek>,
    wanted: [bool; EventType::COUNT],
    shutdown: CancellationToken,
) {
    let context = consumer.context();
    let topic = context.topic.clone();
    // Held back while the channel is full.
    let mut waiting: VecDeque<Polled> = VecDeque::new();
    loop {
        // A seek is a barrier: what was polled before it is of the old epoch.
        while let Ok(seek) = seeks.try_recv() {
            let to = seek.offset.map_or(Offset::Beginning, Offset::Offset);
            if let Err(error) = consumer.seek(&topic, seek.partition, to, Duration::from_secs(10)) {
                tracing::warn!(consumer = %context.name, partition = seek.partition, %error, "seek failed");
            }
            context.epochs.set(seek.partition, seek.epoch);
            waiting.retain(|p| p.partition != seek.partition);
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
            Some(Ok(message)) => waiting.push_back(tag(
                &message,
                context.epochs.of(message.partition()),
                &wanted,
            )),
            Some(Err(error)) => tracing::warn!(consumer = %context.name, %error, "consumer error"),
            None => {}
        }
    }
    // Leave the group now (the last revocation finds nothing in hand).
    consumer.unsubscribe();
    tracing::info!(consumer = %context.name, "poll thread stopped");
}

/// One message, parsed and tagged.
fn tag(message: &BorrowedMessage<'_>, epoch: u64, wanted: &[bool; EventType::COUNT]) -> Polled {
    let mut id = None;
    let record = match classify(message) {
        Ok(received) => {
            id = received.envelope.id();
            match &received.envelope {
                Envelope::Claimed(c) if wanted[c.event_type as usize] => {
                    Record::Claimed(received, message.detach())
                }
                _ => Record::Event(received),
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
