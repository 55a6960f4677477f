//! Layered configuration: `config/default.toml` (compiled in, so a binary runs
//! from any directory), then the file named by `KAPPA_CONFIG_FILE`, then
//! environment variables `KAPPA__SECTION__KEY`.
//!
//! Every section is a typed struct with `deny_unknown_fields`, so a typo in a
//! key stops the service at start-up instead of being silently ignored. The
//! top level tolerates sections it does not know: they belong to other services.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{bail, Context};
use serde::de::DeserializeOwned;
use serde::Deserialize;

const DEFAULTS: &str = include_str!("../../config/default.toml");

/// A string that never shows up in `Debug` output or logs.
#[derive(Clone, Deserialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret itself; call only where it is used, never to log it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret([redacted])")
    }
}

/// Kafka connection, topic names, and how consumers read them.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaConfig {
    pub brokers: String,
    pub events_topic: String,
    pub dlq_topic: String,
    pub access_logs_topic: String,
    pub delivery_timeout_ms: u64,
    /// Event ids are idempotent within this many records (offsets) per
    /// partition: a record whose id came among the partition's previous
    /// `dedupe_window` records is skipped by every worker
    /// (`shared::worker`) and every replay (`shared::replay`). One value
    /// for both, so the streaming and the batch half count alike. 0: off.
    pub dedupe_window: u64,
    /// A worker commits the offsets of records that are not its own (other
    /// types, events it does not act on) with its next batch, or after
    /// this long when no batch comes: they cost it no commit of their own.
    pub skipped_commit_ms: u64,
    /// Extra librdkafka producer properties (`linger_ms` -> `linger.ms`).
    #[serde(default)]
    pub producer: BTreeMap<String, String>,
    /// Extra librdkafka consumer properties.
    #[serde(default)]
    pub consumer: BTreeMap<String, String>,
}

impl KafkaConfig {
    /// The bound on one message's delivery.
    pub fn delivery_timeout(&self) -> Duration {
        Duration::from_millis(self.delivery_timeout_ms)
    }
}

/// PostgreSQL pool settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseConfig {
    /// Connection URL; a secret because it carries the password.
    pub url: Secret,
    pub max_connections: u32,
    pub acquire_timeout_ms: u64,
    /// The server ends a session idle inside a transaction for this long.
    pub idle_in_transaction_timeout_ms: u64,
}

/// Bearer-token authentication for writes and personal data.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    pub admin_token: Secret,
    /// Whether the dashboard's daily metrics (revenue included: the page,
    /// `/api/metrics/daily`, `/api/products/top`, `/api/dlq/daily`) are
    /// readable without the token; `false`: they need it too.
    pub public_metrics: bool,
}

/// When and how large events are moved out of the stream.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClaimCheckConfig {
    pub threshold_bytes: usize,
    pub grace_secs: u64,
    pub sweep_interval_secs: u64,
    /// Fault injection for tests only: the gateway waits this long between
    /// the broker's acknowledgement and committing the payloads (0: never).
    pub test_pause_before_commit_ms: u64,
}

/// Log filter and format.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    pub level: String,
    pub format: LogFormat,
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Json,
    Pretty,
}

/// The sections every service shares.
#[derive(Debug, Clone, Deserialize)]
pub struct Settings {
    pub kafka: KafkaConfig,
    pub database: DatabaseConfig,
    pub auth: AuthConfig,
    pub claim_check: ClaimCheckConfig,
    pub log: LogConfig,
    pub events: crate::event::Limits,
    pub shutdown: ShutdownConfig,
    pub http: HttpLimits,
    pub dlq: DlqConfig,
}

/// The dead-letter queue as a tool (`GET /dlq`, `POST /dlq/redrive` on the gateway).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DlqConfig {
    /// A dead letter whose record was redriven this many times already
    /// (its `redrive-count` header) is refused: a record that keeps failing
    /// is not looped. 0 turns redriving off.
    pub max_redrives: u32,
}

