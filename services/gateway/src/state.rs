//! What the HTTP handlers share.

use std::sync::Arc;

use shared::claim_check::ClaimStore;

use crate::dlq;
use crate::publish::Publisher;

/// What request handlers share.
#[derive(Clone)]
pub struct AppState {
    pub publisher: Arc<Publisher>,
    pub claims: ClaimStore,
    /// `POST /products`: the largest file accepted (413 beyond it).
    pub max_file_bytes: usize,
    pub max_events: usize,
    /// `GET /dlq`, `POST /dlq/redrive`.
    pub(crate) dlq: Arc<dlq::DeadLetterQueue>,
    /// Each ingest request is noted: what a burst freed goes back to the
    /// OS once the gateway is quiet.
    pub(crate) idle: Arc<shared::memory::IdleRelease>,
}
