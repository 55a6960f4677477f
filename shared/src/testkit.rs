//! Integration-test helpers on the real broker and database: every test gets
//! its own topics and its own database, so tests run in parallel and leave
//! nothing behind. Broker and database come from `KAPPA_TEST_BROKERS` and
//! `KAPPA_TEST_DATABASE_URL` (defaults: the local suite's).

use std::future::Future;
use std::time::{Duration, Instant};

use rdkafka::consumer::StreamConsumer;
use rdkafka::message::{Message, OwnedMessage};
use sqlx::{Connection, Executor, PgConnection, PgPool};
use uuid::Uuid;

use crate::config::{self, Secret, Settings};
use crate::consume::assign_from_start;
use crate::kafka;

/// Partitions of every test's events topic.
pub const PARTITIONS: i32 = 6;

/// The broker tests use.
pub fn brokers() -> String {
    std::env::var("KAPPA_TEST_BROKERS").unwrap_or_else(|_| "127.0.0.1:9092".into())
}

/// A database URL on which tests may create databases.
pub fn admin_database_url() -> String {
    std::env::var("KAPPA_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://kappa:kappa@127.0.0.1:5432/kappa".into())
}

/// One test's private topics and database, removed on drop.
pub struct TestEnv {
    pub settings: Settings,
    pub database: String,
    pub topics: Vec<String>,
    /// More databases made by [`TestEnv::another_database`], dropped with this one.
    pub extra_databases: Vec<String>,
}

impl TestEnv {
    /// Creates topics `<name>-<rand>-events|dlq|access-logs` and database
    /// `t_<name>_<rand>` (migrated), with settings pointing at them.
    pub async fn new(name: &str) -> TestEnv {
        Self::with_brokers(name, &brokers()).await
    }

    /// Like [`TestEnv::new`], on the broker at `brokers`.
    pub async fn with_brokers(name: &str, brokers: &str) -> TestEnv {
        let suffix = &Uuid::new_v4().simple().to_string()[..10];
        let slug: String = name
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() {
                    c.to_ascii_lowercase()
                } else {
                    '_'
                }
            })
            .collect();
        let mut settings: Settings = config::load().unwrap().section("").unwrap();
        settings.kafka.brokers = brokers.to_owned();
        settings.kafka.events_topic = format!("{slug}-{suffix}-events");
        settings.kafka.dlq_topic = format!("{slug}-{suffix}-dlq");
        settings.kafka.access_logs_topic = format!("{slug}-{suffix}-access-logs");
        settings.auth.admin_token = Secret::new(format!("test-token-{suffix}"));
        settings.log.format = config::LogFormat::Pretty;

        let topics = vec![
            settings.kafka.events_topic.clone(),
            settings.kafka.dlq_topic.clone(),
            settings.kafka.access_logs_topic.clone(),
        ];
        for topic in &topics {
            kafka::ensure_topic(&settings.kafka, topic, PARTITIONS, -1)
                .await
                .expect("creating a test topic");
        }

        let database = format!("t_{}_{suffix}", &slug[..slug.len().min(30)]);
        let admin_url = admin_database_url();
        let mut conn = PgConnection::connect(&admin_url)
            .await
            .expect("connecting to Postgres");
        conn.execute(format!("CREATE DATABASE \"{database}\"").as_str())
            .await
            .expect("creating the test database");
        settings.database.url = Secret::new(replace_database(&admin_url, &database));
        settings.database.max_connections = 8;
        TestEnv {
            settings,
            database,
            topics,
            extra_databases: Vec::new(),
        }
    }

    /// Another empty database beside the test's own (e.g. for a reference
    /// run over the same topic); returns its URL.
    pub async fn another_database(&mut self) -> String {
        let name = format!("{}_{}", self.database, self.extra_databases.len() + 2);
        let admin_url = admin_database_url();
        let mut conn = PgConnection::connect(&admin_url)
            .await
            .expect("connecting to Postgres");
        conn.execute(format!("CREATE DATABASE \"{name}\"").as_str())
            .await
            .expect("creating a database");
        self.extra_databases.push(name.clone());
        replace_database(&admin_url, &name)
    }

    /// A migrated pool on the test database.
    pub async fn pool(&self) -> PgPool {
        crate::db::connect(&self.settings.database)
            .await
            .expect("test database")
    }

    /// A consumer that reads `topic` from the beginning without a group.
    pub fn reader(&self, topic: &str) -> StreamConsumer {
        let group = format!("reader-{}", Uuid::new_v4());
        let consumer = kafka::consumer(&self.settings.kafka, &group).unwrap();
        assign_from_start(&consumer, topic, PARTITIONS).unwrap();
        consumer
    }

    /// Reads exactly `count` messages from `topic` (failing after `deadline`),
    /// then checks for a short while that no more arrive.
    pub async fn read_exactly(
        &self,
        topic: &str,
        count: usize,
        deadline: Duration,
    ) -> Vec<OwnedMessage> {
        let consumer = self.reader(topic);
        let mut out = Vec::with_capacity(count);
        let until = Instant::now() + deadline;
        while out.len() < count {
            let left = until.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, consumer.recv()).await {
                Ok(Ok(m)) => out.push(m.detach()),
                Ok(Err(e)) => panic!("reading {topic}: {e}"),
                Err(_) => panic!(
                    "read {} of {count} messages from {topic} before the deadline",
                    out.len()
                ),
            }
        }
        if let Ok(Ok(extra)) =
            tokio::time::timeout(Duration::from_millis(500), consumer.recv()).await
        {
            panic!(
                "more than {count} messages on {topic}: offset {} in partition {}",
                extra.offset(),
                extra.partition()
            );
        }
        out
    }

    /// Messages on `topic` in all partitions right now (high minus low watermark).
    pub async fn count(&self, topic: &str) -> i64 {
        kafka::watermarks(&self.settings.kafka, topic)
            .await
            .unwrap()
            .iter()
            .map(|(low, high)| high - low)
            .sum()
    }
}