/// How long a stopping service may take.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShutdownConfig {
    /// After SIGTERM, tasks get this long to finish their work in hand.
    pub grace_ms: u64,
}

impl ShutdownConfig {
    pub fn grace(&self) -> Duration {
        Duration::from_millis(self.grace_ms)
    }
}

impl Settings {
    /// Checks what types alone cannot express; called before anything starts.
    pub fn validate(&self) -> anyhow::Result<()> {
        if self.auth.admin_token.expose().trim().is_empty() {
            bail!("auth.admin_token is empty: set KAPPA__AUTH__ADMIN_TOKEN (scripts/up.sh writes one to .run/token)");
        }
        if self.kafka.brokers.trim().is_empty() {
            bail!("kafka.brokers is empty");
        }
        if self.claim_check.threshold_bytes < 1024 {
            bail!("claim_check.threshold_bytes must be at least 1024");
        }
        if self.claim_check.grace_secs * 1000 <= self.kafka.delivery_timeout_ms {
            bail!("claim_check.grace_secs must exceed kafka.delivery_timeout_ms: the sweeper relies on every reference to a payload older than the grace being on the topic already");
        }
        if self.events.max_id_bytes == 0 || self.events.max_id_bytes > 2048 {
            bail!("events.max_id_bytes must be between 1 and 2048 (PostgreSQL indexes them)");
        }
        Ok(())
    }
}

/// The `[http]` configuration section: every service's server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpLimits {
    pub header_timeout_ms: u64,
    pub body_timeout_ms: u64,
    pub max_concurrent_requests: usize,
    pub retry_after_secs: u64,
}

impl Default for HttpLimits {
    fn default() -> Self {
        Self {
            header_timeout_ms: 10_000,
            body_timeout_ms: 60_000,
            max_concurrent_requests: 512,
            retry_after_secs: 1,
        }
    }
}

/// Listen address and request limits of one HTTP service.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    pub addr: SocketAddr,
    pub body_limit_bytes: usize,
    /// Largest file of a multipart upload (`POST /products`).
    pub max_upload_file_bytes: usize,
    /// Most events in one `POST /events`.
    pub max_events_per_request: usize,
}

/// A worker's batches and its health check: the same keys in the section of
/// every service that runs one, flattened into it (`[products]
/// max_batch_events = 500`, `KAPPA__PRODUCTS__MAX_BATCH_EVENTS=500`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub struct WorkerConfig {
    /// A batch closes at this many events...
    #[serde(deserialize_with = "number")]
    pub max_batch_events: usize,
    /// ...or this many milliseconds after its first event.
    #[serde(deserialize_with = "number")]
    pub max_batch_ms: u64,
    /// `/readyz` fails when events were held this long without a commit.
    #[serde(deserialize_with = "number")]
    pub stuck_after_ms: u64,
}

impl WorkerConfig {
    pub fn stuck_after(&self) -> Duration {
        Duration::from_millis(self.stuck_after_ms)
    }
}

/// A number of a flattened section: serde hands it over as it was read, and
/// the environment gives text (`"500"`) where a file gives a number.
fn number<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: std::str::FromStr + Deserialize<'de>,
{
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Given<T> {
        Number(T),
        Text(String),
        Other(serde::de::IgnoredAny),
    }
    let refused =
        |given: &str| serde::de::Error::custom(format!("expected a whole number, got {given}"));
    match Given::<T>::deserialize(deserializer)? {
        Given::Number(n) => Ok(n),
        Given::Text(text) => text
            .trim()
            .parse()
            .map_err(|_| refused(&format!("`{text}`"))),
        Given::Other(_) => Err(refused("a negative or fractional number")),
    }
}

/// The merged configuration sources, from which sections are read.
pub struct Loaded(config::Config);

