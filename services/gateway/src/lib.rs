//! Ingest: HTTP in, the `events` topic out. Validates every event with the
//! shared parser, gives each an id, moves large ones to the claim-check store,
//! and answers only when Kafka acknowledged them (`acks=all`, idempotent).

mod dlq;
mod publish;
mod routes;
mod state;

pub use state::AppState;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::DefaultBodyLimit;
use shared::claim_check::sweep::Sweeper;
use shared::claim_check::ClaimStore;
use shared::config::{HttpConfig, Settings};
use shared::event::ParseError;
use shared::http::Readiness;
use shared::kafka_batch::BatchProducer;
use shared::shutdown::CancellationToken;
use shared::tasks::Tasks;
use tokio::net::TcpListener;

pub use publish::{Ack, Incoming, PublishError, Publisher};

/// How long the gateway is quiet after ingest before it returns what the
/// requests freed (request bodies, producer buffers) to the OS.
const RELEASE_WHEN_QUIET: Duration = Duration::from_secs(2);

/// A built gateway, bound to its port, not yet serving.
pub struct Application {
    listener: TcpListener,
    router: axum::Router,
    state: AppState,
    settings: Settings,
    shutdown: CancellationToken,
}

impl Application {
    /// Connects to Postgres (migrating) and Kafka, binds `http.addr` (port 0
    /// picks a free one) and assembles the routes.
    pub async fn build(
        settings: Settings,
        http: HttpConfig,
        shutdown: CancellationToken,
    ) -> anyhow::Result<Self> {
        let pool = shared::db::connect(&settings.database).await?;
        let producer = Arc::new(BatchProducer::new(&settings.kafka)?);
        for reason in ParseError::CODES.into_iter().chain(["too_large"]) {
            shared::catalogue::zero(
                "kappa_gateway_events_rejected_total",
                &[("reason", reason.to_owned())],
            );
        }
        shared::catalogue::zero("kappa_gateway_events_failed_total", &[]);
        let claims = ClaimStore::new(pool.clone());
        let dlq = dlq::DeadLetterQueue::new(&settings);
        let publisher = Publisher::new(producer.clone(), claims.clone(), &settings);
        let state = AppState {
            publisher: Arc::new(publisher),
            claims,
            max_file_bytes: http.max_upload_file_bytes,
            max_events: http.max_events_per_request,
            dlq: Arc::new(dlq),
            idle: Arc::default(),
        };
        let readiness = Readiness::default()
            .postgres(pool)
            .kafka(&settings.kafka, settings.kafka.events_topic.clone())?
            .producer(producer.clone());
        let routes =
            routes::router(state.clone()).layer(DefaultBodyLimit::max(http.body_limit_bytes));
        let router = shared::http::finish("gateway", routes, readiness, &settings.auth);
        let listener = shared::http::bind(http.addr).await?;
        Ok(Self {
            listener,
            router,
            state,
            settings,
            shutdown,
        })
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("a bound listener has an address")
    }

    /// Serves until shutdown, sweeping uncommitted claim-check payloads meanwhile.
    pub async fn run(self) -> anyhow::Result<()> {
        let cc = &self.settings.claim_check;
        tracing::info!(addr = %self.addr(), topic = %self.settings.kafka.events_topic, "gateway listening");
        let mut tasks = Tasks::new(self.shutdown.clone());
        let sweeper = Sweeper {
            store: self.state.claims.clone(),
            kafka: self.settings.kafka.clone(),
            topic: self.settings.kafka.events_topic.clone(),
            grace: Duration::from_secs(cc.grace_secs),
        };
        tasks.spawn(
            "claim-sweeper",
            sweeper.run(
                Duration::from_secs(cc.sweep_interval_secs),
                self.shutdown.clone(),
            ),
        );
        tasks.spawn(
            "memory-release",
            self.state
                .idle
                .clone()
                .run(RELEASE_WHEN_QUIET, self.shutdown.clone()),
        );
        tasks.spawn(
            "http",
            shared::http::serve(self.listener, self.router, self.shutdown.clone()),
        );
        let stopped = tasks.run(self.settings.shutdown.grace()).await;
        self.state.publisher.flush(Duration::from_secs(10));
        tracing::info!("gateway stopped");
        stopped
    }
}
