//! A small hand-built dataset whose answers are worked out below by hand, a
//! poison message in the stream, and the API's error answers.

mod common;

use std::time::Duration;

use rdkafka::message::Message;
use serde_json::Value;
use shared::dlq::{header, header_str};
use shared::testkit::TestEnv;

const T: &str = "2026-11-20T00:00:00Z";

fn items(answer: &Value) -> Vec<(String, f64)> {
    answer["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            (
                i["product_id"].as_str().unwrap().to_owned(),
                i["score"].as_f64().unwrap(),
            )
        })
        .collect()
}

fn assert_items(answer: &Value, expected: &[(&str, f64)]) {
    let got = items(answer);
    assert_eq!(got.len(), expected.len(), "{answer}");
    for ((product, score), (want_product, want_score)) in got.iter().zip(expected) {
        assert_eq!(product, want_product, "{answer}");
        assert!(
            (score - want_score).abs() < 1e-9,
            "{product}: {score} != {want_score} in {answer}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn hand_built_dataset_gives_the_worked_out_answers() {
    let env = TestEnv::new("rec_hand").await;
    let e = |u: &str, p: &str, a: &str| (u.to_owned(), common::interaction(u, p, a, T));
    // One event time for all, so decay is a common factor that cancels out.
    let events = vec![
        e("u1", "A", "view"),
        e("u1", "B", "view"),
        e("u1", "C", "view"),
        e("u2", "A", "view"),
        e("u2", "B", "purchase"),
        e("u3", "B", "view"),
        ("u3".to_owned(), "this is not an event".to_owned()),
        e("u3", "C", "view"),
        e("u4", "A", "view"),
    ];
    common::produce(&env.settings.kafka, &events).await;
    let url = env.settings.database.url.expose().to_owned();
    let service = common::InProcess::start(&env, &url, &env.unique("rec-hand")).await;
    let pool = env.pool().await;
    common::wait_applied(
        &pool,
        &env.unique("rec-hand"),
        &env.settings.kafka.events_topic,
        8,
        Duration::from_secs(60),
    )
    .await;

    // Co-occurrence (weights view 1, purchase 8):
    //   u1: B with A +1; C with A +1, C with B +1
    //   u2: B (purchase) with A +8
    //   u3: C with B +1
    //   => A-B 9, A-C 1, B-C 2. Popularity: B 10, A 3, C 2.
    let client = reqwest::Client::new();
    let token = env.settings.auth.admin_token.expose().to_owned();
    let get = |path: String| {
        let request = client.get(service.url(&path)).bearer_auth(&token);
        async move { request.send().await.unwrap().json::<Value>().await.unwrap() }
    };

    // u4 saw A: B (1 x 9) before C (1 x 1).
    let u4 = get("/users/u4/recommendations?limit=2".into()).await;
    assert_items(&u4, &[("B", 9.0), ("C", 1.0)]);
    assert_eq!(u4["fallback"], false);
    // u2 saw A (1) and bought B (8): B is excluded; A = 8 x 9, C = 1 x 1 + 8 x 2.
    let u2 = get("/users/u2/recommendations?limit=2".into()).await;
    assert_items(&u2, &[("A", 72.0), ("C", 17.0)]);
    // A new user gets the popular products.
    let new = get("/users/nobody/recommendations?limit=3".into()).await;
    assert_eq!(new["fallback"], true);
    let popular: Vec<String> = items(&new).into_iter().map(|(p, _)| p).collect();
    assert_eq!(popular, ["B", "A", "C"]);
    // Thin history: co-occurrence first, then popular products fill up.
    let filled = get("/users/u4/recommendations?limit=10".into()).await;
    let products: Vec<String> = items(&filled).into_iter().map(|(p, _)| p).collect();
    assert_eq!(products, ["B", "C", "A"]);
    assert_eq!(filled["fallback"], true);
    assert_eq!(filled["as_of"]["last_event_at"], "2026-11-20T00:00:00Z");

    let similar = get("/products/A/similar?limit=5".into()).await;
    assert_items(&similar, &[("B", 9.0), ("C", 1.0)]);

    // Exact counters, committed with the state; the poison message is in the DLQ.
    let stats = get("/stats".into()).await;
    assert_eq!(stats["events_applied"], 8);
    assert_eq!(stats["dlq"], 1);
    let next: i64 = stats["next_offsets"]
        .as_object()
        .unwrap()
        .values()
        .map(|v| v.as_i64().unwrap())
        .sum();
    assert_eq!(
        next, 9,
        "every offset, the poison one included, is consumed"
    );
    let daily = get("/stats/daily".into()).await;
    assert_eq!(daily["days"][0]["day"], "2026-11-20");
    assert_eq!(daily["days"][0]["views"], 7);
    assert_eq!(daily["days"][0]["purchases"], 1);
    assert_eq!(daily["days"][0]["revenue_cents"], 1250);

    let dead = env
        .read_exactly(&env.settings.kafka.dlq_topic, 1, Duration::from_secs(30))
        .await
        .remove(0);
    assert_eq!(dead.payload(), Some(&b"this is not an event"[..]));
    assert_eq!(
        header_str(dead.headers().unwrap(), header::CODE),
        Some("invalid_json")
    );

    // Errors: personal data needs the token; bad limits are 400 with JSON.
    let anonymous = client
        .get(service.url("/users/u4/recommendations"))
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), 401);
    let bad = client
        .get(service.url("/products/A/similar?limit=0"))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
    assert_eq!(bad.json::<Value>().await.unwrap()["error"], "invalid_limit");
    let bad = client
        .get(service.url("/products/A/similar?limit=x"))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
    service.stop().await;
}

