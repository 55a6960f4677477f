//! loadgen: deterministic, realistic traffic for demos, tests and benchmarks.
//!
//! ```text
//! loadgen --events 200000 > events.ndjson              # NDJSON to stdout
//! loadgen --events 100000 --kafka --rate 2000          # produce to the events topic
//! loadgen --format access-log --events 50000 > access.log
//! ```
//! The same seed and options give the same output, byte for byte (except
//! with `--realtime`, which stamps events with the time they are sent).

/// mimalloc: the hot paths (JSON, Kafka records, model updates) allocate per
/// event, and glibc's malloc/free showed up as ~17% of the gateway's CPU.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use chrono::{DateTime, Utc};
use clap::{Parser, ValueEnum};
use loadgen::{sink, Options};

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
    /// Send the events of this NDJSON file (one event per line, e.g. an
    /// earlier `loadgen` output) instead of generating them; each keyed by
    /// its entity and stamped with its `ts`.
    #[arg(long, value_name = "FILE")]
    input: Option<std::path::PathBuf>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let options = Options {
        seed: args.seed,
        lines: args.events,
        users: args.users,
        products: args.products,
        cluster_size: args.cluster_size,
        days: args.days,
        start: args.start,
        realtime: args.realtime,
    };
    let lines: Box<dyn Iterator<Item = sink::Line> + Send> = match (&args.input, args.format) {
        (Some(path), _) => Box::new(loadgen::from_file(path)?.into_iter()),
        (None, Format::Events) => Box::new(options.events()?),
        (None, Format::AccessLog) => Box::new(options.access_log()?),
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
