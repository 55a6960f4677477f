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

/// Kafka connection and topic names.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaConfig {
    pub brokers: String,
    pub events_topic: String,
    pub dlq_topic: String,
    pub access_logs_topic: String,
    pub delivery_timeout_ms: u64,
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
}

/// Bearer-token authentication for writes and personal data.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    pub admin_token: Secret,
}

/// When and how large events are moved out of the stream.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClaimCheckConfig {
    pub threshold_bytes: usize,
    pub grace_secs: u64,
    pub sweep_interval_secs: u64,
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
        Ok(())
    }
}

/// Listen address and request limits of one HTTP service.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    pub addr: SocketAddr,
    pub body_limit_bytes: usize,
}

/// The merged configuration sources, from which sections are read.
pub struct Loaded(config::Config);

/// Reads defaults, the optional file and the environment.
pub fn load() -> anyhow::Result<Loaded> {
    let mut builder = config::Config::builder()
        .add_source(config::File::from_str(DEFAULTS, config::FileFormat::Toml));
    if let Ok(path) = std::env::var("KAPPA_CONFIG_FILE") {
        builder = builder.add_source(config::File::with_name(&path).required(true));
    }
    let cfg = builder
        .add_source(
            config::Environment::with_prefix("KAPPA")
                .prefix_separator("__")
                .separator("__"),
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

    #[test]
    fn defaults_parse_and_secret_is_redacted() {
        let loaded = load().unwrap();
        let mut settings: Settings = loaded.section("").unwrap();
        assert_eq!(settings.kafka.events_topic, "events");
        assert_eq!(settings.claim_check.threshold_bytes, 256 * 1024);
        assert!(settings.validate().is_err(), "empty token must be rejected");
        settings.auth.admin_token = Secret::new("s3cr3t");
        assert!(settings.validate().is_ok());
        assert!(!format!("{settings:?}").contains("s3cr3t"));
        let http: HttpConfig = loaded.section("gateway").unwrap();
        assert_eq!(http.addr.port(), 8080);
    }

    #[test]
    fn librdkafka_keys_use_dots() {
        assert_eq!(
            librdkafka_key("queue_buffering_max_ms"),
            "queue.buffering.max.ms"
        );
    }
}
