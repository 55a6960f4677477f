//! MapReduce page counts over web-server logs (the article's example), one
//! binary in three roles (`[pagecount] role`):
//!
//! ```text
//!  access-logs ──(chunks: offset ranges)──▶ map ×N ──page_count keyed by page──▶ shuffle topic ──▶ reduce ×M ──▶ Postgres
//!       ▲            coordinator: POST /jobs        (Kafka transaction per chunk:   (hash partition =  (sums + markers +
//!       │            snapshots offsets, publishes    counts, DLQ lines, markers,     one reducer        offsets in one
//!  kcat / shippers   one map_task per chunk          task offset)                    per page)          transaction)
//! ```
//!
//! - `coordinator`: the jobs API on 8085 ([`api`]) and the outbox relay that
//!   publishes each job's map tasks;
//! - `map`: the mappers ([`map`]), one group on the tasks topic;
//! - `reduce`: the reducers ([`reduce`]), one group on the shuffle topic;
//! - `pagecount local FILE`: the single-process count ([`local`]).

pub mod api;
pub mod clf;
pub mod local;
pub mod map;
pub mod reduce;
pub mod store;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use shared::config::{Settings, WorkerConfig};
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
    Coordinator,
    Map,
    Reduce,
}

/// The `[pagecount]` configuration section.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PagecountConfig {
    pub addr: SocketAddr,
    pub role: Role,
    /// Consumer groups are `<group_prefix>-map` and `<group_prefix>-reduce`.
    pub group_prefix: String,
    /// This instance's name in its group (a mapper's transactional id is `<group>-<instance>`).
    pub instance: String,
    pub tasks_topic: String,
    pub shuffle_topic: String,
    /// Partitions of the tasks and shuffle topics when they are created.
    pub topic_partitions: i32,
    pub chunk_lines: u32,
    pub keep_jobs: i64,
    /// Batches and the health check.
    #[serde(flatten)]
    pub worker: WorkerConfig,
    /// How often the coordinator's outbox relay looks for unsent map tasks
    /// written by other coordinators (its own writes wake it).
    pub relay_interval_ms: u64,
    /// Tests only: the relay holds the locked tasks this long before
    /// publishing them (the window between a job's commit and its publish).
    #[serde(default)]
    pub test_pause_before_publish_ms: u64,
}

pub struct Application {
    listener: TcpListener,
    router: axum::Router,
    work: Work,
    settings: Settings,
    shutdown: CancellationToken,
}

enum Work {
    Coordinator(Relay),
    Map(map::Mapper, Setup, Arc<Health>),
    Reduce(Setup, Arc<Health>),
}

impl Application {
    pub async fn build(
        settings: Settings,
        config: PagecountConfig,
        shutdown: CancellationToken,
    ) -> anyhow::Result<Self> {
        let pool = shared::db::connect(&settings.database).await?;
        let kafka = &settings.kafka;
        for topic in [&config.tasks_topic, &config.shuffle_topic] {
            shared::kafka::ensure_topic(kafka, topic, config.topic_partitions, 7 * 24 * 3_600_000)
                .await?;
        }
        // A topic just created has no leaders for a moment, and the broker
        // answering may not list its partitions yet: wait for them.
        let mut attempts = 0;
        let shuffle_partitions = loop {
            match shared::kafka::watermarks(kafka, &config.shuffle_topic).await {
                Ok(partitions) => break partitions.len() as i32,
                Err(error) if attempts < 60 => {
                    attempts += 1;
                    tracing::info!(
                        error = format!("{error:#}"),
                        "shuffle topic not ready yet; waiting"
                    );
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                Err(error) => return Err(error.context("reading the shuffle topic's partitions")),
            }
        };
        let health = Health::new(config.worker.stuck_after());
        let setup = |group: &str, topic: &str, max_batch_events| Setup {
            kafka: kafka.clone(),
            pool: pool.clone(),
            options: Options {
                max_batch_events,
                ..Options::new(&config.worker, group, topic, &config.instance)
            },
        };
        let mut readiness = Readiness::default().postgres(pool.clone());
        let mut routes = utoipa_axum::router::OpenApiRouter::new();
        let work = match config.role {
            Role::Coordinator => {
                let producer = Arc::new(BatchProducer::new(kafka)?);
                readiness = readiness
                    .kafka(kafka, config.tasks_topic.clone())?
                    .producer(producer.clone());
                let wake = Arc::new(Notify::new());
                routes = api::router(api::ApiState {
                    pool: pool.clone(),
                    kafka: kafka.clone(),
                    wake: wake.clone(),
                    input_topic: kafka.access_logs_topic.clone(),
                    shuffle_topic: config.shuffle_topic.clone(),
                    shuffle_partitions,
                    chunk_lines: config.chunk_lines,
                    keep_jobs: config.keep_jobs,
                });
                Work::Coordinator(Relay {
                    pool: pool.clone(),
                    table: "pagecount_outbox",
                    key_column: "task_key",
                    producer,
                    topic: config.tasks_topic.clone(),
                    wake,
                    poll_interval: Duration::from_millis(config.relay_interval_ms.max(10)),
                    pause_before_publish: Duration::from_millis(
                        config.test_pause_before_publish_ms,
                    ),
                })
            }
            Role::Map => {
                readiness = readiness
                    .kafka(kafka, config.tasks_topic.clone())?
                    .worker(health.clone());
                let mapper = map::Mapper {
                    pool: pool.clone(),
                    reader: Arc::new(map::chunk_reader(kafka)?),
                    dlq_topic: kafka.dlq_topic.clone(),
                };
                // One chunk per transaction: a crash redoes one chunk at most.
                Work::Map(
                    mapper,
                    setup(
                        &format!("{}-map", config.group_prefix),
                        &config.tasks_topic,
                        1,
                    ),
                    health,
                )
            }
            Role::Reduce => {
                readiness = readiness
                    .kafka(kafka, config.shuffle_topic.clone())?
                    .worker(health.clone());
                Work::Reduce(
                    setup(
                        &format!("{}-reduce", config.group_prefix),
                        &config.shuffle_topic,
                        config.worker.max_batch_events,
                    ),
                    health,
                )
            }
        };
        let router = shared::http::finish("pagecount", routes, readiness, &settings.auth);
        let listener = shared::http::bind(config.addr).await?;
        tracing::info!(role = ?config.role, addr = %config.addr, "pagecount process built");
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

    pub async fn run(self) -> anyhow::Result<()> {
        let mut tasks = Tasks::new(self.shutdown.clone());
        match self.work {
            Work::Coordinator(relay) => {
                tasks.spawn("outbox-relay", relay.run(self.shutdown.clone()));
            }
            Work::Map(mapper, setup, health) => {
                tasks.spawn(
                    "mapper",
                    shared::worker::run(mapper, setup, health, self.shutdown.clone()),
                );
            }
            Work::Reduce(setup, health) => {
                tasks.spawn(
                    "reducer",
                    shared::worker::run(reduce::Reducer, setup, health, self.shutdown.clone()),
                );
            }
        }
        tasks.spawn(
            "http",
            shared::http::serve(self.listener, self.router, self.shutdown.clone()),
        );
        tasks.run(self.settings.shutdown.grace()).await?;
        tracing::info!("pagecount process stopped");
        Ok(())
    }
}
