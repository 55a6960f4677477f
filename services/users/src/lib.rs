//! The users service: users over HTTP (the source of truth for addresses),
//! and every change published as a `user_updated` event through a
//! transactional outbox (see `shared::outbox`). The stateless mail worker asks it for
//! addresses; the stateful one builds its own store from the events.

mod routes;
mod state;
pub mod store;

pub use state::AppState;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use shared::config::Settings;
use shared::http::Readiness;
use shared::kafka_batch::BatchProducer;
use shared::outbox::Relay;
use shared::shutdown::CancellationToken;
use shared::tasks::Tasks;
use tokio::net::TcpListener;
use tokio::sync::Notify;

/// The `[users]` configuration section.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UsersConfig {
    pub addr: SocketAddr,
    /// Run the outbox relay in this process (any number of instances may).
    pub relay: bool,
    /// How often the relay looks for rows other instances wrote.
    pub relay_interval_ms: u64,
}

/// A built service: bound, connected, not yet running.
pub struct Application {
    listener: TcpListener,
    router: axum::Router,
    relay: Option<Relay>,
    grace: Duration,
    shutdown: CancellationToken,
}

impl Application {
    pub async fn build(
        settings: Settings,
        config: UsersConfig,
        shutdown: CancellationToken,
    ) -> anyhow::Result<Self> {
        let pool = shared::db::connect(&settings.database).await?;
        let wake = Arc::new(Notify::new());
        let producer = Arc::new(BatchProducer::new(&settings.kafka)?);
        let relay = match config.relay {
            true => Some(Relay {
                table: "users_outbox",
                key_column: "user_id",
                pool: pool.clone(),
                producer: producer.clone(),
                topic: settings.kafka.events_topic.clone(),
                wake: wake.clone(),
                poll_interval: Duration::from_millis(config.relay_interval_ms.max(10)),
                pause_before_publish: Duration::ZERO,
            }),
            false => None,
        };
        let readiness = Readiness::default()
            .postgres(pool.clone())
            .kafka(&settings.kafka, settings.kafka.events_topic.clone())?
            .producer(producer);
        let router = shared::http::finish(
            "users",
            routes::router(AppState { pool, wake }),
            readiness,
            &settings.auth,
        );
        let listener = shared::http::bind(config.addr).await?;
        Ok(Self {
            listener,
            router,
            relay,
            grace: settings.shutdown.grace(),
            shutdown,
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.listener.local_addr().expect("bound")
    }

    /// Serves and relays until shutdown.
    pub async fn run(self) -> anyhow::Result<()> {
        tracing::info!(addr = %self.addr(), relay = self.relay.is_some(), "users listening");
        let mut tasks = Tasks::new(self.shutdown.clone());
        if let Some(relay) = self.relay {
            tasks.spawn("outbox-relay", relay.run(self.shutdown.clone()));
        }
        tasks.spawn(
            "http",
            shared::http::serve(self.listener, self.router, self.shutdown.clone()),
        );
        tasks.run(self.grace).await?;
        tracing::info!("users stopped");
        Ok(())
    }
}
