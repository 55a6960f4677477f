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

mod pg_proxy;
mod probes;
mod servers;

use crate::consume::assign_from_start;
use crate::kafka;
pub use pg_proxy::PgProxy;
pub use probes::{assert_openapi, metric, metrics_text, schema_matches};
pub use servers::{PrivateBroker, PrivateMailpit, PrivatePostgres};

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
    /// The random part of this test's names.
    pub suffix: String,
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
            suffix: suffix.to_owned(),
            database,
            topics,
            extra_databases: Vec::new(),
        }
    }

    /// `name` made unique to this test run: consumer groups live in the
    /// shared broker, and a group name reused by an earlier run (or by a
    /// process it left behind) would join the same group.
    pub fn unique(&self, name: &str) -> String {
        format!("{name}-{}", self.suffix)
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

    /// The settings a service started as a child process needs to join
    /// this test's world: brokers, topics, database, token, and a short
    /// session timeout (a SIGKILLed member's partitions move on quickly).
    pub fn child_env(&self) -> Vec<(&'static str, String)> {
        let kafka = &self.settings.kafka;
        vec![
            ("KAPPA__KAFKA__BROKERS", kafka.brokers.clone()),
            ("KAPPA__KAFKA__EVENTS_TOPIC", kafka.events_topic.clone()),
            ("KAPPA__KAFKA__DLQ_TOPIC", kafka.dlq_topic.clone()),
            (
                "KAPPA__KAFKA__ACCESS_LOGS_TOPIC",
                kafka.access_logs_topic.clone(),
            ),
            ("KAPPA__KAFKA__CONSUMER__SESSION_TIMEOUT_MS", "6000".into()),
            (
                "KAPPA__DATABASE__URL",
                self.settings.database.url.expose().to_owned(),
            ),
            (
                "KAPPA__AUTH__ADMIN_TOKEN",
                self.settings.auth.admin_token.expose().to_owned(),
            ),
            ("KAPPA__LOG__LEVEL", "info".into()),
        ]
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
    /// then reads on to the topic's end offsets of that moment, failing on
    /// any message more: a late duplicate already written cannot hide behind
    /// a quiet moment. (What is written after that moment is the caller's to
    /// wait for: call this once the writers committed.)
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
        let ends = kafka::watermarks(&self.settings.kafka, topic)
            .await
            .expect("the topic's end offsets");
        // Past the end offsets on every partition; an open transaction
        // holds a read_committed reader before its records, so the wait is
        // bounded, and the records it holds are not committed anyway.
        let settle = Instant::now() + Duration::from_secs(10);
        while Instant::now() < settle && !read_to(&consumer, topic, &ends) {
            if let Ok(Ok(extra)) =
                tokio::time::timeout(Duration::from_millis(100), consumer.recv()).await
            {
                panic!(
                    "more than {count} messages on {topic}: offset {} in partition {}",
                    extra.offset(),
                    extra.partition()
                );
            }
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

/// Whether `consumer` has read `topic` up to `ends` (per partition, the
/// `(low, high)` watermarks): its position is at the high watermark, or the
/// partition holds nothing.
pub fn read_to(consumer: &StreamConsumer, topic: &str, ends: &[(i64, i64)]) -> bool {
    use rdkafka::consumer::Consumer;
    let Ok(positions) = consumer.position() else {
        return false;
    };
    ends.iter().enumerate().all(|(partition, &(low, high))| {
        let at = positions
            .find_partition(topic, partition as i32)
            .map(|p| p.offset());
        high <= low || matches!(at, Some(rdkafka::Offset::Offset(at)) if at >= high)
    })
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
            // What cannot be removed is said (scripts/clean-tests.sh removes
            // it before the next run), never silently left.
            rt.block_on(async move {
                let names: Vec<&str> = topics.iter().map(String::as_str).collect();
                let deleted = match kafka::admin(&kafka) {
                    Ok(admin) => admin
                        .delete_topics(&names, &rdkafka::admin::AdminOptions::new())
                        .await
                        .map(|_| ())
                        .map_err(|e| e.to_string()),
                    Err(e) => Err(e.to_string()),
                };
                if let Err(error) = deleted {
                    eprintln!("test clean-up: topics {names:?} left behind: {error}");
                }
                match PgConnection::connect(&admin_database_url()).await {
                    Ok(mut conn) => {
                        for database in databases {
                            let drop =
                                format!("DROP DATABASE IF EXISTS \"{database}\" WITH (FORCE)");
                            if let Err(error) = conn.execute(drop.as_str()).await {
                                eprintln!(
                                    "test clean-up: database {database} left behind: {error}"
                                );
                            }
                        }
                    }
                    Err(error) => {
                        eprintln!("test clean-up: databases {databases:?} left behind: {error}")
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

/// The Kafka key a test must give `payload`: its entity (a record keyed
/// otherwise is dead-lettered, see `consume::classify`), or `"k"` for a
/// payload that does not parse (it is dead-lettered anyway).
pub fn key_of(payload: &str) -> String {
    crate::event::parse(payload.as_bytes())
        .map(|envelope| envelope.key().to_owned())
        .unwrap_or_else(|_| "k".to_owned())
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

/// Every `.rs` file of the workspace's code (`shared/src` and each
/// service's `src/`), for the tests that scan the code for names.
pub fn workspace_sources() -> Vec<std::path::PathBuf> {
    fn walk(dir: &std::path::Path, out: &mut Vec<std::path::PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap().flatten() {
            let path = entry.path();
            if path.is_dir() {
                walk(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
    }
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut files = Vec::new();
    walk(&root.join("shared/src"), &mut files);
    for service in std::fs::read_dir(root.join("services")).unwrap().flatten() {
        if service.path().join("src").is_dir() {
            walk(&service.path().join("src"), &mut files);
        }
    }
    files
}

/// Serves `routes` the way every service does (`shared::http::finish`:
/// ops routes, request metrics, limits; metrics public, admin token `t`) on
/// a free loopback port, until the returned token is cancelled.
pub async fn serve_finished(
    service: &'static str,
    routes: axum::Router,
) -> (std::net::SocketAddr, tokio_util::sync::CancellationToken) {
    let router = crate::http::finish(
        service,
        routes.into(),
        crate::http::Readiness::default(),
        &crate::config::AuthConfig {
            admin_token: Secret::new("t"),
            public_metrics: true,
        },
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let shutdown = tokio_util::sync::CancellationToken::new();
    tokio::spawn(crate::http::serve(listener, router, shutdown.clone()));
    (addr, shutdown)
}

/// How long a test waits for something to stop (a process after SIGTERM,
/// an in-process service after its shutdown) before it fails.
pub const STOP_LIMIT: Duration = Duration::from_secs(60);

/// `future`'s output, if it comes within `limit`; past it, a failure naming
/// `what` (a test never waits forever).
pub async fn within<F: Future>(limit: Duration, what: &str, future: F) -> F::Output {
    tokio::time::timeout(limit, future)
        .await
        .unwrap_or_else(|_| panic!("{what} did not happen within {limit:?}"))
}

/// Waits for `child` to exit, at most `limit`; past it, SIGKILL and a
/// failure naming `what` (a process that does not stop fails the test, it
/// does not hang it).
pub fn wait_child(
    child: &mut std::process::Child,
    limit: Duration,
    what: &str,
) -> std::process::ExitStatus {
    let until = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().expect("the child's status") {
            return status;
        }
        if Instant::now() >= until {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what} did not exit within {limit:?}: killed with SIGKILL");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Waits (at most a minute) until `GET /readyz` on `addr` (`host:port`)
/// answers 200; `what` names the process in the failure.
pub async fn wait_ready(addr: &str, what: &str) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let until = Instant::now() + Duration::from_secs(60);
    loop {
        let mut answer = [0u8; 12];
        if let Ok(mut stream) = tokio::net::TcpStream::connect(addr).await {
            let request = format!("GET /readyz HTTP/1.0\r\nHost: {addr}\r\n\r\n");
            if stream.write_all(request.as_bytes()).await.is_ok()
                && stream.read_exact(&mut answer).await.is_ok()
                && answer.ends_with(b" 200")
            {
                return;
            }
        }
        assert!(Instant::now() < until, "{what} never became ready");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The repository root (for the project's scripts).
pub fn repo_root() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// The last `lines` lines of a process's log, under a header naming it: what
/// a test prints when the process did not do what it waited for.
pub fn log_tail(path: &std::path::Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    let mut tail = format!("--- {} (last {lines} lines)\n", path.display());
    for line in &all[all.len().saturating_sub(lines)..] {
        tail.push_str(line);
        tail.push('\n');
    }
    tail
}

/// A free loopback port (bound, then released), for a child process that
/// takes its port from its configuration. Never the same port twice in one
/// test process: two tests of a binary cannot be handed one port between
/// its release and its use. (Across test binaries the kernel's choice of a
/// just-released ephemeral port is what keeps them apart; in-process
/// services bind port 0 themselves and report it.)
pub fn free_port() -> u16 {
    use std::collections::HashSet;
    use std::sync::Mutex;
    static HANDED: Mutex<Option<HashSet<u16>>> = Mutex::new(None);
    let mut handed = HANDED.lock().unwrap_or_else(|p| p.into_inner());
    let handed = handed.get_or_insert_with(HashSet::new);
    loop {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        if handed.insert(port) {
            return port;
        }
    }
}

/// A child process killed (SIGKILL) when dropped, so a failed test leaves
/// nothing running.
pub struct KillOnDrop(pub std::process::Child);

impl std::ops::Deref for KillOnDrop {
    type Target = std::process::Child;
    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl std::ops::DerefMut for KillOnDrop {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.0
    }
}

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
