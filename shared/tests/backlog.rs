//! A backlog fills batches by count: when a batch's window closes, the
//! records already waiting join it (up to `max_batch_events`), so a
//! catch-up commits few large batches however short the window is, while
//! the window alone bounds a batch under a steady load.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use rdkafka::producer::FutureRecord;
use shared::consume::Received;
use shared::event::EventType;
use shared::shutdown::CancellationToken;
use shared::testkit::{eventually, TestEnv};
use shared::worker::{self, Health, Options, Postgres, Refusals, Setup, Worker};
use sqlx::PgConnection;

/// Records the size of every batch it applies; each apply takes 100 ms, as
/// a commit under load does, so records pile up meanwhile.
struct Sizes(Arc<Mutex<Vec<usize>>>);

impl Worker for Sizes {
    type Mode = Postgres;

    const READS: &'static [EventType] = &EventType::ALL;

    async fn apply(
        &mut self,
        _: &mut PgConnection,
        events: &[Received],
    ) -> anyhow::Result<Refusals> {
        tokio::time::sleep(Duration::from_millis(100)).await;
        self.0.lock().unwrap().push(events.len());
        Ok(Refusals::none())
    }
}

const EVENTS: usize = 20_000;
const MAX_EVENTS: usize = 5_000;

#[tokio::test(flavor = "multi_thread")]
async fn a_backlog_commits_full_batches_however_short_the_window() {
    let env = TestEnv::new("backlog").await;
    let producer = shared::kafka::producer(&env.settings.kafka).unwrap();
    let sends = (0..EVENTS).map(|i| {
        let payload = format!(
            r#"{{"type":"interaction","user_id":"u{}","product_id":"p{i}","action":"view"}}"#,
            i % 97
        );
        let producer = producer.clone();
        let topic = env.settings.kafka.events_topic.clone();
        async move {
            producer
                .send(
                    FutureRecord::to(&topic)
                        .key(&format!("u{}", i % 97))
                        .payload(&payload),
                    Duration::from_secs(30),
                )
                .await
                .map_err(|(e, _)| e)
                .unwrap();
        }
    });
    futures::future::join_all(sends).await;

    let sizes = Arc::new(Mutex::new(Vec::new()));
    let setup = Setup {
        kafka: env.settings.kafka.clone(),
        pool: env.pool().await,
        options: Options {
            group: env.unique("backlog"),
            topic: env.settings.kafka.events_topic.clone(),
            max_batch_events: MAX_EVENTS,
            max_batch_ms: 1,
            stuck_after: Duration::from_secs(30),
            instance: "1".into(),
        },
    };
    let shutdown = CancellationToken::new();
    let _stop = shutdown.clone().drop_guard();
    tokio::spawn(worker::run(
        Sizes(sizes.clone()),
        setup,
        Health::new(Duration::from_secs(30)),
        shutdown,
    ));
    eventually("every event applied", Duration::from_secs(120), || {
        let applied: usize = sizes.lock().unwrap().iter().sum();
        async move { (applied == EVENTS).then_some(()) }
    })
    .await;
    let sizes = sizes.lock().unwrap().clone();
    // Batches of a 1 ms window alone hold what one millisecond brings
    // (hundreds); with the backlog taken in, all but the first few are full.
    let full = sizes.iter().filter(|&&n| n == MAX_EVENTS).count();
    assert!(full >= 2, "batches: {sizes:?}");
    assert!(sizes.len() <= EVENTS / MAX_EVENTS + 4, "batches: {sizes:?}");
}
