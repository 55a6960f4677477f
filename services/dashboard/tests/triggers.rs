//! Triggers: the schedule fires; the threshold fires on enough new data and
//! not again without more; automatic triggers during a run coalesce into one
//! run served after it; two instances never replay at the same time.

mod common;

use std::time::Duration;

use chrono::{DateTime, Utc};
use common::Service;
use futures::future::join_all;
use rdkafka::producer::FutureRecord;
use serde_json::{json, Value};
use shared::testkit::TestEnv;

async fn produce(env: &TestEnv, count: usize) {
    let producer = shared::kafka::producer(&env.settings.kafka).unwrap();
    let topic = &env.settings.kafka.events_topic;
    let messages: Vec<(String, String)> = (0..count)
        .map(|i| {
            let user = format!("u{}", i % 97);
            let payload = format!(
                r#"{{"type":"interaction","user_id":"{user}","product_id":"p{}","action":"view","ts":"2026-11-1{}T10:00:00Z"}}"#,
                i % 31,
                i % 5
            );
            (user, payload)
        })
        .collect();
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

#[tokio::test(flavor = "multi_thread")]
async fn the_schedule_and_the_threshold_fire() {
    let env = TestEnv::new("dash_triggers").await;
    produce(&env, 100).await;
    let mut config = common::config();
    config.schedule = "*/2 * * * * *".into();
    let scheduled = Service::start(&env, config).await;
    scheduled
        .wait_runs("a scheduled run", |runs| {
            of(runs, "schedule")
                .iter()
                .any(|r| r["state"] == "succeeded")
        })
        .await;
    scheduled.stop().await;

    let mut config = common::config();
    config.threshold_events = 150;
    let service = Service::start(&env, config).await;
    // 100 records since no run yet: below the threshold.
    tokio::time::sleep(Duration::from_millis(800)).await;
    let before = of(&service.runs().await, "threshold").len();
    assert_eq!(before, 0, "no threshold run below the threshold");
    let last = of(&service.runs().await, "schedule")
        .last()
        .cloned()
        .unwrap();
    assert!(done(&last));
    produce(&env, 200).await;
    let runs = service
        .wait_runs("a threshold run", |runs| {
            of(runs, "threshold")
                .iter()
                .any(|r| r["state"] == "succeeded")
        })
        .await;
    assert_eq!(of(&runs, "threshold").len(), 1);
    // Nothing new: no second threshold run.
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(of(&service.runs().await, "threshold").len(), 1);
    service.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn triggers_during_a_run_coalesce_and_instances_never_overlap() {
    let env = TestEnv::new("dash_lock").await;
    produce(&env, 200_000).await;
    // Keep every run of the test (retention would delete the oldest).
    let mut config = common::config();
    config.keep_runs = 10;
    let first = Service::start(&env, config.clone()).await;
    let second = Service::start(&env, config).await;
    let pool = env.pool().await;

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
    first
        .wait_runs("the manual run to start", |runs| {
            runs.iter()
                .any(|r| r["id"] == manual && r["state"] != "queued")
        })
        .await;
    // Three automatic triggers while it runs: one waiting run serves them all.
    let fired: Vec<Option<i64>> = vec![
        dashboard::runs::enqueue_automatic(&pool, "schedule")
            .await
            .unwrap(),
        dashboard::runs::enqueue_automatic(&pool, "threshold")
            .await
            .unwrap(),
        dashboard::runs::enqueue_automatic(&pool, "schedule")
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
