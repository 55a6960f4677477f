//! Replays against the real broker and database: the numbers equal an
//! independent count of what the test produced (days without events and
//! claim-checked envelopes included), two replays of one range agree, and a
//! replay from a time counts only what came after it.

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

mod common;

use common::Service;
use rdkafka::producer::FutureRecord;
use serde_json::{json, Value};
use shared::event::{ClaimRef, ClaimedEvent, EventType};
use shared::testkit::TestEnv;

const DAYS: [&str; 4] = ["2026-11-10", "2026-11-11", "2026-11-12", "2026-11-13"];

/// What the test produced, counted independently: per day (views, purchases,
/// revenue, active users, viewing users, purchasing users).
#[derive(Default, Debug)]
struct Expected {
    views: u64,
    purchases: u64,
    revenue: u64,
    active: HashSet<String>,
    viewing: HashSet<String>,
    purchasing: HashSet<String>,
    /// Views per product, for the expected top list.
    viewed: BTreeMap<String, u64>,
}

impl Expected {
    /// The top `n` products by views: most views first, then product id.
    fn top_views(&self, n: usize) -> Vec<(String, u64)> {
        let mut ranked: Vec<(String, u64)> =
            self.viewed.iter().map(|(p, c)| (p.clone(), *c)).collect();
        ranked.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        ranked.truncate(n);
        ranked
    }
}

async fn produce(env: &TestEnv) -> BTreeMap<&'static str, Expected> {
    let producer = shared::kafka::producer(&env.settings.kafka).unwrap();
    let topic = &env.settings.kafka.events_topic;
    let mut expected: BTreeMap<&'static str, Expected> = BTreeMap::new();
    // Day index 2 stays empty on purpose.
    for (d, day) in DAYS.iter().enumerate().filter(|(d, _)| *d != 2) {
        let e = expected.entry(day).or_default();
        for i in 0..(30 + 10 * d) {
            let user = format!("u{}", (i * 7 + d) % 13);
            // Uneven views per product, so the ranking is not a tie.
            let product = format!("p{}", (i * i + d) % 5);
            let (action, price) = if i % 6 == 5 {
                ("purchase", Some(100 + i as u64))
            } else {
                ("view", None)
            };
            let ts = format!("{day}T{:02}:{:02}:00Z", i / 60, i % 60);
            let price_field = price
                .map(|p| format!(",\"price_cents\":{p}"))
                .unwrap_or_default();
            let payload = format!(
                r#"{{"type":"interaction","user_id":"{user}","product_id":"{product}","action":"{action}","ts":"{ts}"{price_field}}}"#
            );
            let millis = chrono::DateTime::parse_from_rfc3339(&ts)
                .unwrap()
                .timestamp_millis();
            producer
                .send(
                    FutureRecord::to(topic)
                        .key(&user)
                        .payload(&payload)
                        .timestamp(millis),
                    Duration::from_secs(10),
                )
                .await
                .map_err(|(e, _)| e)
                .unwrap();
            e.active.insert(user.clone());
            match price {
                Some(p) => {
                    e.purchases += 1;
                    e.revenue += p;
                    e.purchasing.insert(user);
                }
                None => {
                    e.views += 1;
                    e.viewing.insert(user);
                    *e.viewed.entry(product.clone()).or_default() += 1;
                }
            }
        }
    }
    // A claim-checked envelope (no payload needed to count it) and a poison record.
    let claimed = ClaimedEvent {
        event_type: EventType::ProductUploaded,
        id: None,
        ts: None,
        key: "p1".into(),
        claim_check: ClaimRef {
            token: Default::default(),
            sha256: "00".repeat(32),
            size: 1 << 20,
            content_type: "application/json".into(),
        },
    };
    for payload in [claimed.to_json(), b"{broken".to_vec()] {
        let millis = chrono::DateTime::parse_from_rfc3339("2026-11-13T12:00:00Z")
            .unwrap()
            .timestamp_millis();
        producer
            .send(
                FutureRecord::to(topic)
                    .key("p1")
                    .payload(&payload)
                    .timestamp(millis),
                Duration::from_secs(10),
            )
            .await
            .map_err(|(e, _)| e)
            .unwrap();
    }
    expected
}

fn without_run(mut metrics: Value) -> Value {
    metrics["run_id"] = Value::Null;
    metrics
}

