//! Helpers: producing interactions, running the service in-process or as a
//! child process (to kill it), and waiting on its committed progress.
#![allow(dead_code)]

pub mod compare;
pub mod reference;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use futures::future::join_all;
use rdkafka::producer::FutureRecord;
use recommendation::{Application, RecommendationConfig};
use shared::config::{KafkaConfig, Secret};
use shared::shutdown::CancellationToken;
use shared::testkit::TestEnv;
use sqlx::PgPool;

/// One interaction as the JSON a producer would send.
pub fn interaction(user: &str, product: &str, action: &str, ts: &str) -> String {
    let price = if action == "purchase" {
        ",\"price_cents\":1250"
    } else {
        ""
    };
    format!(
        r#"{{"type":"interaction","user_id":"{user}","product_id":"{product}","action":"{action}","ts":"{ts}"{price}}}"#
    )
}

/// `n` interactions from loadgen (seeded: the same every run): sessions of
/// 300 users over 120 products in clusters, one day from 2026-11-01, keyed
/// by user. (Loadgen's user updates are left out: they are not the
/// recommendation's, which skips them, so every event here is applied.)
pub fn synthetic(n: usize) -> Vec<(String, String)> {
    loadgen_interactions(n, 1, "2026-11-01T00:00:00Z")
}

/// `n` interactions like [`synthetic`]'s, their times spread over about
/// `weeks` weeks from 2026-10-01 (so decay changes the ranking).
pub fn synthetic_weeks(n: usize, weeks: u32) -> Vec<(String, String)> {
    // Loadgen spreads its `2 * n` lines, the interactions taken the first
    // half of them, over twice the span.
    loadgen_interactions(n, 14 * weeks, "2026-10-01T00:00:00Z")
}

