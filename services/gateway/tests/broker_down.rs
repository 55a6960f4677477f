//! The broker crashes (SIGKILL) while clients post: the gateway answers 503
//! within the delivery bound, never hangs, and counts the failures; a large
//! event posted meanwhile leaves its claim-check payload `pending`, and the
//! sweeper removes it while committed payloads stay. After the broker is
//! back, posting works and every acknowledged event is on the topic exactly
//! once.

mod common;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use rdkafka::message::Message;
use serde_json::Value;
use shared::event::parse;
use shared::testkit::{PrivateBroker, TestEnv};
use uuid::Uuid;

const DELIVERY_TIMEOUT_MS: u64 = 3000;

fn batch(n: usize) -> String {
    (0..n)
        .map(|i| format!("{{\"type\":\"interaction\",\"user_id\":\"u{}\",\"product_id\":\"p{i}\",\"action\":\"click\"}}\n", i % 7))
        .collect()
}

/// One event of about 10 KiB: above the test's claim-check threshold.
fn large_event() -> String {
    format!(
        "{{\"type\":\"mail_requested\",\"user_id\":\"u1\",\"subject\":\"big\",\"body\":\"{}\"}}\n",
        "x".repeat(10_000)
    )
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
        s.kafka.delivery_timeout_ms = DELIVERY_TIMEOUT_MS;
        s.claim_check.threshold_bytes = 4096;
        // Longer than a produce may take (the delivery timeout), or the
        // sweeper could take a payload whose envelope is still in flight.
        s.claim_check.grace_secs = 6;
        s.claim_check.sweep_interval_secs = 1;
    })
    .await;
    let pool = app.env.pool().await;
    let states = || async {
        sqlx::query_as::<_, (Uuid, String)>("SELECT token, state FROM claim_checks ORDER BY token")
            .fetch_all(&pool)
            .await
            .unwrap()
    };
    let mut acknowledged: Vec<Uuid> = Vec::new();

    let response = app.post_ndjson(batch(200)).await;
    assert_eq!(response.status(), 202);
    acknowledged.extend(acked_ids(&response.json().await.unwrap()));
    // A large event while the broker is up: its payload is committed.
    let response = app.post_ndjson(large_event()).await;
    assert_eq!(response.status(), 202);
    let answer: Value = response.json().await.unwrap();
    acknowledged.extend(acked_ids(&answer));
    let kept: Uuid = answer["events"][0]["claim_check"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(states().await, vec![(kept, "committed".to_owned())]);

    broker.kill();
    let started = Instant::now();
    let response = app.post_ndjson(batch(50)).await;
    let waited = started.elapsed();
    assert_eq!(response.status(), 503);
    // Bounded: the delivery timeout plus scheduling slack, never a hang.
    assert!(
        waited < Duration::from_millis(DELIVERY_TIMEOUT_MS) + Duration::from_secs(30),
        "waited {waited:?}"
    );
    let request_id = response.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_owned();
    let answer: Value = response.json().await.unwrap();
    assert_eq!(answer["error"], "broker_unavailable");
    // No internal text in a 5xx: the id to quote instead.
    assert_eq!(answer["request_id"], request_id.as_str());
    assert!(
        !answer["message"].as_str().unwrap().contains("Local:"),
        "{answer}"
    );
    assert_eq!(
        answer["failed"].as_array().unwrap().len() + acked_ids(&answer).len(),
        50
    );
    acknowledged.extend(acked_ids(&answer));
    let ready = app.client.get(app.url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 503, "not ready without a broker");
    // A large event during the outage: refused, its payload left pending.
    let response = app.post_ndjson(large_event()).await;
    assert_eq!(response.status(), 503);
    let during = states().await;
    assert_eq!(during.len(), 2, "{during:?}");
    assert!(during.contains(&(kept, "committed".to_owned())));
    assert!(
        during.iter().any(|(t, s)| *t != kept && s == "pending"),
        "{during:?}"
    );
    // The gateway saw the outage: every unacknowledged event is counted.
    let metrics = shared::testkit::metrics_text(&app.addr.to_string()).await;
    let failed = answer["failed"].as_array().unwrap().len() as f64 + 1.0;
    assert_eq!(
        shared::testkit::metric(&metrics, "kappa_gateway_events_failed_total", &[]),
        failed,
        "{metrics}"
    );

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

    // The sweeper removes the pending payload after the grace period and
    // keeps the committed one.
    let until = Instant::now() + Duration::from_secs(30);
    while states().await != vec![(kept, "committed".to_owned())] {
        assert!(Instant::now() < until, "not swept: {:?}", states().await);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    let topic = app.env.settings.kafka.events_topic.clone();
    let messages = app
        .env
        .read_exactly(&topic, acknowledged.len(), Duration::from_secs(60))
        .await;
    let on_topic: Vec<Uuid> = messages
        .iter()
        .map(|m| parse(m.payload().unwrap()).unwrap().id().unwrap())
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