#[tokio::test(flavor = "multi_thread")]
async fn metrics_equal_an_independent_count_and_replays_agree() {
    let env = TestEnv::new("dash_replay").await;
    let expected = produce(&env).await;
    let service = Service::start(&env, common::config()).await;

    let (status, body) = service.get("/api/metrics/daily").await;
    assert_eq!(
        (status, body["error"].as_str()),
        (404, Some("not_found")),
        "nothing served before a replay"
    );

    let (run, progress) = service.replay(json!({"from": "earliest"})).await;
    assert_eq!(run["state"], "succeeded", "{run}");
    assert!(
        progress.windows(2).all(|w| w[0] <= w[1]),
        "progress is monotonic: {progress:?}"
    );
    assert_eq!(progress.last(), Some(&1.0));
    let total: u64 = expected.values().map(|e| e.views + e.purchases).sum();
    assert_eq!(
        run["events"],
        total + 1,
        "interactions plus the claim-checked envelope"
    );
    assert_eq!(run["rejected"], 1);

    let (_, metrics) = service
        .get(&format!(
            "/api/metrics/daily?from={}&to={}",
            DAYS[0], DAYS[3]
        ))
        .await;
    assert_eq!(metrics["run_id"], run["id"]);
    assert_eq!(metrics["end_offsets"], run["end_offsets"]);
    let days = metrics["days"].as_array().unwrap();
    assert_eq!(days.len(), 4);
    for (day, got) in DAYS.iter().zip(days) {
        assert_eq!(got["day"], *day);
        match expected.get(day) {
            None => assert_eq!(
                (got["views"].as_u64(), got["active_users"].as_u64()),
                (Some(0), Some(0)),
                "{day} is empty"
            ),
            Some(e) => {
                assert_eq!(got["views"], e.views, "{day}");
                assert_eq!(got["purchases"], e.purchases, "{day}");
                assert_eq!(got["revenue_cents"], e.revenue, "{day}");
                assert_eq!(got["active_users"], e.active.len(), "{day}");
                let conversion = e.purchasing.len() as f64 / e.viewing.len() as f64;
                assert!(
                    (got["conversion"].as_f64().unwrap() - conversion).abs() < 1e-12,
                    "{day}"
                );
            }
        }
    }
    let (_, top) = service
        .get(&format!(
            "/api/products/top?day={}&by=views&limit=3",
            DAYS[0]
        ))
        .await;
    let got: Vec<(String, u64)> = top["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            (
                i["product_id"].as_str().unwrap().to_owned(),
                i["count"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(got, expected[DAYS[0]].top_views(3), "{top}");

    // The same range again: identical numbers.
    let (again, _) = service.replay(json!({"from": "earliest"})).await;
    let (_, metrics_again) = service
        .get(&format!(
            "/api/metrics/daily?from={}&to={}",
            DAYS[0], DAYS[3]
        ))
        .await;
    assert_eq!(metrics_again["run_id"], again["id"]);
    assert_eq!(without_run(metrics_again), without_run(metrics.clone()));

    // From a time: only what came after it, served by the run's id (a
    // custom range never becomes current).
    let (later, _) = service
        .replay(json!({"from": format!("{}T00:00:00Z", DAYS[1])}))
        .await;
    assert_eq!(later["state"], "succeeded");
    let (_, from_day1) = service
        .get(&format!("/api/metrics/daily?run={}", later["id"]))
        .await;
    let first_day = &from_day1["days"][0];
    assert_eq!(first_day["day"], DAYS[1]);
    let after: u64 = expected
        .iter()
        .filter(|(d, _)| **d >= DAYS[1])
        .map(|(_, e)| e.views + e.purchases)
        .sum();
    assert_eq!(
        from_day1["totals"]["views"].as_u64().unwrap()
            + from_day1["totals"]["purchases"].as_u64().unwrap(),
        after
    );

    // Up to a time: only what came before it.
    let (until_day2, _) = service
        .replay(json!({"from": "earliest", "to": format!("{}T00:00:00Z", DAYS[2])}))
        .await;
    assert_eq!(until_day2["state"], "succeeded", "{until_day2}");
    let before: u64 = expected
        .iter()
        .filter(|(d, _)| **d < DAYS[2])
        .map(|(_, e)| e.views + e.purchases)
        .sum();
    assert_eq!(until_day2["events"], before, "{until_day2}");
    assert_eq!(until_day2["rejected"], 0, "the poison record is after `to`");

    // The replay metrics are on /metrics.
    let metrics = shared::testkit::metrics_text(service.addr()).await;
    for name in [
        "kappa_replay_duration_seconds_count",
        "kappa_replay_events_per_second",
        "kappa_replay_last_success_timestamp_seconds",
        "kappa_replay_progress 1",
    ] {
        assert!(metrics.contains(name), "{name} missing from {metrics}");
    }

    // Retention keeps the newest 3 finished runs: after a fifth, the first
    // two are gone with their stored results.
    let (fifth, _) = service.replay(json!({"from": "earliest"})).await;
    assert_eq!(fifth["state"], "succeeded");
    let pool = env.pool().await;
    for old in [&run, &again] {
        assert_eq!(
            service.get(&format!("/api/replays/{}", old["id"])).await.0,
            404,
            "run {} is gone",
            old["id"]
        );
        let left: i64 =
            sqlx::query_scalar("SELECT count(*) FROM dashboard_daily WHERE run_id = $1")
                .bind(old["id"].as_i64().unwrap())
                .fetch_one(&pool)
                .await
                .unwrap();
        assert_eq!(left, 0, "its results are deleted with it");
    }
    assert_eq!(service.runs().await.len(), 3);

    // Bad requests are 400/401 with JSON.
    let post = |body: Value, token: Option<&str>| {
        let mut request = service
            .client
            .post(format!("{}/api/replays", service.base))
            .json(&body);
        if let Some(t) = token {
            request = request.bearer_auth(t);
        }
        request.send()
    };
    assert_eq!(
        post(json!({"from": "earliest"}), None)
            .await
            .unwrap()
            .status(),
        401
    );
    assert_eq!(
        post(json!({"from": "yesterday"}), Some(&service.token))
            .await
            .unwrap()
            .status(),
        400
    );
    assert_eq!(
        service
            .get("/api/products/top?day=2026-11-10&by=likes")
            .await
            .0,
        400
    );
    assert_eq!(
        service
            .get("/api/metrics/daily?from=2026-11-13&to=2026-11-10")
            .await
            .0,
        400
    );
    assert_eq!(service.get("/api/replays/999999").await.0, 404);
    service.stop().await;
}
