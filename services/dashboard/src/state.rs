//! What the HTTP handlers (the API and the page) share.

use std::sync::Arc;

use sqlx::PgPool;
use tokio::sync::Notify;

use crate::{audit, dead_letters, runner, triggers};

/// What the HTTP handlers share.
#[derive(Clone)]
pub struct AppState {
    pub pool: PgPool,
    /// `POST /api/mapreduce/jobs` forwards to this coordinator.
    pub pagecount_url: String,
    pub http: reqwest::Client,
    pub registry: runner::Registry,
    pub wake: Arc<Notify>,
    pub triggers: triggers::SharedStatus,
    /// `auth.public_metrics`: whether the daily metrics need no token.
    pub public_metrics: bool,
    pub auditor: audit::Auditor,
    pub dead_letters: dead_letters::DeadLetters,
}
