//! What every kappa-jobs service needs, written once: layered configuration,
//! telemetry, shutdown, the event envelope and its parser, Kafka clients and
//! the dead-letter queue, the claim-check store, the Postgres pool with
//! migrations, and the HTTP scaffolding (health, readiness, metrics, auth,
//! JSON errors).

pub mod catalogue;
pub mod claim_check;
pub mod config;
pub mod consume;
pub mod db;
pub mod dlq;
pub mod event;
pub mod http;
pub mod kafka;
pub mod kafka_batch;
pub mod memory;
pub mod outbox;
pub mod replay;
pub mod service;
pub mod shutdown;
pub mod tasks;
pub mod telemetry;
#[cfg(feature = "testkit")]
pub mod testkit;
pub mod text;
pub(crate) mod window;
pub mod worker;

pub use config::Settings;
pub use event::{Envelope, Event, EventBody, ParseError};
