//! Claim-checked envelopes become full events before a worker sees them:
//! every payload of a batch is fetched in one query, checked against the
//! envelope's size and sha256 and parsed as the envelope's type. A payload
//! that is missing, does not match, or is not such an event is a dead
//! letter with its reason; no worker can forget to do this.

use std::collections::BTreeMap;

use crate::claim_check::{ClaimError, ClaimStore};
use crate::shutdown::CancellationToken;

use super::batch::Batch;
use super::commit::Backoff;

/// Resolves the batch's claimed envelopes, retrying (with backoff) while
/// the store cannot be read: a payload is only ever judged missing by a
/// store that answered. False if shut down first.
pub(super) async fn claims_or_wait(
    store: &ClaimStore,
    batch: &mut Batch,
    consumer: &str,
    shutdown: &CancellationToken,
) -> bool {
    let mut backoff = Backoff::new();
    while let Err(error) = claims(store, batch).await {
        tracing::warn!(consumer, %error, "resolving claim checks failed; retrying");
        metrics::counter!("kappa_sink_claim_check_failures_total", "consumer" => consumer.to_owned())
            .increment(1);
        if !backoff.wait(shutdown).await {
            return false;
        }
    }
    true
}

/// Resolves the batch's claimed envelopes in place. Fails only when the
/// store cannot be read (transient: the caller retries).
async fn claims(store: &ClaimStore, batch: &mut Batch) -> Result<(), ClaimError> {
    let (entries, claimed): (Vec<usize>, Vec<_>) = batch
        .claimed()
        .into_iter()
        .map(|(i, r)| (i, r.clone()))
        .unzip();
    if claimed.is_empty() {
        return Ok(());
    }
    let resolved = store.resolve_received(claimed).await?;
    batch.settle(
        entries
            .into_iter()
            .zip(resolved)
            .collect::<BTreeMap<_, _>>(),
    );
    Ok(())
}
