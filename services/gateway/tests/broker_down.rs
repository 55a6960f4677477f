//! The broker stops while clients post: the gateway answers 503 within the
//! delivery bound, never hangs; after the broker is back, posting works and
//! every acknowledged event is on the topic exactly once.

mod common;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use rdkafka::message::Message;
use serde_json::Value;
use shared::event::Event;
use shared::testkit::{PrivateBroker, TestEnv};
use uuid::Uuid;

const DELIVERY_TIMEOUT_MS: u64 = 3000;

fn batch(n: usize) -> String {
    (0..n)
        .map(|i| format!("{{\"type\":\"interaction\",\"user_id\":\"u{}\",\"product_id\":\"p{i}\",\"action\":\"click\"}}\n", i % 7))
        .collect()
}

fn acked_ids(answer: &Value) -> Vec<Uuid> {
    answer["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["id"].as_str().unwrap().parse().unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn broker_outage_gives_503_then_recovers_without_duplicates() {
    let broker = PrivateBroker::start();
    let env = TestEnv::with_brokers("broker_down", &broker.bootstrap()).await;
    let app = common::spawn_on(env, |s, _| {
        s.kafka.delivery_timeout_ms = DELIVERY_TIMEOUT_MS
    })
    .await;
    let mut acknowledged: Vec<Uuid> = Vec::new();

    let response = app.post_ndjson(batch(200)).await;
    assert_eq!(response.status(), 202);
    acknowledged.extend(acked_ids(&response.json().await.unwrap()));

    broker.stop();
    let started = Instant::now();
    let response = app.post_ndjson(batch(50)).await;
    let waited = started.elapsed();
    assert_eq!(response.status(), 503);
    // Bounded: the delivery timeout plus scheduling slack, never a hang.
    assert!(
        waited < Duration::from_millis(DELIVERY_TIMEOUT_MS) + Duration::from_secs(5),
        "waited {waited:?}"
    );
    let answer: Value = response.json().await.unwrap();
    assert_eq!(answer["error"], "broker_unavailable");
    assert_eq!(
        answer["failed"].as_array().unwrap().len() + acked_ids(&answer).len(),
        50
    );
    acknowledged.extend(acked_ids(&answer));
    let ready = app.client.get(app.url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 503, "not ready without a broker");

    broker.restart();
    // The producer reconnects by itself; the first posts may still time out.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let response = app.post_ndjson(batch(100)).await;
        let status = response.status();
        let answer: Value = response.json().await.unwrap();
        acknowledged.extend(acked_ids(&answer));
        if status == 202 {
            assert_eq!(answer["accepted"], 100);
            break;
        }
        assert_eq!(status, 503, "{answer}");
        assert!(
            Instant::now() < deadline,
            "posting still fails a minute after the restart"
        );
    }

    let topic = app.env.settings.kafka.events_topic.clone();
    let messages = app
        .env
        .read_exactly(&topic, acknowledged.len(), Duration::from_secs(60))
        .await;
    let on_topic: Vec<Uuid> = messages
        .iter()
        .map(|m| Event::parse(m.payload().unwrap()).unwrap().id.unwrap())
        .collect();
    let unique: HashSet<Uuid> = on_topic.iter().copied().collect();
    assert_eq!(unique.len(), on_topic.len(), "no duplicates on the topic");
    assert_eq!(
        unique,
        acknowledged.iter().copied().collect::<HashSet<_>>(),
        "exactly the acknowledged events"
    );
    app.stop().await;
    drop(broker);
}