fn loadgen_interactions(n: usize, days: u32, start: &str) -> Vec<(String, String)> {
    loadgen::Options {
        seed: 7,
        lines: 2 * n as u64,
        users: 300,
        products: 120,
        cluster_size: 20,
        days,
        start: start.parse().unwrap(),
        realtime: false,
    }
    .events()
    .unwrap()
    .map(|line| {
        let key = line.key.expect("events are keyed");
        (key, String::from_utf8(line.payload).unwrap())
    })
    .filter(|(_, payload)| payload.contains(r#""type":"interaction""#))
    .take(n)
    .collect()
}

/// Produces keyed messages and waits for every acknowledgement.
pub async fn produce(kafka: &KafkaConfig, messages: &[(String, String)]) {
    let producer = shared::kafka::producer(kafka).unwrap();
    let topic = &kafka.events_topic;
    let sends: Vec<_> = messages
        .iter()
        .map(|(key, payload)| {
            producer.send(
                FutureRecord::to(topic).key(key).payload(payload),
                Duration::from_secs(30),
            )
        })
        .collect();
    for result in join_all(sends).await {
        result.map_err(|(e, _)| e).expect("produced");
    }
}

/// Produces `messages` in slices, pausing between them, so the stream lasts
/// about `duration`.
pub async fn produce_paced(kafka: &KafkaConfig, messages: &[(String, String)], duration: Duration) {
    let slices = 20;
    let size = messages.len().div_ceil(slices);
    for chunk in messages.chunks(size) {
        produce(kafka, chunk).await;
        tokio::time::sleep(duration / slices as u32).await;
    }
}

/// (events applied, dead-lettered) committed for `group`.
pub async fn progress(pool: &PgPool, group: &str, topic: &str) -> (i64, i64) {
    let rows = shared::worker::offsets::progress(pool, group, topic)
        .await
        .unwrap_or_default();
    (
        rows.iter().map(|r| r.2).sum(),
        rows.iter().map(|r| r.3).sum(),
    )
}

/// Waits until `group` committed `applied` events, failing after `deadline`.
pub async fn wait_applied(
    pool: &PgPool,
    group: &str,
    topic: &str,
    applied: i64,
    deadline: Duration,
) {
    let until = Instant::now() + deadline;
    loop {
        let (done, _) = progress(pool, group, topic).await;
        assert!(
            done <= applied,
            "applied {done} events, more than the {applied} produced"
        );
        if done == applied {
            return;
        }
        assert!(
            Instant::now() < until,
            "only {done} of {applied} events applied before the deadline"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A test configuration for `group`.
pub fn config(group: &str) -> RecommendationConfig {
    RecommendationConfig {
        addr: "127.0.0.1:0".parse().unwrap(),
        group: group.to_owned(),
        worker: shared::config::WorkerConfig {
            max_batch_events: 500,
            max_batch_ms: 20,
            stuck_after_ms: 30_000,
        },
        half_life_days: 7.0,
        read_connections: 4,
    }
}

/// The service in-process, on `database_url`.
pub struct InProcess {
    pub addr: std::net::SocketAddr,
    pub shutdown: CancellationToken,
    pub task: tokio::task::JoinHandle<anyhow::Result<()>>,
    /// Stops the service if a test fails before `stop` (its consumer
    /// thread would otherwise keep the test process alive).
    _stop_on_drop: shared::shutdown::DropGuard,
}

impl InProcess {
    pub async fn start(env: &TestEnv, database_url: &str, group: &str) -> InProcess {
        let mut settings = env.settings.clone();
        settings.database.url = Secret::new(database_url);
        Self::start_with(settings, config(group)).await
    }

    /// With settings and configuration of the test's choosing.
    pub async fn start_with(
        settings: shared::config::Settings,
        config: RecommendationConfig,
    ) -> InProcess {
        let shutdown = CancellationToken::new();
        let app = Application::build(settings, config, shutdown.clone())
            .await
            .expect("builds");
        let addr = app.addr();
        InProcess {
            addr,
            _stop_on_drop: shutdown.clone().drop_guard(),
            shutdown,
            task: tokio::spawn(app.run()),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub async fn stop(self) {
        self.shutdown.cancel();
        let stopped = shared::testkit::within(
            shared::testkit::STOP_LIMIT,
            "the in-process recommendation service stopping",
            self.task,
        );
        stopped.await.unwrap().unwrap();
    }
}

/// The service as a child process (so a test can SIGKILL or SIGSTOP it),
/// with its HTTP port known (metrics, queries).
pub struct Child {
    pub process: std::process::Child,
    pub port: u16,
}

impl Child {
    /// Starts the binary on `env`'s topics, `database_url` and `group`.
    pub fn spawn(env: &TestEnv, database_url: &str, group: &str, log: &str) -> Child {
        Self::spawn_with(env, database_url, group, log, &[])
    }

    /// [`Child::spawn`] with extra `KAPPA__...` variables.
    pub fn spawn_with(
        env: &TestEnv,
        database_url: &str,
        group: &str,
        log: &str,
        extra: &[(&str, &str)],
    ) -> Child {
        let log_path = shared::testkit::repo_root()
            .join(".run")
            .join(format!("{log}.log"));
        let log_file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .unwrap();
        let kafka = &env.settings.kafka;
        let port = shared::testkit::free_port();
        let process = Command::new(env!("CARGO_BIN_EXE_recommendation"))
            .env("KAPPA__KAFKA__BROKERS", &kafka.brokers)
            .env("KAPPA__KAFKA__EVENTS_TOPIC", &kafka.events_topic)
            .env("KAPPA__KAFKA__DLQ_TOPIC", &kafka.dlq_topic)
            // A killed member's partitions move after this, not after the 45 s default.
            .env("KAPPA__KAFKA__CONSUMER__SESSION_TIMEOUT_MS", "6000")
            .env("KAPPA__DATABASE__URL", database_url)
            .env(
                "KAPPA__AUTH__ADMIN_TOKEN",
                env.settings.auth.admin_token.expose(),
            )
            .env("KAPPA__RECOMMENDATION__ADDR", format!("127.0.0.1:{port}"))
            .env("KAPPA__RECOMMENDATION__GROUP", group)
            .env("KAPPA__RECOMMENDATION__MAX_BATCH_EVENTS", "500")
            .env("KAPPA__RECOMMENDATION__MAX_BATCH_MS", "20")
            .env("KAPPA__LOG__LEVEL", "info")
            .envs(extra.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log_file)
            .spawn()
            .expect("starting the recommendation binary");
        Child { process, port }
    }

    /// Its Prometheus metrics (empty while it does not answer).
    pub async fn metrics(&self) -> String {
        shared::testkit::metrics_text(&format!("127.0.0.1:{}", self.port)).await
    }

    /// Waits until the counter `name` reaches `at_least`.
    pub async fn wait_metric(&self, name: &str, at_least: f64) -> f64 {
        let until = Instant::now() + Duration::from_secs(60);
        loop {
            let value = shared::testkit::metric(&self.metrics().await, name, &[]);
            if value >= at_least {
                return value;
            }
            assert!(
                Instant::now() < until,
                "{name} is {value}, not {at_least}, after a minute"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Sends `signal` (`-STOP`, `-CONT`, `-TERM`...).
    pub fn signal(&self, signal: &str) {
        Command::new("kill")
            .args([signal, &self.process.id().to_string()])
            .status()
            .unwrap();
    }
}

impl Drop for Child {
    // A failed test must not leave its service running (it would stay in
    // the consumer group and hold up the next rebalance).
    fn drop(&mut self) {
        if matches!(self.process.try_wait(), Ok(None)) {
            self.signal("-CONT");
            let _ = self.process.kill();
            let _ = self.process.wait();
        }
    }
}

/// The binary as a child process, on the test's topics.
pub fn spawn_child(env: &TestEnv, database_url: &str, group: &str, log: &str) -> Child {
    Child::spawn(env, database_url, group, log)
}

/// SIGKILL: no shutdown code runs.
pub fn kill9(child: &mut Child) {
    child.process.kill().unwrap();
    child.process.wait().unwrap();
}

/// SIGTERM, then wait for a clean exit.
pub fn terminate(child: &mut Child) {
    child.signal("-TERM");
    let status = shared::testkit::wait_child(
        &mut child.process,
        shared::testkit::STOP_LIMIT,
        "the recommendation process after SIGTERM",
    );
    assert!(status.success(), "graceful shutdown exits 0, got {status}");
}

/// The state checksum of a clean, crash-free run over the same topic, in a
/// database of its own.
pub async fn reference_checksum(env: &mut TestEnv, applied: i64) -> String {
    let url = env.another_database().await;
    let group = format!("reference-{}", uuid::Uuid::new_v4().simple());
    let service = InProcess::start(env, &url, &group).await;
    let pool = PgPool::connect(&url).await.unwrap();
    wait_applied(
        &pool,
        &group,
        &env.settings.kafka.events_topic,
        applied,
        Duration::from_secs(120),
    )
    .await;
    // The clean run against the independent reference (written from the
    // docs): a bug in the model would otherwise agree with itself.
    let records = env.count(&env.settings.kafka.events_topic).await as usize;
    let reference = compare::from_topic(env, records).await;
    assert_eq!(
        reference.applied as i64, applied,
        "interactions on the topic"
    );
    let api = compare::Api::new(service.addr, env.settings.auth.admin_token.expose());
    compare::assert_products(&api, &reference, 30).await;
    service.stop().await;
    recommendation::query::checksum(&pool).await.unwrap()
}
