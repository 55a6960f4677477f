//! Where generated lines go: stdout, or Kafka at a target rate.

use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use chrono::{DateTime, Utc};
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::ClientContext;
use shared::config::KafkaConfig;

/// One generated line with its key and time.
pub struct Line {
    pub key: Option<String>,
    pub payload: Vec<u8>,
    pub ts: Option<DateTime<Utc>>,
}

/// Paces a loop to `rate` items per second (0 = unpaced).
struct Pacer {
    rate: u64,
    started: Instant,
}

impl Pacer {
    fn new(rate: u64) -> Self {
        Self {
            rate,
            started: Instant::now(),
        }
    }

    /// Sleeps until item `n` is due.
    fn wait(&self, n: u64) {
        if self.rate == 0 {
            return;
        }
        let due = self.started + Duration::from_secs_f64(n as f64 / self.rate as f64);
        if let Some(early) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(early);
        }
    }
}

pub fn to_stdout(lines: impl Iterator<Item = Line>, rate: u64) -> anyhow::Result<()> {
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::with_capacity(1 << 20, stdout.lock());
    let pacer = Pacer::new(rate);
    for (n, line) in lines.enumerate() {
        pacer.wait(n as u64);
        out.write_all(&line.payload)?;
        out.write_all(b"\n")?;
        if rate > 0 {
            out.flush()?;
        }
    }
    out.flush()?;
    Ok(())
}

/// Counts failed deliveries.
#[derive(Default)]
struct Failures(Arc<AtomicU64>);

impl ClientContext for Failures {}

impl ProducerContext for Failures {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        if let Err((error, _)) = result {
            if self.0.fetch_add(1, Ordering::Relaxed) == 0 {
                eprintln!("loadgen: delivery failed: {error}");
            }
        }
    }
}

pub async fn to_kafka(
    kafka: &KafkaConfig,
    topic: &str,
    lines: impl Iterator<Item = Line> + Send + 'static,
    rate: u64,
) -> anyhow::Result<()> {
    let failures = Arc::new(AtomicU64::new(0));
    let producer: ThreadedProducer<Failures> = shared::kafka::producer_config(kafka)
        .create_with_context(Failures(failures.clone()))
        .context("creating Kafka producer")?;
    let name = topic.to_owned();
    let topic = topic.to_owned();
    // Producing is a blocking loop (pacing with thread sleeps); keep it off the runtime.
    let sent = tokio::task::spawn_blocking(move || -> anyhow::Result<(u64, Duration)> {
        let pacer = Pacer::new(rate);
        let started = Instant::now();
        let mut sent = 0u64;
        let mut last_report = Instant::now();
        for line in lines {
            pacer.wait(sent);
            let mut record: BaseRecord<'_, str, [u8]> =
                BaseRecord::to(&topic).payload(&line.payload);
            if let Some(key) = &line.key {
                record = record.key(key.as_str());
            }
            if let Some(ts) = line.ts {
                record = record.timestamp(ts.timestamp_millis());
            }
            let mut record = record;
            loop {
                match producer.send(record) {
                    Ok(()) => break,
                    Err((
                        rdkafka::error::KafkaError::MessageProduction(
                            rdkafka::types::RDKafkaErrorCode::QueueFull,
                        ),
                        r,
                    )) => {
                        record = r;
                        producer.poll(Duration::from_millis(10));
                    }
                    Err((error, _)) => return Err(error.into()),
                }
            }
            sent += 1;
            if last_report.elapsed() > Duration::from_secs(5) {
                eprintln!(
                    "loadgen: produced {sent} ({:.0}/s)",
                    sent as f64 / started.elapsed().as_secs_f64()
                );
                last_report = Instant::now();
            }
        }
        producer
            .flush(Duration::from_secs(60))
            .context("flushing")?;
        Ok((sent, started.elapsed()))
    })
    .await??;
    let failed = failures.load(Ordering::Relaxed);
    let (count, elapsed) = sent;
    eprintln!(
        "loadgen: produced {count} to {name} in {:.2}s ({:.0}/s), {failed} failed",
        elapsed.as_secs_f64(),
        count as f64 / elapsed.as_secs_f64()
    );
    anyhow::ensure!(failed == 0, "{failed} deliveries failed");
    Ok(())
}
