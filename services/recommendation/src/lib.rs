//! The streaming half of the Kappa architecture: consumes `events`
//! continuously and keeps item-to-item recommendations current, exactly once
//! per interaction, with state partitioned like the topic (see `model` and
//! `shared::worker`).

pub mod codec;
pub mod model;
pub mod query;
mod recommender;
mod routes;
mod state;
pub mod store;

use std::net::SocketAddr;
use std::sync::Arc;

use serde::Deserialize;
use shared::config::{Settings, WorkerConfig};
use shared::http::Readiness;
use shared::shutdown::CancellationToken;
use shared::tasks::Tasks;
use shared::worker::{Health, Options, Setup};
use sqlx::PgPool;
use tokio::net::TcpListener;

pub use recommender::Recommender;
pub use state::AppState;

/// The `[recommendation]` configuration section.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecommendationConfig {
    pub addr: SocketAddr,
    /// Consumer group, and the consumer's name in `consumer_offsets`.
    pub group: String,
    /// Batches and the health check.
    #[serde(flatten)]
    pub worker: WorkerConfig,
    /// Half-life of interaction weights, in days.
    pub half_life_days: f64,
    /// Connections the answers read through (a pool of their own).
    pub read_connections: u32,
}

impl RecommendationConfig {
    pub fn half_life_secs(&self) -> f64 {
        self.half_life_days * 86_400.0
    }
}

/// A built service: bound, connected, not yet running.
pub struct Application {
    listener: TcpListener,
    router: axum::Router,
    settings: Settings,
    config: RecommendationConfig,
    pool: PgPool,
    health: Arc<Health>,
    shutdown: CancellationToken,
}

impl Application {
    pub async fn build(
        settings: Settings,
        config: RecommendationConfig,
        shutdown: CancellationToken,
    ) -> anyhow::Result<Self> {
        let pool = shared::db::connect(&settings.database).await?;
        // Answers read through a few connections of their own: many
        // concurrent requests queue here for one of them, rather than run
        // as as many PostgreSQL backends contending for the same cores
        // (which spreads every answer's latency), and the worker's commits
        // never wait behind a burst of reads for a pooled connection.
        let readers = shared::db::readers(&settings.database, config.read_connections).await?;
        shared::catalogue::zero("kappa_recommendation_event_time_clamped_total", &[]);
        shared::catalogue::zero("kappa_recommendation_answers_in_snapshot_total", &[]);
        for table in ["rec_users", "rec_cooc", "rec_popularity"] {
            shared::catalogue::zero(
                "kappa_recommendation_bad_entries_total",
                &[("table", table.to_owned())],
            );
        }
        let state = AppState {
            pool: readers,
            consumer: config.group.clone(),
            topic: settings.kafka.events_topic.clone(),
            half_life_secs: config.half_life_secs(),
            popular: Arc::default(),
        };
        let health = Health::new(config.worker.stuck_after());
        let readiness = Readiness::default()
            .postgres(pool.clone())
            .kafka(&settings.kafka, settings.kafka.events_topic.clone())?
            .worker(health.clone());
        let router = shared::http::finish(
            "recommendation",
            routes::router(state, settings.auth.public_metrics),
            readiness,
            &settings.auth,
        );
        let listener = shared::http::bind(config.addr).await?;
        Ok(Self {
            listener,
            router,
            settings,
            config,
            pool,
            health,
            shutdown,
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.listener.local_addr().expect("bound")
    }

    /// Consumes and serves until shutdown; if either stops, so does the other.
    pub async fn run(self) -> anyhow::Result<()> {
        let setup = Setup {
            kafka: self.settings.kafka.clone(),
            pool: self.pool.clone(),
            options: Options::new(
                &self.config.worker,
                &self.config.group,
                &self.settings.kafka.events_topic,
                &self.config.group,
            ),
        };
        tracing::info!(addr = %self.addr(), "recommendation listening");
        let mut tasks = Tasks::new(self.shutdown.clone());
        let recommender = Recommender::new(self.config.half_life_secs());
        tasks.spawn(
            "worker",
            shared::worker::run(recommender, setup, self.health, self.shutdown.clone()),
        );
        tasks.spawn(
            "http",
            shared::http::serve(self.listener, self.router, self.shutdown.clone()),
        );
        tasks.run(self.settings.shutdown.grace()).await?;
        tracing::info!("recommendation stopped");
        Ok(())
    }
}
