//! Triggers: the schedule fires; the threshold (in records and in bytes)
//! fires on enough new data and not again without more; automatic triggers
//! during a run coalesce into one run served after it; two instances never
//! replay at the same time.

mod common;

use std::time::Duration;

use chrono::{DateTime, Utc};
use common::Service;
use futures::future::join_all;
use rdkafka::producer::FutureRecord;
use serde_json::{json, Value};
use shared::testkit::TestEnv;
use sqlx::Connection;

/// The payload bytes [`produce`] writes for `count` records.
fn produce_bytes(count: usize) -> u64 {
    payloads(count).iter().map(|(_, p)| p.len() as u64).sum()
}

/// The (key, payload) of [`produce`]'s records.
fn payloads(count: usize) -> Vec<(String, String)> {
    (0..count)
        .map(|i| {
            let user = format!("u{}", i % 97);
            let payload = format!(
                r#"{{"type":"interaction","user_id":"{user}","product_id":"p{}","action":"view","ts":"2026-11-1{}T10:00:00Z"}}"#,
                i % 31,
                i % 5
            );
            (user, payload)
        })
        .collect()
}

/// Produces `count` interactions (the same for the same `count`: the
/// records are made from their index).
async fn produce(env: &TestEnv, count: usize) {
    let producer = shared::kafka::producer(&env.settings.kafka).unwrap();
    let topic = &env.settings.kafka.events_topic;
    let messages = payloads(count);
    for chunk in messages.chunks(20_000) {
        let sends = chunk.iter().map(|(k, p)| {
            producer.send(
                FutureRecord::to(topic).key(k).payload(p),
                Duration::from_secs(30),
            )
        });
        for result in join_all(sends).await {
            result.map_err(|(e, _)| e).unwrap();
        }
    }
}

fn of(runs: &[Value], trigger: &str) -> Vec<Value> {
    runs.iter()
        .filter(|r| r["trigger"] == trigger)
        .cloned()
        .collect()
}

fn done(run: &Value) -> bool {
    run["state"] == "succeeded" || run["state"] == "failed"
}

fn succeeded(trigger: &'static str) -> impl Fn(&[Value]) -> bool {
    move |runs| of(runs, trigger).iter().any(|r| r["state"] == "succeeded")
}

