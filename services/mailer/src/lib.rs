//! The mail worker, in the article's two shapes (`[mailer] mode`):
//! - **stateless**: asks the users service for each address (always the
//!   current one; a dependency to be up, and a call per mail);
//! - **stateful**: keeps its own store of addresses, built from the
//!   `user_updated` events of the same stream (no calls; as fresh as the
//!   store's reading of the stream, and ready only once it caught up).
//!
//! Both send over SMTP (`lettre`), once per request through crashes (`log`),
//! on the shared runtime; each runs in its own consumer group, so side by
//! side they both send every mail.

mod courier;
mod log;
mod mail;
mod park;
pub mod store;
mod users_client;
mod worker;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use shared::config::{Settings, WorkerConfig};
use shared::http::Readiness;
use shared::shutdown::CancellationToken;
use shared::tasks::Tasks;
use shared::worker::{Health, Options, Setup};
use tokio::net::TcpListener;

use courier::Courier;
pub use mail::Mail;
use worker::{Directory, Mailer};

/// Where addresses come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    Stateless,
    Stateful,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Stateless => "stateless",
            Mode::Stateful => "stateful",
        }
    }
}

/// The `[mailer]` configuration section.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MailerConfig {
    pub addr: SocketAddr,
    pub mode: Mode,
    /// Consumer group; empty: `mailer-<mode>`.
    pub group: String,
    pub smtp_host: String,
    pub smtp_port: u16,
    pub from: String,
    pub users_url: String,
    pub users_timeout_ms: u64,
    pub users_retries: u32,
    pub breaker_failures: u32,
    pub breaker_open_ms: u64,
    pub data_dir: PathBuf,
    pub wait_for_user_ms: u64,
    pub concurrency: usize,
    /// Batches and the health check.
    #[serde(flatten)]
    pub worker: WorkerConfig,
}

/// A built service: bound, connected, not yet running.
pub struct Application {
    listener: TcpListener,
    router: axum::Router,
    mailer: Mailer,
    setup: Setup,
    health: Arc<Health>,
    /// The stateful worker's parked requests.
    parked: Option<park::Parked>,
    users: Arc<users_client::UsersClient>,
    settings: Settings,
    shutdown: CancellationToken,
}

impl Application {
    pub async fn build(
        settings: Settings,
        config: MailerConfig,
        shutdown: CancellationToken,
    ) -> anyhow::Result<Self> {
        let pool = shared::db::connect(&settings.database).await?;
        let mode = config.mode.as_str();
        let group = match config.group.trim() {
            "" => format!("mailer-{mode}"),
            group => group.to_owned(),
        };
        let topic = settings.kafka.events_topic.clone();
        let health = Health::new(config.worker.stuck_after());
        let mut readiness = Readiness::default()
            .postgres(pool.clone())
            .kafka(&settings.kafka, topic.clone())?
            .worker(health.clone());
        // The stateless worker asks it for every mail's address; the
        // stateful store only for an update the stream does not vouch for.
        let users = Arc::new(users_client::UsersClient::new(
            &config.users_url,
            settings.auth.admin_token.clone(),
            Duration::from_millis(config.users_timeout_ms),
            config.users_retries,
            config.breaker_failures,
            Duration::from_millis(config.breaker_open_ms),
        )?);
        let (directory, store) = match config.mode {
            Mode::Stateless => (Directory::Remote(users.clone()), None),
            Mode::Stateful => {
                let watermarks = shared::kafka::watermarks(&settings.kafka, &topic).await?;
                let store = store::Store::open(&config.data_dir, &topic, &watermarks)?;
                let ready = store.clone();
                readiness = readiness.check("address_store", move || {
                    let ready = ready.is_ready();
                    Box::pin(async move {
                        ready.then_some(()).ok_or_else(|| {
                            "still reading the stream's user_updated events".to_owned()
                        })
                    })
                });
                let directory = Directory::Local {
                    store: store.clone(),
                    wait_for_user: Duration::from_millis(config.wait_for_user_ms),
                };
                (directory, Some(store))
            }
        };
        let courier = Arc::new(Courier {
            pool: pool.clone(),
            smtp: mail::Smtp::new(
                &config.smtp_host,
                config.smtp_port,
                &config.from,
                mode,
                config.concurrency,
            )?,
            mode,
        });
        let parked = match store {
            Some(store) => Some(park::Parked {
                courier: courier.clone(),
                store,
                dead_letters: shared::dlq::DeadLetters::new(&settings.kafka)?,
                wait_for_user: Duration::from_millis(config.wait_for_user_ms),
            }),
            None => None,
        };
        let mailer = Mailer {
            courier,
            directory,
            concurrency: config.concurrency,
        };
        let router = shared::http::finish(
            "mailer",
            utoipa_axum::router::OpenApiRouter::new(),
            readiness,
            &settings.auth,
        );
        let listener = shared::http::bind(config.addr).await?;
        let setup = Setup {
            kafka: settings.kafka.clone(),
            pool,
            options: Options::new(&config.worker, group.clone(), topic, group),
        };
        Ok(Self {
            listener,
            router,
            mailer,
            setup,
            health,
            parked,
            users,
            settings,
            shutdown,
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.listener.local_addr().expect("bound")
    }

    /// Sends mails (and, stateful, feeds the address store) until shutdown.
    pub async fn run(self) -> anyhow::Result<()> {
        tracing::info!(addr = %self.addr(), mode = self.mailer.courier.mode, "mailer listening");
        let mut tasks = Tasks::new(self.shutdown.clone());
        if let Some(parked) = self.parked {
            let witness = store::Witness {
                users: self.users.clone(),
                runtime: tokio::runtime::Handle::current(),
            };
            let feeder = store::feed(
                parked.store.clone(),
                witness,
                &self.settings.kafka,
                &self.setup.options.topic,
                self.shutdown.clone(),
            )?;
            tasks.spawn("address-store", async move {
                tokio::task::spawn_blocking(move || feeder.join())
                    .await?
                    .map_err(|_| anyhow::anyhow!("the address store's thread panicked"))?
            });
            tasks.spawn("parked-requests", parked.run(self.shutdown.clone()));
        }
        tasks.spawn(
            "worker",
            shared::worker::run(self.mailer, self.setup, self.health, self.shutdown.clone()),
        );
        tasks.spawn(
            "http",
            shared::http::serve(self.listener, self.router, self.shutdown.clone()),
        );
        tasks.run(self.settings.shutdown.grace()).await?;
        tracing::info!("mailer stopped");
        Ok(())
    }
}
