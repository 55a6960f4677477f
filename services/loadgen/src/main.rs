//! loadgen: deterministic, realistic traffic for demos, tests and benchmarks.
//!
//! ```text
//! loadgen --events 200000 > events.ndjson              # NDJSON to stdout
//! loadgen --events 100000 --kafka --rate 2000          # produce to the events topic
//! loadgen --format access-log --events 50000 > access.log
//! ```
//! The same seed and options give the same output, byte for byte (except
//! with `--realtime`, which stamps events with the time they are sent).

mod access_log;
mod catalog;
mod sessions;
mod sink;

use chrono::{DateTime, Utc};
use clap::{Parser, ValueEnum};

/// What to generate.
#[derive(Debug, Clone, Copy, ValueEnum)]
enum Format {
    /// Event-envelope JSON, one per line (interactions and user updates).
    Events,
    /// Web-server access-log lines in Combined Log Format.
    AccessLog,
}

#[derive(Debug, Parser)]
#[command(version, about = "Deterministic, realistic traffic for kappa-jobs")]
struct Args {
    /// Seed of the random generator: same seed, same traffic.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// How many lines to generate.
    #[arg(long, default_value_t = 10_000)]
    events: u64,
    /// Distinct users (Zipf-like activity).
    #[arg(long, default_value_t = 5_000)]
    users: usize,
    /// Distinct products (Zipf-like popularity, grouped into clusters of related items).
    #[arg(long, default_value_t = 1_000)]
    products: usize,
    /// Products per cluster: a user mostly browses one cluster (planted structure).
    #[arg(long, default_value_t = 20)]
    cluster_size: usize,
    /// Event times are spread evenly over this many days from --start.
    #[arg(long, default_value_t = 7)]
    days: u32,
    /// First event time (RFC 3339).
    #[arg(long, default_value = "2026-11-01T00:00:00Z")]
    start: DateTime<Utc>,
    /// Stamp each event with the time it is sent instead (latency measurements).
    #[arg(long)]
    realtime: bool,
    #[arg(long, value_enum, default_value_t = Format::Events)]
    format: Format,
    /// Produce to Kafka (brokers and topics from the kappa config) instead of stdout.
    #[arg(long)]
    kafka: bool,
    /// Topic override (default: kafka.events_topic, or kafka.access_logs_topic for access logs).
    #[arg(long)]
    topic: Option<String>,
    /// Target rate in lines per second; 0 = as fast as possible.
    #[arg(long, default_value_t = 0)]
    rate: u64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    anyhow::ensure!(
        args.users > 0 && args.products > 0 && args.cluster_size > 0,
        "users, products and cluster size must be positive"
    );
    let catalog = catalog::Catalog::new(args.users, args.products, args.cluster_size);
    let span_secs = f64::from(args.days) * 86_400.0;
    let step_ms = (span_secs * 1000.0 / args.events.max(1) as f64).max(0.0);
    let clock = sessions::Clock {
        start: args.start,
        step_ms,
        realtime: args.realtime,
    };
    let lines: Box<dyn Iterator<Item = sink::Line> + Send> = match args.format {
        Format::Events => Box::new(
            sessions::Sessions::new(args.seed, catalog, clock)
                .take(args.events as usize)
                .map(|e| sink::Line {
                    key: Some(e.key().to_owned()),
                    payload: e.to_json(),
                    ts: e.ts,
                }),
        ),
        Format::AccessLog => Box::new(
            access_log::AccessLog::new(args.seed, catalog, clock)
                .take(args.events as usize)
                .map(|line| sink::Line {
                    key: None,
                    payload: line.into_bytes(),
                    ts: None,
                }),
        ),
    };
    if args.kafka {
        let kafka: shared::config::KafkaConfig = shared::config::load()?.section("kafka")?;
        let topic = args.topic.unwrap_or_else(|| match args.format {
            Format::Events => kafka.events_topic.clone(),
            Format::AccessLog => kafka.access_logs_topic.clone(),
        });
        sink::to_kafka(&kafka, &topic, lines, args.rate).await
    } else {
        sink::to_stdout(lines, args.rate)
    }
}
