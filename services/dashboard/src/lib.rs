//! The batch half of the Kappa architecture: replays the retained `events`
//! topic from the start (or a time) to a snapshot of its end, computes daily
//! metrics from scratch, and serves the newest successful run.

pub mod aggregate;
pub mod audit;
pub mod daily;
pub mod dead_letters;
mod page;
mod reading;
mod routes;
pub mod runner;
mod state;
pub mod store;
pub mod triggers;

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use serde::Deserialize;
use shared::config::Settings;
use shared::http::Readiness;
use shared::shutdown::CancellationToken;
use shared::tasks::Tasks;
use tokio::net::TcpListener;
use tokio::sync::Notify;

pub use state::AppState;

/// The `[dashboard]` configuration section.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DashboardConfig {
    pub addr: SocketAddr,
    /// Finished runs kept (older ones and their results are deleted).
    pub keep_runs: i64,
    /// Cron schedule of replays, with seconds (`sec min hour day month weekday`); empty: none.
    pub schedule: String,
    /// A run this long after the last successful one ("12h", "30m", "1d",
    /// "1h30m"); empty: none.
    pub interval: String,
    /// A run once this many payload bytes were appended after the current run's end; 0: off.
    pub threshold_bytes: u64,
    /// A run once this many records were appended after the current run's end; 0: off.
    pub threshold_events: u64,
    /// How often the threshold is checked.
    pub check_interval_ms: u64,
    /// Readers sharing one replay, each over its own partitions.
    pub readers: usize,
    /// The MapReduce coordinator the page's "Count pages now" button starts jobs on.
    pub pagecount_url: String,
    /// The streaming consumer the Kappa audit compares with: its name in
    /// `consumer_offsets` (the recommendation service's `group`).
    pub audit_consumer: String,
}

impl DashboardConfig {
    /// The parsed schedule; an invalid one stops the service at start-up.
    pub fn schedule(&self) -> anyhow::Result<Option<cron::Schedule>> {
        let text = self.schedule.trim();
        if text.is_empty() {
            return Ok(None);
        }
        text.parse().map(Some).with_context(|| format!("dashboard.schedule `{text}` is not a cron expression (sec min hour day month weekday)"))
    }

    /// The parsed interval; an invalid one stops the service at start-up.
    pub fn interval(&self) -> anyhow::Result<Option<std::time::Duration>> {
        triggers::parse_interval(&self.interval)
            .map_err(|e| anyhow::anyhow!("dashboard.interval: {e}"))
    }
}

/// A built service: bound, connected, not yet running.
pub struct Application {
    listener: TcpListener,
    router: axum::Router,
    runner: runner::Runner,
    triggers: triggers::Triggers,
    grace: std::time::Duration,
    shutdown: CancellationToken,
}

impl Application {
    pub async fn build(
        settings: Settings,
        config: DashboardConfig,
        shutdown: CancellationToken,
    ) -> anyhow::Result<Self> {
        let pool = shared::db::connect(&settings.database).await?;
        shared::catalogue::zero("kappa_replay_failures_total", &[]);
        let registry = runner::Registry::default();
        let wake = Arc::new(Notify::new());
        let schedule = config.schedule()?;
        let interval = config.interval()?;
        let status = Arc::new(std::sync::Mutex::new(triggers::TriggerStatus {
            schedule: schedule.as_ref().map(|_| config.schedule.trim().to_owned()),
            interval: interval.map(|_| config.interval.trim().to_owned()),
            threshold_events: config.threshold_events,
            threshold_bytes: config.threshold_bytes,
            ..Default::default()
        }));
        let auditor = audit::Auditor::new(
            pool.clone(),
            settings.kafka.clone(),
            config.audit_consumer.clone(),
            config.readers,
            shutdown.clone(),
        );
        let state = AppState {
            pool: pool.clone(),
            pagecount_url: config.pagecount_url.trim_end_matches('/').to_owned(),
            http: reqwest::Client::builder()
                .timeout(std::time::Duration::from_secs(30))
                .build()?,
            registry: registry.clone(),
            wake: wake.clone(),
            triggers: status.clone(),
            public_metrics: settings.auth.public_metrics,
            auditor: auditor.clone(),
            dead_letters: dead_letters::DeadLetters::new(&settings.kafka),
        };
        let readiness = Readiness::default()
            .postgres(pool.clone())
            .kafka(&settings.kafka, settings.kafka.events_topic.clone())?;
        let router = shared::http::finish(
            "dashboard",
            routes::router(state),
            readiness,
            &settings.auth,
        );
        let listener = shared::http::bind(config.addr).await?;
        let triggers = triggers::Triggers {
            pool: pool.clone(),
            kafka: settings.kafka.clone(),
            topic: settings.kafka.events_topic.clone(),
            schedule,
            interval,
            threshold_bytes: config.threshold_bytes,
            threshold_events: config.threshold_events,
            check_interval: std::time::Duration::from_millis(config.check_interval_ms.max(100)),
            wake: wake.clone(),
            status,
        };
        let runner = runner::Runner {
            pool,
            kafka: settings.kafka.clone(),
            topic: settings.kafka.events_topic.clone(),
            keep_runs: config.keep_runs,
            readers: config.readers.max(1),
            registry,
            wake,
            auditor,
        };
        Ok(Self {
            listener,
            router,
            runner,
            triggers,
            grace: settings.shutdown.grace(),
            shutdown,
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.listener.local_addr().expect("bound")
    }

    /// Serves and runs replays until shutdown.
    pub async fn run(self) -> anyhow::Result<()> {
        tracing::info!(addr = %self.addr(), "dashboard listening");
        let mut tasks = Tasks::new(self.shutdown.clone());
        let (runner, triggers, stop) = (self.runner, self.triggers, self.shutdown.clone());
        tasks.spawn("replays", async move {
            runner.run(stop).await;
            Ok(())
        });
        let stop = self.shutdown.clone();
        tasks.spawn("triggers", async move {
            triggers.run(stop).await;
            Ok(())
        });
        tasks.spawn(
            "http",
            shared::http::serve(self.listener, self.router, self.shutdown.clone()),
        );
        tasks.run(self.grace).await?;
        tracing::info!("dashboard stopped");
        Ok(())
    }
}
