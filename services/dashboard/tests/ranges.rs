//! Ranges in event time: an old backfill does not break the default daily
//! answer (the newest 30 days with data), explicit ranges keep their
//! ten-year limit and name the field they refuse, totals carry only what
//! adds up over days; a replay over a custom range is stored and readable by
//! its id but never replaces the served metrics, and impossible replay
//! ranges are refused before they reach the broker.

use std::collections::BTreeMap;
use std::time::Duration;

mod common;

use chrono::NaiveDate;
use common::Service;
use futures::future::join_all;
use rdkafka::producer::FutureRecord;
use serde_json::{json, Value};
use shared::testkit::{key_of, TestEnv};

/// Produces interactions stamped (event time and Kafka timestamp) `ts`.
async fn produce(env: &TestEnv, events: &[(String, String)]) {
    let producer = shared::kafka::producer(&env.settings.kafka).unwrap();
    let topic = &env.settings.kafka.events_topic;
    let keys: Vec<String> = events.iter().map(|(_, p)| key_of(p)).collect();
    let sends = events.iter().zip(&keys).map(|((ts, payload), key)| {
        let millis = chrono::DateTime::parse_from_rfc3339(ts)
            .unwrap()
            .timestamp_millis();
        producer.send(
            FutureRecord::to(topic)
                .key(key)
                .payload(payload)
                .timestamp(millis),
            Duration::from_secs(30),
        )
    });
    for result in join_all(sends).await {
        result.map_err(|(e, _)| e).unwrap();
    }
}