/// Reads defaults, the file named by `KAPPA_CONFIG_FILE` and the environment.
pub fn load() -> anyhow::Result<Loaded> {
    let file = std::env::var("KAPPA_CONFIG_FILE").ok();
    load_from(file.as_deref(), None)
}

/// Reads defaults, then `file` (TOML), then `env`: the given variables, or
/// the process environment when `None` (tests pass their own, since the
/// process environment is shared by tests running in parallel).
pub fn load_from(
    file: Option<&str>,
    env: Option<std::collections::HashMap<String, String>>,
) -> anyhow::Result<Loaded> {
    let mut builder = config::Config::builder()
        .add_source(config::File::from_str(DEFAULTS, config::FileFormat::Toml));
    if let Some(path) = file {
        builder =
            builder.add_source(config::File::new(path, config::FileFormat::Toml).required(true));
    }
    let cfg = builder
        .add_source(
            config::Environment::with_prefix("KAPPA")
                .prefix_separator("__")
                .separator("__")
                .source(env),
        )
        .build()
        .context("reading configuration")?;
    Ok(Loaded(cfg))
}

impl Loaded {
    /// The shared sections, validated.
    pub fn settings(&self) -> anyhow::Result<Settings> {
        let settings: Settings = self.section("")?;
        settings.validate()?;
        Ok(settings)
    }

    /// One section by name (`""` for the whole tree).
    pub fn section<T: DeserializeOwned>(&self, name: &str) -> anyhow::Result<T> {
        let result = if name.is_empty() {
            self.0.clone().try_deserialize()
        } else {
            self.0.get(name)
        };
        result.with_context(|| format!("invalid configuration section [{name}]"))
    }
}

