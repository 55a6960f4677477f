//! A minimal worker in Kafka-transaction mode: copies every event of the
//! events topic to another topic, with its origin in a header, exactly once.
//! It is the runtime's test subject (`tests/transactions.rs` crashes it,
//! pauses it, runs two of it) and the smallest example of the mode.
//!
//! ```text
//! COPY_OUTPUT=copies COPY_GROUP=copier COPY_INSTANCE=1 COPY_ADDR=127.0.0.1:9190 \
//!   KAPPA__AUTH__ADMIN_TOKEN=t cargo run -p kappa-shared --features testkit --bin copy_worker
//! ```
//! `COPY_FAIL_ONCE=<key>`: the first batch holding that key also writes to a
//! topic that does not exist, so its transaction aborts (its copies already
//! in the log) and is retried.
//! `COPY_BATCH_MS`: the batch window (default 50 ms).

use std::time::Duration;

use shared::consume::Received;
use shared::event::{Envelope, EventType};
use shared::http::Readiness;
use shared::tasks::Tasks;
use shared::worker::{
    self, Health, KafkaTransactions, Options, Output, Outputs, Refusals, Setup, Worker,
};

struct Copier {
    output: String,
    fail_once: Option<String>,
}

impl Worker for Copier {
    type Mode = KafkaTransactions;

    const READS: &'static [EventType] = &EventType::ALL;

    async fn apply(&mut self, out: &mut Outputs, events: &[Received]) -> anyhow::Result<Refusals> {
        for event in events {
            let payload = match &event.envelope {
                Envelope::Inline(e) => e.to_json(),
                Envelope::Claimed(c) => c.to_json(),
            };
            out.push(Output {
                topic: self.output.clone(),
                key: Some(event.envelope.key().as_bytes().to_vec()),
                payload,
                headers: vec![(
                    "origin".into(),
                    format!("{}/{}", event.partition, event.offset).into_bytes(),
                )],
                timestamp: None,
                partition: None,
            });
        }
        let failing = self
            .fail_once
            .as_deref()
            .is_some_and(|key| events.iter().any(|e| e.envelope.key() == key));
        if failing {
            // One more record, to a topic that does not exist: the broker
            // refuses it, so the whole transaction (copies included) aborts
            // after they were written to the log, and is retried.
            self.fail_once = None;
            out.push(Output {
                topic: format!("{}-missing", self.output),
                payload: b"refused".to_vec(),
                ..Output::default()
            });
        }
        Ok(Refusals::none())
    }
}

fn var(name: &str) -> anyhow::Result<String> {
    std::env::var(name).map_err(|_| anyhow::anyhow!("{name} is not set"))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let loaded = shared::config::load()?;
    let settings = loaded.settings()?;
    shared::telemetry::init("copy_worker", &settings.log);
    let shutdown = shared::shutdown::on_signal();
    let pool = shared::db::connect(&settings.database).await?;
    let health = Health::new(Duration::from_secs(30));
    let setup = Setup {
        kafka: settings.kafka.clone(),
        pool: pool.clone(),
        options: Options {
            group: var("COPY_GROUP")?,
            topic: settings.kafka.events_topic.clone(),
            max_batch_events: 200,
            max_batch_ms: std::env::var("COPY_BATCH_MS")
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(50),
            stuck_after: Duration::from_secs(30),
            instance: var("COPY_INSTANCE")?,
        },
    };
    let copier = Copier {
        output: var("COPY_OUTPUT")?,
        fail_once: std::env::var("COPY_FAIL_ONCE").ok(),
    };
    let router = shared::http::finish(
        "copy_worker",
        Default::default(),
        Readiness::default().worker(health.clone()),
        &settings.auth,
    );
    let listener = tokio::net::TcpListener::bind(var("COPY_ADDR")?).await?;
    let mut tasks = Tasks::new(shutdown.clone());
    tasks.spawn(
        "worker",
        worker::run(copier, setup, health, shutdown.clone()),
    );
    tasks.spawn("http", shared::http::serve(listener, router, shutdown));
    tasks.run(settings.shutdown.grace()).await
}
