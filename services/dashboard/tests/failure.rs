//! A replay killed midway, or one that fails with an error, leaves the
//! previous results served; a killed run is marked failed by the next runner
//! that takes the lock.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::Service;
use futures::future::join_all;
use rdkafka::producer::FutureRecord;
use serde_json::{json, Value};
use shared::testkit::{free_port, key_of, TestEnv};

async fn produce(env: &TestEnv, count: usize) {
    let producer = shared::kafka::producer(&env.settings.kafka).unwrap();
    let topic = &env.settings.kafka.events_topic;
    let payloads: Vec<String> = (0..count)
        .map(|i| format!(r#"{{"type":"interaction","user_id":"u{}","product_id":"p{}","action":"view","ts":"2026-11-1{}T08:00:00Z"}}"#, i % 211, i % 41, i % 7))
        .collect();
    let keys: Vec<String> = payloads.iter().map(|p| key_of(p)).collect();
    for (chunk, keys) in payloads.chunks(20_000).zip(keys.chunks(20_000)) {
        let sends = chunk.iter().zip(keys).map(|(p, key)| {
            producer.send(
                FutureRecord::to(topic).key(key).payload(p),
                Duration::from_secs(30),
            )
        });
        for result in join_all(sends).await {
            result.map_err(|(e, _)| e).unwrap();
        }
    }
}

/// How a replay in progress is interrupted.
#[derive(Clone, Copy, PartialEq)]
enum Stop {
    /// SIGKILL: the next runner marks the run failed.
    Kill,
    /// SIGTERM: the process ends the run itself (failed), within its bound.
    Terminate,
}

#[tokio::test(flavor = "multi_thread")]
async fn a_replay_killed_midway_changes_nothing_served() {
    interrupted_replay("dash_kill", Stop::Kill).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_during_a_replay_ends_within_the_bound_and_changes_nothing_served() {
    interrupted_replay("dash_term", Stop::Terminate).await;
}

async fn interrupted_replay(name: &str, stop: Stop) {
    let env = TestEnv::new(name).await;
    produce(&env, 1_000).await;
    let service = Service::start(&env, common::config()).await;
    let (good, _) = service.replay(json!({"from": "earliest"})).await;
    assert_eq!(good["state"], "succeeded");
    let (_, before) = service.get("/api/metrics/daily").await;
    service.stop().await;

    // Enough data that the replay takes a while.
    produce(&env, 400_000).await;
    let port = free_port();
    let kafka = &env.settings.kafka;
    let mut child = shared::testkit::KillOnDrop(
        Command::new(env!("CARGO_BIN_EXE_dashboard"))
            .env("KAPPA__KAFKA__BROKERS", &kafka.brokers)
            .env("KAPPA__KAFKA__EVENTS_TOPIC", &kafka.events_topic)
            .env("KAPPA__DATABASE__URL", env.settings.database.url.expose())
            .env(
                "KAPPA__AUTH__ADMIN_TOKEN",
                env.settings.auth.admin_token.expose(),
            )
            .env("KAPPA__DASHBOARD__ADDR", format!("127.0.0.1:{port}"))
            .env("KAPPA__DASHBOARD__SCHEDULE", "")
            .env("KAPPA__SHUTDOWN__GRACE_MS", "3000")
            .env("KAPPA__LOG__LEVEL", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::new();
    let until = Instant::now() + Duration::from_secs(30);
    let id = loop {
        let posted = client
            .post(format!("{base}/api/replays"))
            .bearer_auth(env.settings.auth.admin_token.expose())
            .json(&json!({"from": "earliest"}))
            .send()
            .await;
        if let Ok(response) = posted {
            break response.json::<Value>().await.unwrap()["id"]
                .as_i64()
                .unwrap();
        }
        assert!(Instant::now() < until, "the dashboard did not start");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    // Kill it once the replay is well under way.
    let until = Instant::now() + Duration::from_secs(60);
    loop {
        assert!(Instant::now() < until, "the replay never got under way");
        let run: Value = client
            .get(format!("{base}/api/replays/{id}"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let fraction = run["progress"]["fraction"].as_f64().unwrap_or(0.0);
        assert_ne!(
            run["state"], "succeeded",
            "the replay finished before it could be killed"
        );
        if run["state"] == "running" && fraction > 0.05 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    match stop {
        Stop::Kill => {
            child.kill().unwrap();
            child.wait().unwrap();
        }
        Stop::Terminate => {
            let started = Instant::now();
            Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status()
                .unwrap();
            while child.try_wait().unwrap().is_none() {
                // Generous: the point is that it stops, on a loaded box too.
                assert!(
                    started.elapsed() < Duration::from_secs(30),
                    "still running 30 s after SIGTERM"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }

    // The run is marked failed (by the next runner after a kill, by the
    // process itself after SIGTERM); what is served has not changed.
    let service = Service::start(&env, common::config()).await;
    let runs = service
        .wait_runs("the interrupted run to be marked failed", |runs| {
            runs.iter().any(|r| r["id"] == id && r["state"] == "failed")
        })
        .await;
    let interrupted = runs.iter().find(|r| r["id"] == id).unwrap();
    let why = if stop == Stop::Kill {
        "interrupted"
    } else {
        "shutting down"
    };
    assert!(
        interrupted["error"].as_str().unwrap().contains(why),
        "{interrupted}"
    );
    let (_, after) = service.get("/api/metrics/daily").await;
    assert_eq!(after, before, "the previous run's results are still served");
    service.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_replay_that_fails_with_an_error_changes_nothing_served() {
    let env = TestEnv::new("dash_fail").await;
    produce(&env, 1_000).await;
    let service = Service::start(&env, common::config()).await;
    let (good, _) = service.replay(json!({"from": "earliest"})).await;
    assert_eq!(good["state"], "succeeded");
    let (_, before) = service.get("/api/metrics/daily").await;

    // The database refuses the next run's results (as a full disk would).
    let pool = env.pool().await;
    for statement in [
        "CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION 'no space left (test)'; END $$",
        "CREATE TRIGGER refuse BEFORE INSERT ON dashboard_daily FOR EACH ROW EXECUTE FUNCTION refuse()",
    ] {
        sqlx::query(statement).execute(&pool).await.unwrap();
    }
    produce(&env, 500).await;
    let failures = || async {
        let text = shared::testkit::metrics_text(service.addr()).await;
        shared::testkit::metric(&text, "kappa_replay_failures_total", &[])
    };
    let failures_before = failures().await;
    let (failed, _) = service.replay(json!({"from": "earliest"})).await;
    assert_eq!(failed["state"], "failed", "{failed}");
    assert!(
        failed["error"]
            .as_str()
            .unwrap()
            .contains("no space left (test)"),
        "{failed}"
    );
    let (_, after) = service.get("/api/metrics/daily").await;
    assert_eq!(after, before, "the previous run's results are still served");
    assert_eq!(after["run_id"], good["id"]);

    assert_eq!(
        failures().await - failures_before,
        1.0,
        "the failed run counted once"
    );
    service.stop().await;
}
