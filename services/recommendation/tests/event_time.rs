//! Event time done right: a backfill decades old ranks exactly like
//! today's data, fill-ins say where they come
//! from, and an event time ahead of the record's own timestamp is clamped.

mod common;

use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use rdkafka::producer::FutureRecord;
use serde_json::Value;
use shared::testkit::TestEnv;

/// A small stream with distinct scores: several users, actions and times
/// over a month, so that decay changes the order (a later view beats an
/// earlier purchase on some pairs).
fn dataset(shift: TimeDelta) -> Vec<(String, String, DateTime<Utc>)> {
    let start: DateTime<Utc> = "2026-10-01T00:00:00Z".parse().unwrap();
    let events = [
        ("u1", "a", "view", 0),
        ("u1", "b", "purchase", 1),
        ("u1", "c", "view", 2),
        ("u2", "a", "click", 3),
        ("u2", "c", "view", 20),
        ("u2", "d", "add_to_cart", 21),
        ("u3", "c", "add_to_cart", 30),
        ("u3", "a", "view", 31),
        ("u4", "e", "purchase", 10),
        ("u4", "d", "view", 29),
        ("u5", "a", "view", 28),
    ];
    events
        .iter()
        .map(|&(user, product, action, day)| {
            let at = start + shift + TimeDelta::days(day);
            let ts = at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
            (
                user.to_owned(),
                common::interaction(user, product, action, &ts),
                at,
            )
        })
        .collect()
}

/// Produces `events` with each record's timestamp set to its event time,
/// as the gateway does (a backfill's records are stamped with their times).
async fn produce_stamped(env: &TestEnv, events: &[(String, String, DateTime<Utc>)]) {
    let producer = shared::kafka::producer(&env.settings.kafka).unwrap();
    for (key, payload, ts) in events {
        let record = FutureRecord::to(&env.settings.kafka.events_topic)
            .key(key)
            .payload(payload)
            .timestamp(ts.timestamp_millis());
        producer
            .send(record, Duration::from_secs(30))
            .await
            .map_err(|(e, _)| e)
            .expect("produced");
    }
}

/// Every answer of the API that ranks, as (product, source) lists, and the
/// consumer group that applied the events.
async fn rankings(shift: TimeDelta, name: &str) -> (Vec<Vec<(String, String)>>, String) {
    let env = TestEnv::new(name).await;
    let events = dataset(shift);
    produce_stamped(&env, &events).await;
    let group = env.unique("rec-time");
    let service = applied(&env, &group, events.len()).await;
    let client = reqwest::Client::new();
    let token = env.settings.auth.admin_token.expose().to_owned();
    let mut out = Vec::new();
    for path in [
        "/users/u5/recommendations?limit=5",
        "/users/u1/recommendations?limit=5",
        "/users/nobody/recommendations?limit=5",
        "/products/a/similar?limit=5",
        "/products/d/similar?limit=5",
    ] {
        let answer: Value = client
            .get(service.url(path))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let items = answer["items"].as_array().unwrap();
        for item in items {
            let score = item["score"].as_f64().unwrap();
            assert!(
                score.is_finite() && score > 0.0,
                "{path} at {shift}: every score is a positive number, not {score}: {answer}"
            );
        }
        out.push(
            items
                .iter()
                .map(|i| {
                    (
                        i["product_id"].as_str().unwrap().to_owned(),
                        i["source"].as_str().unwrap().to_owned(),
                    )
                })
                .collect(),
        );
    }
    service.stop().await;
    (out, group)
}

/// The service in-process as `group`, once it applied `count` events.
async fn applied(env: &TestEnv, group: &str, count: usize) -> common::InProcess {
    let url = env.settings.database.url.expose().to_owned();
    let service = common::InProcess::start(env, &url, group).await;
    let topic = &env.settings.kafka.events_topic;
    common::wait_applied(
        &env.pool().await,
        group,
        topic,
        count as i64,
        Duration::from_secs(60),
    )
    .await;
    service
}

/// A sample of the process's metrics for `consumer`.
fn sample(name: &str, consumer: &str) -> f64 {
    let text = shared::http::ops::metrics_handle().render();
    shared::testkit::metric(&text, name, &[&format!("consumer=\"{consumer}\"")])
}

