//! A replay counts an event id once, as the streaming workers apply it
//! once: a late retry of a purchase (the same id, the same bytes, produced
//! again) adds nothing, in a full replay and in one over a range that
//! starts after the first copy.

mod common;

use std::time::Duration;

use common::Service;
use rdkafka::producer::FutureRecord;
use serde_json::{json, Value};
use shared::testkit::{metric, metrics_text, TestEnv};

/// u1's records, in this order in one partition: (payload, event time).
fn records() -> Vec<(String, &'static str)> {
    let purchase = r#"{"type":"interaction","id":"0193a5c2-7f1e-7000-8000-00000000e001","user_id":"u1","product_id":"p1","action":"purchase","price_cents":500,"ts":"2026-11-10T10:00:00Z"}"#;
    let view = |id: &str, product: &str, ts: &str| {
        let id = if id.is_empty() {
            String::new()
        } else {
            format!(r#""id":"{id}","#)
        };
        format!(
            r#"{{"type":"interaction",{id}"user_id":"u1","product_id":"{product}","action":"view","ts":"{ts}"}}"#
        )
    };
    vec![
        (purchase.to_owned(), "2026-11-10T10:00:00Z"),
        (
            view(
                "0193a5c2-7f1e-7000-8000-00000000e002",
                "p2",
                "2026-11-10T11:00:00Z",
            ),
            "2026-11-10T11:00:00Z",
        ),
        (
            view("", "p3", "2026-11-11T09:00:00Z"),
            "2026-11-11T09:00:00Z",
        ),
        // The purchase again, a day later: a client's retry.
        (purchase.to_owned(), "2026-11-10T10:00:00Z"),
        (
            view(
                "0193a5c2-7f1e-7000-8000-00000000e004",
                "p4",
                "2026-11-11T10:00:00Z",
            ),
            "2026-11-11T10:00:00Z",
        ),
    ]
}

async fn produce(env: &TestEnv) {
    let producer = shared::kafka::producer(&env.settings.kafka).unwrap();
    for (payload, ts) in records() {
        let millis = chrono::DateTime::parse_from_rfc3339(ts)
            .unwrap()
            .timestamp_millis();
        producer
            .send(
                FutureRecord::to(&env.settings.kafka.events_topic)
                    .key("u1")
                    .payload(&payload)
                    .timestamp(millis),
                Duration::from_secs(10),
            )
            .await
            .map_err(|(e, _)| e)
            .unwrap();
    }
}

/// (views, purchases, revenue) per day of a run.
async fn days(service: &Service, run: &Value) -> Vec<(u64, u64, u64)> {
    let (status, metrics) = service
        .get(&format!(
            "/api/metrics/daily?from=2026-11-10&to=2026-11-11&run={}",
            run["id"]
        ))
        .await;
    assert_eq!(status, 200, "{metrics}");
    metrics["days"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            let n = |field: &str| d[field].as_u64().unwrap();
            (n("views"), n("purchases"), n("revenue_cents"))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_replay_counts_a_repeated_event_id_once() {
    let env = TestEnv::new("dash_dup").await;
    produce(&env).await;
    let service = Service::start(&env, common::config()).await;

    let (full, _) = service.replay(json!({"from": "earliest"})).await;
    assert_eq!(full["state"], "succeeded", "{full}");
    assert_eq!(full["events"], 4, "the repeat is not an event: {full}");
    assert_eq!(
        days(&service, &full).await,
        vec![(1, 1, 500), (2, 0, 0)],
        "one purchase of 500"
    );

    // From the second day: the range starts after the first copy, and the
    // replay still knows its id.
    let (partial, _) = service
        .replay(json!({"from": "2026-11-11T00:00:00Z"}))
        .await;
    assert_eq!(partial["state"], "succeeded", "{partial}");
    assert_eq!(partial["events"], 2, "{partial}");
    assert_eq!(days(&service, &partial).await, vec![(0, 0, 0), (2, 0, 0)]);

    let skipped = metric(
        &metrics_text(service.addr()).await,
        "kappa_replay_duplicates_skipped_total",
        &[],
    );
    assert_eq!(skipped, 2.0, "one repeat in each run");
    service.stop().await;
}
