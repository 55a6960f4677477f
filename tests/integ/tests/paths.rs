//! Events in through the gateway, out through the other services' APIs: the
//! streaming half (recommendation) and the batch half (a replay on the
//! dashboard) of the Kappa architecture, on the same topic.

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use shared::config::HttpConfig;
use shared::shutdown::CancellationToken;
use shared::testkit::TestEnv;

/// A service run in-process until dropped.
struct Running {
    base: String,
    _stop: shared::shutdown::DropGuard,
}

async fn gateway(env: &TestEnv) -> Running {
    let shutdown = CancellationToken::new();
    let http = HttpConfig {
        addr: "127.0.0.1:0".parse().unwrap(),
        body_limit_bytes: 1 << 20,
        max_upload_file_bytes: 1 << 20,
        max_events_per_request: 100_000,
    };
    let app = gateway::Application::build(env.settings.clone(), http, shutdown.clone())
        .await
        .unwrap();
    let base = format!("http://{}", app.addr());
    tokio::spawn(app.run());
    Running {
        base,
        _stop: shutdown.drop_guard(),
    }
}

async fn recommendation(env: &TestEnv) -> Running {
    let shutdown = CancellationToken::new();
    let config = recommendation::RecommendationConfig {
        addr: "127.0.0.1:0".parse().unwrap(),
        group: env.unique("integ-rec"),
        worker: shared::config::WorkerConfig {
            max_batch_events: 500,
            max_batch_ms: 20,
            stuck_after_ms: 30_000,
        },
        half_life_days: 7.0,
        read_connections: 4,
    };
    let app = recommendation::Application::build(env.settings.clone(), config, shutdown.clone())
        .await
        .unwrap();
    let base = format!("http://{}", app.addr());
    tokio::spawn(app.run());
    Running {
        base,
        _stop: shutdown.drop_guard(),
    }
}

async fn dashboard(env: &TestEnv) -> Running {
    let shutdown = CancellationToken::new();
    let config = dashboard::DashboardConfig {
        addr: "127.0.0.1:0".parse().unwrap(),
        keep_runs: 3,
        schedule: String::new(),
        interval: String::new(),
        threshold_bytes: 0,
        threshold_events: 0,
        check_interval_ms: 1000,
        readers: 2,
        pagecount_url: "http://127.0.0.1:9".into(),
        audit_consumer: "recommendation".into(),
    };
    let app = dashboard::Application::build(env.settings.clone(), config, shutdown.clone())
        .await
        .unwrap();
    let base = format!("http://{}", app.addr());
    tokio::spawn(app.run());
    Running {
        base,
        _stop: shutdown.drop_guard(),
    }
}

/// Polls `url` until `check` accepts its JSON (60 s at most).
async fn until(
    client: &reqwest::Client,
    url: &str,
    token: &str,
    check: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(response) = client.get(url).bearer_auth(token).send().await {
            if let Ok(body) = response.json::<Value>().await {
                if check(&body) {
                    return body;
                }
            }
        }
        assert!(Instant::now() < deadline, "timed out waiting on {url}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn events_posted_to_the_gateway_reach_both_halves() {
    let env = TestEnv::new("integ_paths").await;
    let token = env.settings.auth.admin_token.expose().to_owned();
    let client = reqwest::Client::new();
    let (gateway, rec, dash) = (
        gateway(&env).await,
        recommendation(&env).await,
        dashboard(&env).await,
    );

    let day = "2026-11-20";
    let body: String = [
        ("ann", "lamp", "view", None),
        ("ann", "desk", "purchase", Some(12_900)),
        ("bob", "lamp", "view", None),
        ("bob", "desk", "view", None),
        ("cid", "lamp", "purchase", Some(4_500)),
    ]
    .iter()
    .map(|(user, product, action, price)| {
        let price = price.map(|p| format!(r#","price_cents":{p}"#)).unwrap_or_default();
        format!(
            r#"{{"type":"interaction","user_id":"{user}","product_id":"{product}","action":"{action}","ts":"{day}T10:00:00Z"{price}}}"#
        ) + "\n"
    })
    .collect();
    let posted = client
        .post(format!("{}/events", gateway.base))
        .bearer_auth(&token)
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(posted.status(), 202);

    // Streaming: the recommendation API sees them within a batch window.
    let similar = until(
        &client,
        &format!("{}/products/lamp/similar", rec.base),
        &token,
        |b| b["items"].as_array().is_some_and(|items| !items.is_empty()),
    )
    .await;
    assert_eq!(similar["items"][0]["product_id"], "desk", "{similar}");
    let stats = until(&client, &format!("{}/stats", rec.base), &token, |b| {
        b["events_applied"] == 5
    })
    .await;
    assert_eq!(stats["dlq"], 0);

    // Batch: a replay of the same topic gives the same day.
    let started = client
        .post(format!("{}/api/replays", dash.base))
        .bearer_auth(&token)
        .json(&json!({"from": "earliest"}))
        .send()
        .await
        .unwrap();
    assert_eq!(started.status(), 202);
    let id = started.json::<Value>().await.unwrap()["id"].clone();
    until(
        &client,
        &format!("{}/api/replays/{id}", dash.base),
        &token,
        |b| b["state"] == "succeeded",
    )
    .await;
    let metrics = until(
        &client,
        &format!("{}/api/metrics/daily", dash.base),
        &token,
        |b| b["run_id"] == id,
    )
    .await;
    let day_metrics = &metrics["days"][0];
    assert_eq!(day_metrics["day"], day);
    assert_eq!(day_metrics["views"], 3);
    assert_eq!(day_metrics["purchases"], 2);
    assert_eq!(day_metrics["revenue_cents"], 17_400);
    assert_eq!(day_metrics["active_users"], 3);
    // The streaming half's counters agree with the batch half's.
    let daily = until(&client, &format!("{}/stats/daily", rec.base), &token, |b| {
        b["days"][0]["day"] == day
    })
    .await;
    assert_eq!(daily["days"][0]["views"], day_metrics["views"]);
    assert_eq!(
        daily["days"][0]["revenue_cents"],
        day_metrics["revenue_cents"]
    );
}