/// The clamp counter is process-wide and unlabelled: the tests of this
/// binary take turns, so its delta is one test's alone.
static TURNS: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[tokio::test(flavor = "multi_thread")]
async fn the_same_interactions_shifted_by_decades_rank_the_same() {
    let _turn = TURNS.lock().await;
    let (today, _) = rankings(TimeDelta::zero(), "rec_time_now").await;
    // Worked out from the dataset (weight x 2^(day / 7)): a's neighbours
    // are d (u2's add_to_cart on day 21: 4 x 2^3 = 32), c (u1, u2, u3:
    // 2^(2/7) + 2^(20/7) + 2^(31/7) = 30.1), b (u1's purchase on day 1:
    // 8 x 2^(1/7) = 8.8). u5 saw only `a`, so gets those three, then popular
    // fill-ins; `nobody` gets popular products only.
    let names = |list: &[(String, String)]| list.iter().map(|(p, _)| p.clone()).collect::<Vec<_>>();
    assert_eq!(names(&today[3]), ["d", "c", "b"], "similar to a: {today:?}");
    assert!(today[2].iter().all(|(_, s)| s == "popular"), "{today:?}");
    assert_eq!(today[2].len(), 5, "{today:?}");
    let u5 = &today[0];
    assert_eq!(names(&u5[..3]), ["d", "c", "b"], "{today:?}");
    assert!(u5[..3].iter().all(|(_, s)| s == "similar"), "{today:?}");
    assert!(
        u5.iter().any(|(_, s)| s == "popular"),
        "a thin history is filled up with popular products, marked so: {u5:?}"
    );
    let (past, group) = rankings(-TimeDelta::days(365 * 30), "rec_time_past").await;
    assert_eq!(past, today, "a backfill 30 years back ranks like today");
    // Commit latency counts from the fetch: a backfill is not 30 years late
    // (measured from event time, each event would add ~9.5e8 s). How far
    // behind in event time the worker is, is a gauge of its own.
    let count = sample("kappa_sink_fetch_to_commit_seconds_count", &group);
    let sum = sample("kappa_sink_fetch_to_commit_seconds_sum", &group);
    assert!(count >= 11.0, "{count} records measured");
    assert!(sum / count < 60.0, "mean fetch-to-commit {} s", sum / count);
    let lag = sample("kappa_sink_event_time_lag_seconds", &group);
    assert!(lag > 29.0 * 365.0 * 86_400.0, "event-time lag {lag} s");
    // Twenty years ahead cannot go through a broker today: Kafka refuses
    // record timestamps more than an hour ahead of its clock
    // (log.message.timestamp.after.max.ms), and an event time that far ahead
    // of its record is skew by definition (dead-lettered by the parser). The
    // model's side of it is `model::tests::a_shifted_dataset_ranks_the_same`.
}

#[tokio::test(flavor = "multi_thread")]
async fn an_event_time_ahead_of_its_record_is_clamped_and_counted() {
    let _turn = TURNS.lock().await;
    let env = TestEnv::new("rec_clamp").await;
    // The record's timestamp is when the producer sent it (now); the event
    // claims 50 minutes later: inside the parser's skew, so it is applied,
    // but at the record's time.
    let ahead =
        (Utc::now() + TimeDelta::minutes(50)).to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let events = vec![(
        "u1".to_owned(),
        common::interaction("u1", "a", "view", &ahead),
    )];
    let clamped = || {
        let text = shared::http::ops::metrics_handle().render();
        shared::testkit::metric(&text, "kappa_recommendation_event_time_clamped_total", &[])
    };
    let before = clamped();
    let sent = Utc::now();
    common::produce(&env.settings.kafka, &events).await;
    let group = env.unique("rec-clamp");
    let service = applied(&env, &group, 1).await;
    let pool = env.pool().await;
    let last: DateTime<Utc> = sqlx::query_scalar("SELECT max(last_event_at) FROM rec_partitions")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert!(
        last >= sent - TimeDelta::seconds(5) && last <= Utc::now(),
        "the event counts at its record's time ({last}), not at {ahead}"
    );
    assert_eq!(clamped() - before, 1.0);
    service.stop().await;
}
