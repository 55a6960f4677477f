//! POST /events against the real broker: every event arrives, in order per
//! key, keyed by its entity; the answer says where each one landed.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use rdkafka::message::Message;
use serde_json::Value;
use shared::event::Event;

#[tokio::test(flavor = "multi_thread")]
async fn ten_thousand_ndjson_events_arrive_in_order_per_key() {
    let app = common::spawn_app("ingest_10k", |_, _| {}).await;
    let n = 10_000;
    // 50 users, each with a running sequence number carried as the product id.
    let body: String = (0..n)
        .map(|i| {
            format!(
                "{{\"type\":\"interaction\",\"user_id\":\"u{}\",\"product_id\":\"seq-{i}\",\"action\":\"view\"}}\n",
                i % 50
            )
        })
        .collect();
    let response = app.post_ndjson(body).await;
    assert_eq!(response.status(), 202);
    let answer: Value = response.json().await.unwrap();
    assert_eq!(answer["accepted"], n);
    let acks = answer["events"].as_array().unwrap();
    assert_eq!(acks.len(), n);

    let topic = app.env.settings.kafka.events_topic.clone();
    let messages = app
        .env
        .read_exactly(&topic, n, Duration::from_secs(60))
        .await;
    let mut last_seq: HashMap<String, i64> = HashMap::new();
    // Per partition the reader yields messages in offset order.
    let mut by_partition: HashMap<i32, Vec<_>> = HashMap::new();
    for m in messages {
        by_partition.entry(m.partition()).or_default().push(m);
    }
    // Where each id really is: (partition, offset) as read back from the topic.
    let mut positions = HashMap::new();
    for (_, mut list) in by_partition {
        list.sort_by_key(|m| m.offset());
        for m in list {
            let event = Event::parse(m.payload().unwrap()).unwrap();
            let key = std::str::from_utf8(m.key().unwrap()).unwrap();
            assert_eq!(key, event.key(), "message key is the entity");
            let shared::EventBody::Interaction(i) = &event.body else {
                panic!("wrong type")
            };
            let seq: i64 = i.product_id.trim_start_matches("seq-").parse().unwrap();
            let prev = last_seq.insert(i.user_id.clone(), seq);
            assert!(prev.is_none_or(|p| p < seq), "order kept for {}", i.user_id);
            let at = (m.partition(), m.offset());
            assert!(
                positions.insert(event.id.unwrap(), at).is_none(),
                "no duplicates"
            );
        }
    }
    assert_eq!(last_seq.len(), 50);
    // The answer's ids and positions match what is on the topic, one for one.
    assert_eq!(positions.len(), n);
    for ack in acks {
        let id: uuid::Uuid = ack["id"].as_str().unwrap().parse().unwrap();
        let answered = (
            ack["partition"].as_i64().unwrap() as i32,
            ack["offset"].as_i64().unwrap(),
        );
        assert_eq!(positions.get(&id), Some(&answered), "{ack}");
    }
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_single_json_event_keeps_its_id_and_time() {
    let app = common::spawn_app("ingest_single", |_, _| {}).await;
    let body = r#"{
        "type": "interaction", "id": "0193a5c2-7f1e-7000-8000-00000000abcd",
        "user_id": "u1", "product_id": "p7", "action": "purchase", "price_cents": 1999,
        "ts": "2026-11-20T10:00:00Z"
    }"#;
    let response = app.post_events("application/json", body).await;
    assert_eq!(response.status(), 202);
    let answer: Value = response.json().await.unwrap();
    assert_eq!(
        answer["events"][0]["id"],
        "0193a5c2-7f1e-7000-8000-00000000abcd"
    );

    let topic = app.env.settings.kafka.events_topic.clone();
    let m = app
        .env
        .read_exactly(&topic, 1, Duration::from_secs(30))
        .await
        .remove(0);
    assert_eq!(m.key(), Some(&b"u1"[..]));
    // The Kafka timestamp is the event time, so replays by time use event time.
    assert_eq!(m.timestamp().to_millis(), Some(1_795_168_800_000));
    let event = Event::parse(m.payload().unwrap()).unwrap();
    assert_eq!(event, Event::parse(body.as_bytes()).unwrap());
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn ops_endpoints_answer() {
    let app = common::spawn_app("ingest_ops", |_, _| {}).await;
    let health = app.client.get(app.url("/healthz")).send().await.unwrap();
    assert_eq!(health.status(), 200);
    let ready = app.client.get(app.url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 200, "{:?}", ready.text().await);
    // Counted: the metrics are process-wide and sibling tests post too, so
    // the check is that this request moved them, not that they exist.
    let before = app.scrape().await;
    let posted = app
        .post_ndjson("{\"type\":\"page_access\",\"page\":\"/\"}\n")
        .await;
    assert_eq!(posted.status(), 202, "{:?}", posted.text().await);
    let after = app.scrape().await;
    let grew = |name: &str, labels: &[&str]| {
        shared::testkit::metric(&after, name, labels)
            - shared::testkit::metric(&before, name, labels)
    };
    assert!(
        grew("kappa_gateway_events_produced_total", &[]) >= 1.0,
        "{after}"
    );
    assert!(
        grew(
            "kappa_http_requests_total",
            &[r#"route="/events""#, r#"method="POST""#, r#"status="202""#]
        ) >= 1.0,
        "{after}"
    );
    app.stop().await;
}