/// librdkafka property names from config keys: `linger_ms` -> `linger.ms`.
pub fn librdkafka_key(key: &str) -> String {
    key.replace('_', ".")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(vars: &[(&str, &str)]) -> Option<std::collections::HashMap<String, String>> {
        Some(
            vars.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
    }

    fn with_token() -> Option<std::collections::HashMap<String, String>> {
        env(&[("KAPPA__AUTH__ADMIN_TOKEN", "t")])
    }

    #[test]
    fn defaults_parse_and_an_empty_token_is_refused() {
        let loaded = load_from(None, env(&[])).unwrap();
        let settings: Settings = loaded.section("").unwrap();
        assert_eq!(settings.kafka.events_topic, "events");
        assert_eq!(settings.kafka.dedupe_window, 100_000);
        assert_eq!(settings.claim_check.threshold_bytes, 256 * 1024);
        assert_eq!(settings.dlq.max_redrives, 3);
        let error = loaded.settings().unwrap_err();
        assert!(
            format!("{error:#}").contains("auth.admin_token is empty"),
            "{error:#}"
        );
        let http: HttpConfig = loaded.section("gateway").unwrap();
        assert_eq!(http.addr.port(), 8080);
    }

    #[test]
    fn the_environment_overrides_the_file_which_overrides_the_defaults() {
        let dir = std::env::temp_dir().join(format!("kappa-config-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("site.toml");
        std::fs::write(
            &file,
            "[kafka]\nbrokers = \"file:1\"\ndelivery_timeout_ms = 42\n[gateway]\nbody_limit_bytes = 7\n",
        )
        .unwrap();
        let vars = env(&[
            ("KAPPA__AUTH__ADMIN_TOKEN", "t"),
            ("KAPPA__KAFKA__BROKERS", "env:2"),
            ("KAPPA__KAFKA__PRODUCER__LINGER_MS", "9"),
        ]);
        let loaded = load_from(file.to_str(), vars).unwrap();
        let settings = loaded.settings().unwrap();
        assert_eq!(settings.kafka.brokers, "env:2", "env beats file");
        assert_eq!(
            settings.kafka.delivery_timeout_ms, 42,
            "file beats defaults"
        );
        assert_eq!(
            settings.kafka.events_topic, "events",
            "defaults fill the rest"
        );
        assert_eq!(settings.kafka.producer["linger_ms"], "9");
        let http: HttpConfig = loaded.section("gateway").unwrap();
        assert_eq!(http.body_limit_bytes, 7);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn unknown_keys_are_refused() {
        let mut vars = with_token().unwrap();
        vars.insert("KAPPA__KAFKA__BROKRS".into(), "typo:1".into());
        let error = load_from(None, Some(vars)).unwrap().settings().unwrap_err();
        assert!(format!("{error:#}").contains("brokrs"), "{error:#}");

        let dir = std::env::temp_dir().join(format!("kappa-config-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("typo.toml");
        std::fs::write(&file, "[gateway]\nadr = \"127.0.0.1:1\"\n").unwrap();
        let loaded = load_from(file.to_str(), with_token()).unwrap();
        let error = loaded.section::<HttpConfig>("gateway").unwrap_err();
        assert!(format!("{error:#}").contains("adr"), "{error:#}");
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn secrets_never_show_in_debug_output() {
        let vars = env(&[
            ("KAPPA__AUTH__ADMIN_TOKEN", "tok-3f9a1c"),
            (
                "KAPPA__DATABASE__URL",
                "postgres://kappa:pw-77b2e0@127.0.0.1:5432/kappa",
            ),
        ]);
        let settings = load_from(None, vars).unwrap().settings().unwrap();
        assert_eq!(settings.auth.admin_token.expose(), "tok-3f9a1c");
        let shown = format!("{settings:?} {settings:#?}");
        for secret in ["tok-3f9a1c", "pw-77b2e0"] {
            assert!(!shown.contains(secret), "{secret} in {shown}");
        }
    }

    #[test]
    fn librdkafka_keys_use_dots() {
        assert_eq!(
            librdkafka_key("queue_buffering_max_ms"),
            "queue.buffering.max.ms"
        );
    }

    #[test]
    fn worker_keys_flatten_into_a_section_from_a_file_or_the_environment() {
        #[derive(Debug, Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Section {
            #[allow(dead_code)]
            addr: String,
            #[serde(flatten)]
            worker: WorkerConfig,
        }
        let read = |extra: &str, vars: &[(&str, &str)]| {
            let file = format!(
                "[svc]\naddr = \"a\"\nmax_batch_events = 5\nmax_batch_ms = 6\nstuck_after_ms = 7\n{extra}"
            );
            config::Config::builder()
                .add_source(config::File::from_str(&file, config::FileFormat::Toml))
                .add_source(
                    config::Environment::with_prefix("KAPPA")
                        .prefix_separator("__")
                        .separator("__")
                        .source(env(vars)),
                )
                .build()
                .and_then(|c| c.get::<Section>("svc"))
        };
        let worker = |max_batch_events, max_batch_ms, stuck_after_ms| WorkerConfig {
            max_batch_events,
            max_batch_ms,
            stuck_after_ms,
        };
        assert_eq!(read("", &[]).unwrap().worker, worker(5, 6, 7));
        // The environment gives text.
        let from_env = read("", &[("KAPPA__SVC__MAX_BATCH_EVENTS", "500")]).unwrap();
        assert_eq!(from_env.worker, worker(500, 6, 7));
        let error = read("", &[("KAPPA__SVC__MAX_BATCH_MS", "soon")]).unwrap_err();
        assert!(
            error
                .to_string()
                .contains("expected a whole number, got `soon`"),
            "{error}"
        );
        let error = read("", &[("KAPPA__SVC__STUCK_AFTER_MS", "-5")]).unwrap_err();
        assert!(
            error
                .to_string()
                .contains("expected a whole number, got `-5`"),
            "{error}"
        );
        // A typo is still refused beside the flattened keys.
        let error = read("max_batch_event = 1\n", &[]).unwrap_err();
        assert!(
            error
                .to_string()
                .contains("unknown field `max_batch_event`"),
            "{error}"
        );
    }
}
