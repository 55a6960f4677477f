//! The product DAG (the article's DAG and event-buffering patterns), one
//! binary in five roles (`[products] role`):
//!
//! ```text
//!                          ┌─▶ image    ─┐ asset_processed / asset_failed
//!  POST /products ─▶ product_uploaded ─▶ video    ─┼──────────────────────────▶ creator ─▶ products
//!  (gateway; files        └─▶ metadata ─┘  (Kafka transactions)        (Postgres buffer,   + outbox:
//!   by claim check)          └────────────────────────────────────────▶ deadline sweeper) product_created
//!                                                                                         / product_failed
//! ```
//!
//! - `image`, `video`, `metadata`: the branches ([`branch`]), each its own
//!   consumer group, scalable to N instances (each with its own `instance`
//!   name: its Kafka transactional id);
//! - `creator`: the join ([`creator`]): buffers, decides, sweeps deadlines,
//!   relays its outbox;
//! - `api`: the products API on 8084 ([`api`]).

pub mod api;
pub mod branch;
pub mod creator;
pub mod image;
pub mod metadata;
pub mod store;
pub mod video;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use shared::claim_check::ClaimStore;
use shared::config::{Settings, WorkerConfig};
use shared::event::AssetKind;
use shared::http::Readiness;
use shared::kafka_batch::BatchProducer;
use shared::outbox::Relay;
use shared::shutdown::CancellationToken;
use shared::tasks::Tasks;
use shared::worker::{Health, Options, Setup};
use tokio::net::TcpListener;
use tokio::sync::Notify;

/// What this process does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Api,
    Image,
    Video,
    Metadata,
    Creator,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Api => "api",
            Role::Image => "image",
            Role::Video => "video",
            Role::Metadata => "metadata",
            Role::Creator => "creator",
        }
    }
}

/// The `[products]` configuration section.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProductsConfig {
    pub addr: SocketAddr,
    pub role: Role,
    /// Consumer group; empty: `products-<role>`.
    pub group: String,
    /// This instance's name in its group (distinct per instance; the Kafka
    /// transactional id of a branch is `<group>-<instance>`).
    pub instance: String,
    pub deadline_ms: u64,
    pub sweep_interval_ms: u64,
    pub relay_interval_ms: u64,
    pub max_image_pixels: u64,
    pub thumbnail_px: u32,
    /// Batches and the health check.
    #[serde(flatten)]
    pub worker: WorkerConfig,
}

/// A built process: bound, connected, not yet running.
pub struct Application {
    listener: TcpListener,
    router: axum::Router,
    work: Work,
    settings: Settings,
    shutdown: CancellationToken,
}

enum Work {
    Api,
    Branch(branch::Branch, Setup, Arc<Health>),
    Creator {
        creator: creator::Creator,
        setup: Setup,
        health: Arc<Health>,
        relay: Relay,
        sweep_every: Duration,
    },
}

impl Application {
    pub async fn build(
        settings: Settings,
        config: ProductsConfig,
        shutdown: CancellationToken,
    ) -> anyhow::Result<Self> {
        let pool = shared::db::connect(&settings.database).await?;
        let claims = ClaimStore::new(pool.clone());
        let topic = settings.kafka.events_topic.clone();
        let group = match config.group.trim() {
            "" => format!("products-{}", config.role.as_str()),
            group => group.to_owned(),
        };
        let health = Health::new(config.worker.stuck_after());
        let setup = Setup {
            kafka: settings.kafka.clone(),
            pool: pool.clone(),
            options: Options::new(&config.worker, group.clone(), &topic, &config.instance),
        };
        let mut readiness = Readiness::default().postgres(pool.clone());
        let mut routes = utoipa_axum::router::OpenApiRouter::new();
        let branch = |kind| branch::Branch {
            kind,
            claims: claims.clone(),
            topic: topic.clone(),
            image: image::ImageRules {
                max_pixels: config.max_image_pixels,
                thumbnail_px: config.thumbnail_px,
            },
        };
        let work = match config.role {
            Role::Api => {
                routes = api::router(api::ApiState {
                    pool: pool.clone(),
                    claims: claims.clone(),
                });
                Work::Api
            }
            Role::Image | Role::Video | Role::Metadata => {
                readiness = readiness
                    .kafka(&settings.kafka, topic.clone())?
                    .worker(health.clone());
                let kind = match config.role {
                    Role::Image => AssetKind::Image,
                    Role::Video => AssetKind::Video,
                    _ => AssetKind::Metadata,
                };
                Work::Branch(branch(kind), setup, health)
            }
            Role::Creator => {
                let producer = Arc::new(BatchProducer::new(&settings.kafka)?);
                readiness = readiness
                    .kafka(&settings.kafka, topic.clone())?
                    .worker(health.clone())
                    .producer(producer.clone());
                let wake = Arc::new(Notify::new());
                let relay = Relay {
                    pool: pool.clone(),
                    table: "products_outbox",
                    key_column: "product_id",
                    producer,
                    topic: topic.clone(),
                    wake: wake.clone(),
                    poll_interval: Duration::from_millis(config.relay_interval_ms),
                    pause_before_publish: Duration::ZERO,
                };
                Work::Creator {
                    creator: creator::Creator {
                        deadline: Duration::from_millis(config.deadline_ms),
                        wake,
                    },
                    setup,
                    health,
                    relay,
                    sweep_every: Duration::from_millis(config.sweep_interval_ms),
                }
            }
        };
        let router = shared::http::finish("products", routes, readiness, &settings.auth);
        let listener = shared::http::bind(config.addr).await?;
        tracing::info!(role = config.role.as_str(), group, addr = %config.addr, "products process built");
        Ok(Self {
            listener,
            router,
            work,
            settings,
            shutdown,
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.listener.local_addr().expect("bound")
    }

    /// Runs the role until shutdown.
    pub async fn run(self) -> anyhow::Result<()> {
        let mut tasks = Tasks::new(self.shutdown.clone());
        match self.work {
            Work::Api => {}
            Work::Branch(branch, setup, health) => {
                tasks.spawn(
                    "worker",
                    shared::worker::run(branch, setup, health, self.shutdown.clone()),
                );
            }
            Work::Creator {
                creator,
                setup,
                health,
                relay,
                sweep_every,
            } => {
                let (pool, wake) = (setup.pool.clone(), creator.wake.clone());
                tasks.spawn(
                    "worker",
                    shared::worker::run(creator, setup, health, self.shutdown.clone()),
                );
                tasks.spawn(
                    "deadlines",
                    creator::sweep(pool, sweep_every, wake, self.shutdown.clone()),
                );
                tasks.spawn("outbox-relay", relay.run(self.shutdown.clone()));
            }
        }
        tasks.spawn(
            "http",
            shared::http::serve(self.listener, self.router, self.shutdown.clone()),
        );
        tasks.run(self.settings.shutdown.grace()).await?;
        tracing::info!("products process stopped");
        Ok(())
    }
}