/// A view (or a purchase of `price` cents) by `user` at `ts`.
fn interaction(ts: &str, user: &str, price: Option<u64>) -> (String, String) {
    let action = match price {
        Some(p) => format!(r#""action":"purchase","price_cents":{p}"#),
        None => r#""action":"view""#.to_owned(),
    };
    let payload = format!(
        r#"{{"type":"interaction","user_id":"{user}","product_id":"p1",{action},"ts":"{ts}"}}"#
    );
    (ts.to_owned(), payload)
}

fn date(text: &str) -> NaiveDate {
    text.parse().unwrap()
}

/// The days of an answer that carry data (every stored day has an active user).
fn with_data(metrics: &Value) -> Vec<String> {
    metrics["days"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| d["active_users"].as_u64().unwrap() > 0)
        .map(|d| d["day"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_default_range_is_the_newest_30_days_with_data_despite_a_backfill() {
    let env = TestEnv::new("dash_default_range").await;
    // A backfilled day in 1990, then 35 days with data, every other day
    // from 2026-08-01 (the days between stay empty). All in the past: the
    // broker refuses timestamps more than an hour ahead of its clock.
    let first = date("2026-08-01");
    let data_days: Vec<NaiveDate> = (0..35).map(|i| first + chrono::Days::new(2 * i)).collect();
    let mut events = vec![interaction("1990-03-14T09:00:00Z", "old", Some(990))];
    // Per day (views, purchases, revenue), counted independently.
    let mut expected: BTreeMap<NaiveDate, (u64, u64, u64)> = BTreeMap::new();
    for (i, day) in data_days.iter().enumerate() {
        let e = expected.entry(*day).or_default();
        for n in 0..(3 + i % 4) {
            let ts = format!("{day}T10:{n:02}:00Z");
            events.push(interaction(&ts, &format!("u{}", n % 3), None));
            e.0 += 1;
        }
        let price = 100_000 + i as u64;
        events.push(interaction(&format!("{day}T11:00:00Z"), "u1", Some(price)));
        e.1 += 1;
        e.2 += price;
    }
    produce(&env, &events).await;
    let service = Service::start(&env, common::config()).await;
    let (run, _) = service.replay(json!({"from": "earliest"})).await;
    assert_eq!(run["state"], "succeeded", "{run}");

    // No range: from the 30th newest day with data to the newest, every day
    // in between present (the empty ones as zeros); the 1990 day is not in it.
    let (status, metrics) = service.get("/api/metrics/daily").await;
    assert_eq!(status, 200, "{metrics}");
    let newest30: Vec<String> = data_days[5..].iter().map(|d| d.to_string()).collect();
    assert_eq!(with_data(&metrics), newest30, "{metrics}");
    let (from, to) = (data_days[5], data_days[34]);
    assert_eq!(
        (metrics["from"].as_str(), metrics["to"].as_str()),
        (
            Some(from.to_string().as_str()),
            Some(to.to_string().as_str())
        )
    );
    let days = metrics["days"].as_array().unwrap();
    assert_eq!(
        days.len() as i64,
        (to - from).num_days() + 1,
        "gaps are explicit"
    );
    assert_eq!(days[1]["views"], 0, "{}", days[1]);

    // Totals: the sums of the range's days; distinct users do not add up
    // over days, so totals do not carry them (rather than a wrong 0).
    let totals = &metrics["totals"];
    let sum = |f: fn(&(u64, u64, u64)) -> u64| -> u64 {
        expected.range(from..=to).map(|(_, e)| f(e)).sum()
    };
    assert_eq!(totals["views"], sum(|e| e.0), "{totals}");
    assert_eq!(totals["purchases"], sum(|e| e.1), "{totals}");
    assert_eq!(totals["revenue_cents"], sum(|e| e.2), "{totals}");
    assert_eq!(totals["days_with_data"], 30, "{totals}");
    for field in ["active_users", "viewing_users", "purchasing_users"] {
        assert!(totals.get(field).is_none(), "{field} in {totals}");
    }

    // One end given: the other follows the same rule.
    let (_, until) = service.get("/api/metrics/daily?to=2026-08-20").await;
    assert_eq!(until["from"], "2026-08-01", "{until}");
    assert_eq!(with_data(&until).len(), 10, "{until}");
    let (_, since) = service.get("/api/metrics/daily?from=2026-10-01").await;
    assert_eq!(
        (since["from"].as_str(), since["to"].as_str()),
        (Some("2026-10-01"), Some(to.to_string().as_str()))
    );

    // The backfill is there for an explicit range.
    let (_, old) = service
        .get("/api/metrics/daily?from=1990-03-14&to=1990-03-14")
        .await;
    assert_eq!(
        (
            old["days"][0]["purchases"].as_u64(),
            old["totals"]["revenue_cents"].as_u64()
        ),
        (Some(1), Some(990)),
        "{old}"
    );

    // An explicit range keeps the ten-year limit, and says which field.
    for (query, field) in [
        ("from=1990-01-01&to=2026-10-08", "to"),
        ("from=1990-01-01", "from"),
        ("from=2026-11-13&to=2026-11-10", "to"),
    ] {
        let (status, error) = service.get(&format!("/api/metrics/daily?{query}")).await;
        assert_eq!(
            (status, error["field"].as_str()),
            (400, Some(field)),
            "{query}: {error}"
        );
        assert!(
            error["message"]
                .as_str()
                .unwrap()
                .contains(&format!("`{field}`")),
            "{error}"
        );
    }
    service.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_partial_replay_is_stored_by_id_and_never_becomes_current() {
    let env = TestEnv::new("dash_partial").await;
    let events: Vec<(String, String)> = ["2026-11-10", "2026-11-11", "2026-11-12"]
        .iter()
        .flat_map(|day| (0..5).map(move |n| interaction(&format!("{day}T08:0{n}:00Z"), "u1", None)))
        .collect();
    produce(&env, &events).await;
    let service = Service::start(&env, common::config()).await;
    let (full, _) = service.replay(json!({"from": "earliest"})).await;
    assert_eq!(full["state"], "succeeded", "{full}");
    let (_, served) = service.get("/api/metrics/daily").await;
    assert_eq!(served["run_id"], full["id"]);

    // Up to 1970: accepted, reads nothing, and changes nothing served.
    let (empty, _) = service
        .replay(json!({"from": "earliest", "to": "1970-01-01T00:00:00Z"}))
        .await;
    assert_eq!(
        (empty["state"].as_str(), empty["records"].as_i64()),
        (Some("succeeded"), Some(0)),
        "{empty}"
    );
    let (_, after) = service.get("/api/metrics/daily").await;
    assert_eq!(
        after, served,
        "a partial run does not replace the served metrics"
    );
    let (_, by_id) = service
        .get(&format!("/api/metrics/daily?run={}", empty["id"]))
        .await;
    assert_eq!(
        (by_id["run_id"].clone(), by_id["days"].clone()),
        (empty["id"].clone(), json!([])),
        "{by_id}"
    );

    // From a time: its own numbers, by id; the full run stays current.
    let (later, _) = service
        .replay(json!({"from": "2026-11-11T00:00:00Z"}))
        .await;
    assert_eq!(later["state"], "succeeded", "{later}");
    let (_, partial) = service
        .get(&format!("/api/metrics/daily?run={}", later["id"]))
        .await;
    assert_eq!(partial["from"], "2026-11-11", "{partial}");
    assert_eq!(partial["totals"]["views"], 10, "{partial}");
    assert_eq!(service.get("/api/metrics/daily").await.1, served);
    let (_, listed) = service.get(&format!("/api/replays/{}", later["id"])).await;
    assert_eq!(listed["current"], false, "{listed}");
    let (_, listed) = service.get(&format!("/api/replays/{}", full["id"])).await;
    assert_eq!(listed["current"], true, "{listed}");

    // More partial runs than are kept: the current run is kept regardless.
    for _ in 0..3 {
        let (run, _) = service
            .replay(json!({"from": "earliest", "to": "2026-11-11T00:00:00Z"}))
            .await;
        assert_eq!(run["state"], "succeeded", "{run}");
    }
    assert_eq!(service.get("/api/metrics/daily").await.1, served);
    let (status, _) = service.get(&format!("/api/replays/{}", full["id"])).await;
    assert_eq!(status, 200, "the current run outlives retention");

    // Impossible ranges are 400 naming the field, before any run is queued.
    let runs = service.runs().await.len();
    for (body, field) in [
        (json!({"from": "0001-01-01T00:00:00Z"}), "from"),
        (json!({"from": "1969-12-31T23:59:59Z"}), "from"),
        (
            json!({"from": "earliest", "to": "1969-12-31T23:59:59Z"}),
            "to",
        ),
        (
            json!({"from": "2026-11-12T00:00:00Z", "to": "2026-11-11T00:00:00Z"}),
            "to",
        ),
        (json!({"from": "earliest", "to": "yesterday"}), "to"),
    ] {
        let response = service
            .client
            .post(format!("{}/api/replays", service.base))
            .bearer_auth(&service.token)
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        let error: Value = response.json().await.unwrap();
        assert_eq!(
            (status, error["field"].as_str()),
            (400, Some(field)),
            "{body}: {error}"
        );
        let message = error["message"].as_str().unwrap();
        assert!(message.contains(&format!("`{field}`")), "{error}");
        assert!(!message.to_lowercase().contains("librdkafka"), "{error}");
    }
    assert_eq!(service.runs().await.len(), runs, "nothing was queued");
    let (status, _) = service.get("/api/metrics/daily?run=999999").await;
    assert_eq!(status, 404);
    service.stop().await;
}
