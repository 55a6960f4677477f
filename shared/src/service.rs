//! The start-up every service process shares: configuration (the common
//! sections plus the service's own), telemetry, the shutdown signal, then the
//! service itself. A service's `main` is one call.

use std::future::Future;

use serde::de::DeserializeOwned;

use crate::config::Settings;
use crate::shutdown::CancellationToken;

/// Loads `[section]` and the shared settings, starts telemetry as `service`,
/// and runs `start` until it returns (SIGTERM/SIGINT cancel its token).
/// What is left to drop afterwards (a Kafka client leaving its group) gets
/// `shutdown.grace_ms` more, never longer: with the broker gone,
/// librdkafka's close can wait far beyond any bound a supervisor keeps.
pub async fn main<C, F, Fut>(service: &'static str, section: &str, start: F) -> anyhow::Result<()>
where
    C: DeserializeOwned,
    F: FnOnce(Settings, C, CancellationToken) -> Fut,
    Fut: Future<Output = anyhow::Result<()>>,
{
    match Command::parse(std::env::args().skip(1)) {
        Command::Run => {}
        Command::Help => {
            print!("{}", usage(service, section));
            return Ok(());
        }
        Command::Version => {
            println!("{service} {}", env!("CARGO_PKG_VERSION"));
            return Ok(());
        }
        Command::Unknown(arg) => {
            eprint!(
                "{service}: unknown argument `{arg}`\n\n{}",
                usage(service, section)
            );
            std::process::exit(2);
        }
    }
    let loaded = crate::config::load()?;
    let settings = loaded.settings()?;
    let config: C = loaded.section(section)?;
    crate::telemetry::init(service, &settings.log);
    crate::event::Limits::install(settings.events);
    crate::http::HttpLimits::install(settings.http);
    let shutdown = crate::shutdown::on_signal();
    let grace = settings.shutdown.grace();
    let result = start(settings, config, shutdown).await;
    let code = i32::from(result.is_err());
    std::thread::spawn(move || {
        std::thread::sleep(grace);
        tracing::warn!(
            grace_ms = grace.as_millis() as u64,
            "clean-up after shutdown outlasted the grace period; exiting"
        );
        std::process::exit(code);
    });
    result
}

/// What the command line asks for: services take no arguments (all
/// configuration is files and `KAPPA__` variables), only these two.
#[derive(Debug, PartialEq, Eq)]
enum Command {
    Run,
    Help,
    Version,
    Unknown(String),
}

impl Command {
    fn parse(mut args: impl Iterator<Item = String>) -> Self {
        match args.next().as_deref() {
            None => Command::Run,
            Some("-h" | "--help") => Command::Help,
            Some("-V" | "--version") => Command::Version,
            Some(other) => Command::Unknown(other.to_owned()),
        }
    }
}

fn usage(service: &str, section: &str) -> String {
    let upper = section.to_uppercase();
    format!(
        "{service} {version}: a kappa-jobs service.

Usage: {service} [--help | --version]

Runs until SIGTERM or SIGINT. Configuration: config/default.toml (every
key documented), then the file named by KAPPA_CONFIG_FILE, then environment
variables KAPPA__<SECTION>__<KEY>, e.g.
  KAPPA__AUTH__ADMIN_TOKEN=<secret>    required
  KAPPA__{upper}__ADDR=127.0.0.1:18080    listen address of [{section}]
  KAPPA__KAFKA__BROKERS=127.0.0.1:9092
  KAPPA__DATABASE__URL=postgres://kappa:kappa@127.0.0.1:5432/kappa
  KAPPA__LOG__FORMAT=pretty            json (default) or pretty
Endpoints: /healthz, /readyz, /metrics, and the service's API (README.md).
",
        version = env!("CARGO_PKG_VERSION"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_line_is_help_version_or_nothing() {
        let parse = |args: &[&str]| Command::parse(args.iter().map(|a| a.to_string()));
        assert_eq!(parse(&[]), Command::Run);
        assert_eq!(parse(&["--help"]), Command::Help);
        assert_eq!(parse(&["-V"]), Command::Version);
        assert_eq!(parse(&["--port"]), Command::Unknown("--port".into()));
        assert!(usage("gateway", "gateway").contains("KAPPA__GATEWAY__ADDR"));
    }
}
