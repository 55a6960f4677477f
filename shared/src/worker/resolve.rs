//! Claim-checked envelopes become full events before a worker sees them:
//! every payload of a batch is fetched in one query, checked against the
//! envelope's size and sha256 and parsed as the envelope's type. A payload
//! that is missing, does not match, or is not such an event is a dead
//! letter with its reason; no worker can forget to do this.

use std::collections::BTreeMap;

use crate::claim_check::{ClaimError, ClaimStore};

use super::batch::Batch;

/// Resolves the batch's claimed envelopes in place. Fails only when the
/// store cannot be read (transient: the caller retries).
pub(super) async fn claims(store: &ClaimStore, batch: &mut Batch) -> Result<(), ClaimError> {
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