#[tokio::test(flavor = "multi_thread")]
async fn the_schedule_and_the_thresholds_fire() {
    let env = TestEnv::new("dash_triggers").await;
    produce(&env, 100).await;
    let mut config = common::config();
    config.schedule = "*/2 * * * * *".into();
    let scheduled = Service::start(&env, config).await;
    let (_, status) = scheduled.get("/api/triggers").await;
    assert_eq!(status["schedule"], "*/2 * * * * *");
    assert!(status["next_scheduled_at"].is_string(), "{status}");
    assert_eq!(status["next_timed"]["trigger"], "schedule", "{status}");
    let runs = scheduled
        .wait_runs("a scheduled run", succeeded("schedule"))
        .await;
    scheduled.stop().await;
    // Nothing to continue from: the first automatic run is full.
    let first = of(&runs, "schedule").remove(0);
    assert_eq!(first["kind"], "full", "{first}");

    // Records: the scheduled run covered all 100 records, so 0 are new: below 150.
    let mut records = common::config();
    records.threshold_events = 150;
    let service = Service::start(&env, records.clone()).await;
    let status = service.threshold_checks(2).await;
    assert_eq!(
        (&status["new_records"], &status["records_to_threshold"]),
        (&json!(0), &json!(150)),
        "{status}"
    );
    assert_eq!(status["since_run"], first["id"], "{status}");
    assert_eq!(status["next_run_kind"], "incremental", "{status}");
    assert!(of(&service.runs().await, "threshold").is_empty());
    // 100 new records: still below.
    produce(&env, 100).await;
    let status = service.threshold_checks(2).await;
    assert_eq!(status["new_records"], 100, "{status}");
    assert_eq!(
        status["new_bytes"],
        Value::Null,
        "the byte rule is off: {status}"
    );
    assert!(of(&service.runs().await, "threshold").is_empty());
    // 200 new: above; one run. Produced while no instance checks: a check
    // in the middle of the sends would start a run on part of them (150 of
    // the 200 are enough) and leave the rest new.
    service.stop().await;
    produce(&env, 100).await;
    let service = Service::start(&env, records).await;
    let runs = service
        .wait_runs("a threshold run", succeeded("threshold"))
        .await;
    assert_eq!(of(&runs, "threshold").len(), 1);
    // Nothing new since that run: no second one, however often it checks.
    let status = service.threshold_checks(3).await;
    assert_eq!(status["new_records"], 0, "{status}");
    assert_eq!(of(&service.runs().await, "threshold").len(), 1);
    service.stop().await;

    // The threshold's run continued the scheduled one: it read the 200 new
    // records (twice the same hundred) and nothing before them.
    let last = of(&runs, "threshold").pop().unwrap();
    let hundred = produce_bytes(100);
    assert_eq!(
        (&last["kind"], &last["base_run_id"]),
        (&json!("incremental"), &first["id"]),
        "{last}"
    );
    assert_eq!(
        (last["records"].as_u64(), last["bytes"].as_u64()),
        (Some(200), Some(2 * hundred)),
        "{last}"
    );

    // Bytes: the payload bytes appended since, as read, against a
    // threshold of one and a half times a hundred records' bytes.
    let mut config = common::config();
    config.threshold_bytes = hundred * 3 / 2;
    let service = Service::start(&env, config).await;
    produce(&env, 100).await;
    let status = service.threshold_checks(2).await;
    assert_eq!(status["new_bytes"], hundred, "{status}");
    assert_eq!(
        status["bytes_to_threshold"],
        hundred * 3 / 2 - hundred,
        "{status}"
    );
    assert!(of(&service.runs().await, "threshold").len() == 1);
    produce(&env, 100).await;
    let runs = service
        .wait_runs("a run on the bytes threshold", |runs| {
            of(runs, "threshold").len() == 2 && of(runs, "threshold").iter().all(done)
        })
        .await;
    assert!(of(&runs, "threshold")
        .iter()
        .all(|r| r["state"] == "succeeded" && r["kind"] == "incremental"));
    service.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_interval_fires_after_the_last_successful_run() {
    let env = TestEnv::new("dash_interval").await;
    produce(&env, 50).await;
    let mut config = common::config();
    config.interval = "2s".into();
    let service = Service::start(&env, config).await;
    // Nothing succeeded yet: due at once.
    let runs = service
        .wait_runs("a first interval run", succeeded("interval"))
        .await;
    let first = of(&runs, "interval").remove(0);
    assert_eq!(
        (&first["kind"], &first["records"]),
        (&json!("full"), &json!(50))
    );
    // The next one is due two seconds after that run finished, and continues it.
    let finished: DateTime<Utc> = first["finished_at"].as_str().unwrap().parse().unwrap();
    let (_, status) = service.get("/api/triggers").await;
    assert_eq!(status["interval"], "2s");
    assert_eq!(status["next_timed"]["trigger"], "interval", "{status}");
    produce(&env, 7).await;
    let runs = service
        .wait_runs("a second interval run", |runs| {
            of(runs, "interval")
                .iter()
                .filter(|r| r["state"] == "succeeded")
                .count()
                == 2
        })
        .await;
    let second = of(&runs, "interval").pop().unwrap();
    let started: DateTime<Utc> = second["requested_at"].as_str().unwrap().parse().unwrap();
    assert!(
        started >= finished + chrono::TimeDelta::seconds(2),
        "queued {started}, two seconds after {finished}?"
    );
    assert_eq!(
        (&second["kind"], &second["base_run_id"], &second["records"]),
        (&json!("incremental"), &first["id"], &json!(7)),
        "{second}"
    );
    service.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn triggers_during_a_run_coalesce_and_instances_never_overlap() {
    let env = TestEnv::new("dash_lock").await;
    produce(&env, 20_000).await;
    // Keep every run of the test (retention would delete the oldest).
    let mut config = common::config();
    config.keep_runs = 10;
    let first = Service::start(&env, config.clone()).await;
    let second = Service::start(&env, config).await;
    let pool = env.pool().await;

    // Hold the run at its very end: storing results needs this table, so the
    // run stays `running` until the lock is released. The triggers below then
    // certainly fire during a run.
    let mut holder = sqlx::PgConnection::connect(env.settings.database.url.expose())
        .await
        .unwrap();
    sqlx::query("BEGIN").execute(&mut holder).await.unwrap();
    sqlx::query("LOCK TABLE dashboard_current IN EXCLUSIVE MODE")
        .execute(&mut holder)
        .await
        .unwrap();

    let response = first
        .client
        .post(format!("{}/api/replays", first.base))
        .bearer_auth(&first.token)
        .json(&json!({"from": "earliest"}))
        .send()
        .await
        .unwrap();
    let manual = response.json::<Value>().await.unwrap()["id"]
        .as_i64()
        .unwrap();
    let running = || async {
        sqlx::query_scalar::<_, String>("SELECT state FROM replay_runs WHERE id = $1")
            .bind(manual)
            .fetch_one(&pool)
            .await
            .unwrap()
    };
    first
        .wait_runs("the manual run to read its whole range", |runs| {
            runs.iter().any(|r| {
                r["id"] == manual && r["state"] == "running" && r["progress"]["fraction"] == 1.0
            })
        })
        .await;
    // Three automatic triggers while it runs: one waiting run serves them all.
    assert_eq!(running().await, "running");
    let fired: Vec<Option<i64>> = vec![
        dashboard::store::enqueue_automatic(&pool, dashboard::store::Trigger::Schedule)
            .await
            .unwrap(),
        dashboard::store::enqueue_automatic(&pool, dashboard::store::Trigger::Threshold)
            .await
            .unwrap(),
        dashboard::store::enqueue_automatic(&pool, dashboard::store::Trigger::Schedule)
            .await
            .unwrap(),
    ];
    assert_eq!(fired.iter().filter(|f| f.is_some()).count(), 1, "{fired:?}");
    // And two more manual requests, through the other instance.
    for _ in 0..2 {
        second
            .client
            .post(format!("{}/api/replays", second.base))
            .bearer_auth(&second.token)
            .json(&json!({"from": "earliest"}))
            .send()
            .await
            .unwrap();
    }
    assert_eq!(
        running().await,
        "running",
        "all of it happened during the run"
    );
    sqlx::query("ROLLBACK").execute(&mut holder).await.unwrap();

    let runs = first
        .wait_runs("every run to finish", |runs| {
            runs.len() == 4 && runs.iter().all(done)
        })
        .await;
    assert!(runs.iter().all(|r| r["state"] == "succeeded"), "{runs:?}");
    assert_eq!(runs.iter().filter(|r| r["trigger"] != "manual").count(), 1);
    // Never two at once, across both instances.
    let mut spans: Vec<(DateTime<Utc>, DateTime<Utc>)> = runs
        .iter()
        .map(|r| {
            (
                r["started_at"].as_str().unwrap().parse().unwrap(),
                r["finished_at"].as_str().unwrap().parse().unwrap(),
            )
        })
        .collect();
    spans.sort();
    assert!(
        spans.windows(2).all(|w| w[0].1 <= w[1].0),
        "overlapping runs: {spans:?}"
    );
    // The automatic run was served after the run it arrived during.
    let automatic = runs.iter().find(|r| r["trigger"] != "manual").unwrap();
    let manual_run = runs.iter().find(|r| r["id"] == manual).unwrap();
    assert!(
        automatic["started_at"].as_str().unwrap() >= manual_run["finished_at"].as_str().unwrap()
    );
    first.stop().await;
    second.stop().await;
}
