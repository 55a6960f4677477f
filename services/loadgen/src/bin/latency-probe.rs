//! latency-probe: event -> visible latency of the recommendation service,
//! for `scripts/bench/streaming.sh`.
//!
//! ```text
//! latency-probe --api 127.0.0.1:8082 --seconds 60 [--every-ms 100]
//! ```
//! Every `--every-ms`, a fresh probe user views two fresh products, sent
//! through one long-lived producer (no client start-up inside a sample, no
//! linger); the sample ends when the second product shows up in
//! `GET /products/<first>/similar`. One line per sample on stdout: the
//! milliseconds from handing the events to the producer until the API showed
//! them, or `timeout` after 30 s. Brokers and topic from the kappa config.

use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;
use rdkafka::producer::{FutureProducer, FutureRecord};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[derive(Debug, Parser)]
#[command(
    version,
    about = "Event -> visible latency of the recommendation service"
)]
struct Args {
    /// The recommendation service's HTTP address (host:port).
    #[arg(long)]
    api: String,
    /// How long to probe.
    #[arg(long, default_value_t = 60)]
    seconds: u64,
    /// One probe every this many milliseconds (a slow answer delays the next).
    #[arg(long, default_value_t = 100)]
    every_ms: u64,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let kafka: shared::config::KafkaConfig = shared::config::load()?.section("kafka")?;
    let producer: FutureProducer = shared::kafka::producer_config(&kafka)
        .set("linger.ms", "0")
        .create()
        .context("creating the probe's producer")?;
    // One round trip before the first sample: metadata and connections are
    // warm, as in a running service.
    warm_up(&producer, &kafka.events_topic).await?;
    let end = Instant::now() + Duration::from_secs(args.seconds);
    let mut n = 0u64;
    while Instant::now() < end {
        n += 1;
        let sample = probe(&producer, &kafka.events_topic, &args.api, n).await?;
        match sample {
            Some(elapsed) => println!("{:.1}", elapsed.as_secs_f64() * 1000.0),
            None => println!("timeout"),
        }
        let period = Duration::from_millis(args.every_ms);
        tokio::time::sleep(period.saturating_sub(sample.unwrap_or(period))).await;
    }
    Ok(())
}

/// One sample: the time until the pair is visible, or `None` after 30 s.
async fn probe(
    producer: &FutureProducer,
    topic: &str,
    api: &str,
    n: u64,
) -> anyhow::Result<Option<Duration>> {
    let nonce = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_nanos();
    let user = format!("probe-u{n}-{nonce}");
    let (first, second) = (format!("probe-a{n}-{nonce}"), format!("probe-b{n}-{nonce}"));
    let events: Vec<String> = [&first, &second]
        .iter()
        .map(|product| {
            let ts = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
            format!(
                r#"{{"type":"interaction","user_id":"{user}","product_id":"{product}","action":"view","ts":"{ts}"}}"#
            )
        })
        .collect();
    let sent = Instant::now();
    // Both queued at once (one key: in order), then both acknowledged.
    let mut deliveries = Vec::with_capacity(events.len());
    for event in &events {
        let record = FutureRecord::to(topic).key(&user).payload(event);
        let delivery = producer
            .send_result(record)
            .map_err(|(error, _)| error)
            .context("queueing a probe event")?;
        deliveries.push(delivery);
    }
    for delivery in deliveries {
        delivery
            .await
            .context("the producer went away")?
            .map_err(|(error, _)| error)
            .context("producing a probe event")?;
    }
    let path = format!("/products/{first}/similar");
    while sent.elapsed() < Duration::from_secs(30) {
        if get(api, &path).await?.contains(&second) {
            return Ok(Some(sent.elapsed()));
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    Ok(None)
}

/// Sends one view by a throwaway user and waits for its acknowledgement.
async fn warm_up(producer: &FutureProducer, topic: &str) -> anyhow::Result<()> {
    let event = r#"{"type":"interaction","user_id":"probe-warm-up","product_id":"probe-warm-up","action":"view"}"#;
    producer
        .send(
            FutureRecord::to(topic).key("probe-warm-up").payload(event),
            Duration::from_secs(30),
        )
        .await
        .map_err(|(error, _)| error)
        .context("producing the warm-up event")?;
    Ok(())
}

/// The body of `GET path` on `addr`, over HTTP/1.0 (one connection each).
async fn get(addr: &str, path: &str) -> anyhow::Result<String> {
    let mut stream = tokio::net::TcpStream::connect(addr)
        .await
        .with_context(|| format!("connecting to {addr}"))?;
    stream
        .write_all(format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes())
        .await?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer).await?;
    Ok(answer)
}
