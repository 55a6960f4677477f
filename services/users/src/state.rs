//! What the HTTP handlers share.

use std::sync::Arc;

use sqlx::PgPool;
use tokio::sync::Notify;

/// What the HTTP handlers share.
#[derive(Clone)]
pub struct AppState {
    pub pool: PgPool,
    /// Wakes this process's relay after a write.
    pub wake: Arc<Notify>,
}
