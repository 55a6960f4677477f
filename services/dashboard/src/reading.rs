//! Reading a range of the topic into an aggregation, the way a replay does:
//! several readers, each over its own partitions, then one merge. Runs
//! ([`crate::runner`]) and the Kappa audit ([`crate::audit`]) both read
//! through here, so both always count alike.

use std::sync::Arc;

use shared::claim_check::ClaimStore;
use shared::config::KafkaConfig;
use shared::consume::Received;
use shared::event::{Envelope, EventBody, EventType};
use shared::replay::{self, Progress, Windows};
use shared::shutdown::CancellationToken;
use sqlx::PgPool;

use crate::aggregate::Aggregate;

/// Reads `plan` and aggregates it the way a replay does: several readers,
/// each over its own partitions, then one merge; claim-checked interactions
/// count with their resolved bodies. The Kappa audit reads the records
/// between the two halves' positions through here too, so both always
/// count alike.
pub(crate) async fn read_plan(
    kafka: &KafkaConfig,
    pool: &PgPool,
    plan: &replay::Plan,
    mut known: Windows,
    readers: usize,
    progress: &Arc<Progress>,
    shutdown: &CancellationToken,
) -> anyhow::Result<Part> {
    // Each reader on a thread of its own that ends with it: what its
    // allocator heap held goes back with the thread (a pooled blocking
    // thread would keep it while idle).
    let mut results = Vec::new();
    for part in plan.split(readers.max(1)) {
        let (kafka, progress, shutdown) = (kafka.clone(), progress.clone(), shutdown.clone());
        let known = known.take(part.spans.keys().copied());
        let (done, result) = tokio::sync::oneshot::channel();
        std::thread::Builder::new()
            .name("replay-reader".into())
            .spawn(move || {
                let _ = done.send(read_part(&kafka, &part, known, &progress, &shutdown));
            })?;
        results.push(result);
    }
    let mut whole = Part::default();
    for result in results {
        let part = result
            .await
            .map_err(|_| anyhow::anyhow!("a replay reader panicked"))??;
        whole.aggregate.merge(part.aggregate);
        whole.events += part.events;
        whole.rejected += part.rejected;
        whole.claimed.extend(part.claimed);
        whole.windows.merge(part.windows);
    }
    // Claim-checked interactions count with their full bodies; one whose
    // payload is missing or does not match is a rejected record.
    let claimed = std::mem::take(&mut whole.claimed);
    for resolved in ClaimStore::new(pool.clone())
        .resolve_received(claimed)
        .await?
    {
        match resolved {
            Ok(received) => whole.add(&received),
            Err(_) => {
                whole.events -= 1;
                whole.rejected += 1;
            }
        }
    }
    Ok(whole)
}

/// What one reader took from its part of a plan.
#[derive(Default)]
pub(crate) struct Part {
    pub aggregate: Aggregate,
    pub events: u64,
    pub rejected: u64,
    /// Repeat detection where the plan ends.
    pub windows: Windows,
    /// Claim-checked interactions, resolved after reading (rare; their
    /// payloads come from the claim-check store, not the topic).
    claimed: Vec<Received>,
}

impl Part {
    fn add(&mut self, received: &Received) {
        // The streaming half dates events the same way (the audit compares them).
        if let (Envelope::Inline(event), Some(ts)) = (&received.envelope, received.counted_at()) {
            if let EventBody::Interaction(interaction) = &event.body {
                self.aggregate.add(ts.date_naive(), interaction);
            }
        }
    }
}

/// Reads one part of a plan into an aggregation.
fn read_part(
    kafka: &KafkaConfig,
    plan: &replay::Plan,
    known: Windows,
    progress: &Progress,
    shutdown: &CancellationToken,
) -> anyhow::Result<Part> {
    let mut part = Part::default();
    part.windows = replay::run_from(
        kafka,
        plan,
        known,
        progress,
        shutdown,
        |record| match record {
            Ok(received) => {
                part.events += 1;
                match &received.envelope {
                    Envelope::Claimed(c) if c.event_type == EventType::Interaction => {
                        part.claimed.push(received)
                    }
                    _ => part.add(&received),
                }
            }
            Err(_) => part.rejected += 1,
        },
    )?;
    Ok(part)
}
