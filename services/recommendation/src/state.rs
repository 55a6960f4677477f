//! What the HTTP handlers share.

use std::sync::Arc;

use sqlx::PgPool;

use crate::query;

/// What the HTTP handlers share.
#[derive(Clone)]
pub struct AppState {
    pub pool: PgPool,
    pub consumer: String,
    pub topic: String,
    pub half_life_secs: f64,
    /// The popular fill-in of the last committed position answered.
    pub popular: Arc<query::PopularCache>,
}