impl Drop for TestEnv {
    fn drop(&mut self) {
        let kafka = self.settings.kafka.clone();
        let topics = std::mem::take(&mut self.topics);
        let mut databases = std::mem::take(&mut self.extra_databases);
        databases.push(self.database.clone());
        // Drop cannot await; clean up on a short-lived runtime of its own.
        let cleanup = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                if let Ok(admin) = kafka::admin(&kafka) {
                    let names: Vec<&str> = topics.iter().map(String::as_str).collect();
                    let _ = admin
                        .delete_topics(&names, &rdkafka::admin::AdminOptions::new())
                        .await;
                }
                if let Ok(mut conn) = PgConnection::connect(&admin_database_url()).await {
                    for database in databases {
                        let drop = format!("DROP DATABASE IF EXISTS \"{database}\" WITH (FORCE)");
                        let _ = conn.execute(drop.as_str()).await;
                    }
                }
            });
        });
        let _ = cleanup.join();
    }
}

/// `url` with its database name replaced.
pub fn replace_database(url: &str, database: &str) -> String {
    let (base, query) = url
        .split_once('?')
        .map_or((url, None), |(b, q)| (b, Some(q)));
    let cut = base.rfind('/').expect("a database URL has a path");
    let mut out = format!("{}/{database}", &base[..cut]);
    if let Some(q) = query {
        out.push('?');
        out.push_str(q);
    }
    out
}

/// Polls `check` until it returns `Some`, failing with `what` after `deadline`.
pub async fn eventually<T, F, Fut>(what: &str, deadline: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let until = Instant::now() + deadline;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(Instant::now() < until, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The repository root (for the project's scripts).
pub fn repo_root() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// A free loopback port (bound, then released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A private server run by one of the project's scripts (`start`, `stop`)
/// with its own ports and data under `.run/test-*`; stopped and removed on drop.
struct Scripted {
    script: &'static str,
    env: Vec<(&'static str, String)>,
    dir: std::path::PathBuf,
}

impl Scripted {
    fn start(
        script: &'static str,
        kind: &str,
        env: impl FnOnce(&std::path::Path) -> Vec<(&'static str, String)>,
    ) -> Self {
        let dir = repo_root()
            .join(".run")
            .join(format!("test-{kind}-{}", Uuid::new_v4().simple()));
        let server = Scripted {
            script,
            env: env(&dir),
            dir,
        };
        server.run("start");
        server
    }

    fn run(&self, command: &str) {
        let status = std::process::Command::new("bash")
            .arg(repo_root().join("scripts").join(self.script))
            .arg(command)
            .envs(self.env.iter().map(|(k, v)| (*k, v.as_str())))
            .status()
            .unwrap_or_else(|e| panic!("running scripts/{}: {e}", self.script));
        assert!(
            status.success(),
            "scripts/{} {command} failed; see {}",
            self.script,
            self.dir.display()
        );
    }
}

impl Drop for Scripted {
    fn drop(&mut self) {
        self.run("stop");
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn path(dir: &std::path::Path, name: &str) -> String {
    dir.join(name).display().to_string()
}

/// A second, private Kafka broker started by `scripts/kafka.sh`, for tests
/// that stop and restart the broker without disturbing the shared one.
pub struct PrivateBroker {
    pub port: u16,
    server: Scripted,
}

impl PrivateBroker {
    /// Starts a broker on free ports with its own data directory.
    pub fn start() -> PrivateBroker {
        let port = free_port();
        let server = Scripted::start("kafka.sh", "kafka", |dir| {
            vec![
                ("KAFKA_PORT", port.to_string()),
                ("KAFKA_CONTROLLER_PORT", free_port().to_string()),
                ("KAFKA_DATA_DIR", path(dir, "data")),
                ("KAFKA_PID_FILE", path(dir, "kafka.pid")),
                ("KAFKA_LOG_FILE", path(dir, "kafka.log")),
                ("KAFKA_HEAP", "256m".to_string()),
            ]
        });
        PrivateBroker { port, server }
    }

    /// `127.0.0.1:<port>`.
    pub fn bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Stops the broker (SIGTERM, then SIGKILL after a grace period).
    pub fn stop(&self) {
        self.server.run("stop");
    }

    /// Starts it again on the same data: topics and offsets survive.
    pub fn restart(&self) {
        self.server.run("start");
    }
}

/// A private PostgreSQL cluster started by `scripts/postgres.sh` on a free
/// port, for tests that stop the database.
pub struct PrivatePostgres {
    pub port: u16,
    server: Scripted,
}

impl PrivatePostgres {
    /// Starts a cluster with role and database `kappa`.
    pub fn start() -> PrivatePostgres {
        let port = free_port();
        let server = Scripted::start("postgres.sh", "pg", |dir| {
            vec![
                ("PG_PORT", port.to_string()),
                ("PG_DATA_DIR", path(dir, "data")),
                ("PG_PID_FILE", path(dir, "postgres.pid")),
                ("PG_LOG_FILE", path(dir, "postgres.log")),
            ]
        });
        PrivatePostgres { port, server }
    }

    /// The URL of its `kappa` database.
    pub fn url(&self) -> String {
        format!("postgres://kappa:kappa@127.0.0.1:{}/kappa", self.port)
    }

    /// Stops the server (fast shutdown: open transactions roll back).
    pub fn stop(&self) {
        self.server.run("stop");
    }

    /// Starts it again on the same data.
    pub fn restart(&self) {
        self.server.run("start");
    }
}
