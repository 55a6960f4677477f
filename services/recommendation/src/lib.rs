//! The streaming half of the Kappa architecture: consumes `events`
//! continuously and keeps item-to-item recommendations current, exactly once
//! per interaction, with state partitioned like the topic (see `model` and
//! `shared::sink`).

pub mod model;
pub mod query;
mod routes;
pub mod store;
mod worker;

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use serde::Deserialize;
use shared::config::Settings;
use shared::dlq::DeadLetters;
use shared::http::Readiness;
use shared::shutdown::CancellationToken;
use shared::sink::SinkOptions;
use sqlx::PgPool;
use tokio::net::TcpListener;

pub use worker::Recommender;

/// The `[recommendation]` configuration section.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecommendationConfig {
    pub addr: SocketAddr,
    /// Consumer group, and the consumer's name in `consumer_offsets`.
    pub group: String,
    /// A batch closes at this many events...
    pub max_batch_events: usize,
    /// ...or this many milliseconds after its first event.
    pub max_batch_ms: u64,
    /// Half-life of interaction weights, in days.
    pub half_life_days: f64,
}

impl RecommendationConfig {
    pub fn half_life_secs(&self) -> f64 {
        self.half_life_days * 86_400.0
    }
}

/// What the HTTP handlers share.
#[derive(Clone)]
pub struct AppState {
    pub pool: PgPool,
    pub consumer: String,
    pub topic: String,
    pub half_life_secs: f64,
}

/// A built service: bound, connected, not yet running.
pub struct Application {
    listener: TcpListener,
    router: axum::Router,
    settings: Settings,
    config: RecommendationConfig,
    pool: PgPool,
    shutdown: CancellationToken,
}

impl Application {
    pub async fn build(
        settings: Settings,
        config: RecommendationConfig,
        shutdown: CancellationToken,
    ) -> anyhow::Result<Self> {
        let pool = shared::db::connect(&settings.database).await?;
        let state = AppState {
            pool: pool.clone(),
            consumer: config.group.clone(),
            topic: settings.kafka.events_topic.clone(),
            half_life_secs: config.half_life_secs(),
        };
        let readiness = Readiness::default()
            .postgres(pool.clone())
            .kafka(&settings.kafka, settings.kafka.events_topic.clone())?;
        let routes = routes::router(state, settings.auth.admin_token.clone());
        let router = shared::http::finish("recommendation", routes, readiness);
        let listener = TcpListener::bind(config.addr)
            .await
            .with_context(|| format!("binding {}", config.addr))?;
        Ok(Self {
            listener,
            router,
            settings,
            config,
            pool,
            shutdown,
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.listener.local_addr().expect("bound")
    }

    /// Consumes and serves until shutdown; if the consumer dies, so does the service.
    pub async fn run(self) -> anyhow::Result<()> {
        let options = SinkOptions {
            name: self.config.group.clone(),
            topic: self.settings.kafka.events_topic.clone(),
            max_batch_events: self.config.max_batch_events,
            max_batch_ms: self.config.max_batch_ms,
        };
        let producer = shared::kafka::producer(&self.settings.kafka)?;
        let dead_letters = DeadLetters::new(producer, &self.settings.kafka.dlq_topic);
        let sink = Recommender::new(self.config.half_life_secs());
        let (kafka, pool, handle, stop) = (
            self.settings.kafka.clone(),
            self.pool.clone(),
            tokio::runtime::Handle::current(),
            self.shutdown.clone(),
        );
        let mut consumer = tokio::task::spawn_blocking(move || {
            shared::sink::run(options, &kafka, pool, dead_letters, sink, handle, stop)
        });
        tracing::info!(addr = %self.addr(), "recommendation listening");
        let serve = shared::http::serve(self.listener, self.router, self.shutdown.clone());
        tokio::pin!(serve);
        let result = tokio::select! {
            served = &mut serve => {
                served?;
                // The HTTP side stopped on shutdown: let the consumer finish its batch.
                tokio::time::timeout(Duration::from_secs(30), &mut consumer).await.context("consumer did not stop")??
            }
            consumed = &mut consumer => {
                self.shutdown.cancel();
                let _ = serve.await;
                consumed?
            }
        };
        result.context("the consumer stopped")?;
        tracing::info!("recommendation stopped");
        Ok(())
    }
}
