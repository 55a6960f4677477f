//! loadgen: deterministic, realistic traffic for demos, tests and benchmarks.
//!
//! ```text
//! loadgen --events 200000 > events.ndjson              # NDJSON to stdout
//! loadgen --events 100000 --kafka --rate 2000          # produce to the events topic
//! loadgen --format access-log --events 50000 > access.log
//! loadgen --events 100000 --kafka --register-users 0.9   # 90% of its users sign up first
//! ```
//! The same seed and options give the same output, byte for byte (except
//! with `--realtime`, which stamps events with the time they are sent).

/// mimalloc: the hot paths (JSON, Kafka records, model updates) allocate per
/// event, and glibc's malloc/free showed up as ~17% of the gateway's CPU.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use chrono::{DateTime, Utc};
use clap::{Parser, ValueEnum};
use loadgen::register::{chosen, Registration};
use loadgen::{sink, Options};
use shared::event::EventBody;

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
    /// Before sending, sign up this share of the traffic's users (0..1;
    /// alone: all) through the users service, with each later profile
    /// change, instead of writing their `user_updated` events to the topic
    /// (the users service publishes those); the other users' updates are
    /// left out, so their purchases are refused by the mailers
    /// (`unknown_user`). The same users every run; idempotent.
    #[arg(long, value_name = "SHARE", num_args = 0..=1, default_missing_value = "1")]
    register_users: Option<f64>,
    /// The users service `--register-users` signs users up with.
    #[arg(long, default_value = "http://127.0.0.1:8081")]
    users_url: String,
    /// Its bearer token (default: `auth.admin_token` of the kappa config,
    /// i.e. `KAPPA__AUTH__ADMIN_TOKEN`).
    #[arg(long, env = "KAPPA_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Sign-ups in flight at once.
    #[arg(long, default_value_t = 32)]
    register_concurrency: usize,
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
    let lines: Box<dyn Iterator<Item = sink::Line> + Send> =
        match (&args.input, args.format, args.register_users) {
            (Some(_), _, Some(_)) | (_, Format::AccessLog, Some(_)) => {
                anyhow::bail!("--register-users works on generated events only")
            }
            (Some(path), _, None) => Box::new(loadgen::from_file(path)?.into_iter()),
            (None, Format::Events, None) => Box::new(options.events()?),
            (None, Format::Events, Some(share)) => {
                anyhow::ensure!((0.0..=1.0).contains(&share), "--register-users takes 0..1");
                register(&args, &options, share).await?;
                // Every user update went to the users service, or is left out.
                Box::new(
                    options
                        .sessions()?
                        .filter(|e| !matches!(e.body, EventBody::UserUpdated(_)))
                        .map(|e| loadgen::line(&e)),
                )
            }
            (None, Format::AccessLog, None) => Box::new(options.access_log()?),
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

/// Signs up `share` of the users the traffic of `options` signs up.
async fn register(args: &Args, options: &Options, share: f64) -> anyhow::Result<()> {
    let updates: Vec<_> = options
        .sessions()?
        .filter_map(|e| match e.body {
            EventBody::UserUpdated(u) if chosen(&u.user_id, share) => Some(u),
            _ => None,
        })
        .collect();
    let token = match &args.token {
        Some(token) => token.clone(),
        None => {
            let auth: shared::config::AuthConfig = shared::config::load()?.section("auth")?;
            auth.admin_token.expose().to_owned()
        }
    };
    anyhow::ensure!(
        !token.is_empty(),
        "--register-users needs the users service's token: --token, KAPPA_TOKEN or KAPPA__AUTH__ADMIN_TOKEN"
    );
    let started = std::time::Instant::now();
    let registration = Registration {
        url: args.users_url.trim_end_matches('/').to_owned(),
        token,
        concurrency: args.register_concurrency,
    };
    let done = registration.run(updates).await?;
    eprintln!(
        "loadgen: users signed up in {:.1}s: {} created, {} there already; {} changes made, {} made before",
        started.elapsed().as_secs_f64(),
        done.created,
        done.existed,
        done.changed,
        done.unchanged
    );
    Ok(())
}