/// `/openapi.json` describes every route (typed answers, the limit's
/// bounds, which routes need the token) with the shared error answers: the
/// contract schemathesis checks in CI.
#[tokio::test(flavor = "multi_thread")]
async fn the_api_is_described_with_its_error_answers() {
    let env = TestEnv::new("rec_openapi").await;
    let url = env.settings.database.url.expose().to_owned();
    let service = common::InProcess::start(&env, &url, &env.unique("rec-openapi")).await;
    let api = shared::testkit::assert_openapi(
        &service.addr.to_string(),
        &[
            "GET /users/{id}/recommendations",
            "GET /products/{id}/similar",
            "GET /stats",
            "GET /stats/daily",
        ],
    )
    .await;
    let personal = &api["paths"]["/users/{id}/recommendations"]["get"];
    assert_eq!(personal["security"][0]["bearer"], serde_json::json!([]));
    let limit = personal["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "limit")
        .expect("limit is described");
    assert_eq!(
        (limit["in"].as_str(), &limit["schema"]["maximum"]),
        (Some("query"), &serde_json::json!(100))
    );
    let similar = &api["paths"]["/products/{id}/similar"]["get"];
    assert!(similar["security"].is_null(), "public: {similar}");
    assert!(
        similar["responses"]["401"].is_null(),
        "no 401 without a token to check"
    );
    let schemas = &api["components"]["schemas"];
    assert_eq!(
        schemas["Source"]["enum"],
        serde_json::json!(["similar", "popular"])
    );
    assert_eq!(schemas["Day"]["properties"]["day"]["format"], "date");

    // What a fuzzer sends: a NUL in an id is a 400, not a failed query.
    let client = reqwest::Client::new();
    let answer = client
        .get(service.url("/products/a%00b/similar"))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 400);
    // An empty stream: no days, no progress yet, the answers still typed.
    let days: Value = client
        .get(service.url("/stats/daily"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(days["days"], serde_json::json!([]));
    service.stop().await;
}

/// With `auth.public_metrics = false`, revenue per day (`/stats/daily`)
/// needs the token, and the description says so.
#[tokio::test(flavor = "multi_thread")]
async fn daily_revenue_needs_the_token_when_metrics_are_not_public() {
    let env = TestEnv::new("rec_private").await;
    let mut settings = env.settings.clone();
    settings.auth.public_metrics = false;
    let config = common::config(&env.unique("rec-private"));
    let service = common::InProcess::start_with(settings, config).await;
    let client = reqwest::Client::new();
    let anonymous = client
        .get(service.url("/stats/daily"))
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), 401);
    let token = env.settings.auth.admin_token.expose();
    let authorized = client
        .get(service.url("/stats/daily"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(authorized.status(), 200);
    let api: Value = client
        .get(service.url("/openapi.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let daily = &api["paths"]["/stats/daily"]["get"];
    assert_eq!(daily["security"], serde_json::json!([{"bearer": []}]));
    assert!(daily["responses"]["401"].is_object(), "{daily}");
    service.stop().await;
}
