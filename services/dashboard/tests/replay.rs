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

/// `/openapi.json` describes every route with its error answers (the
/// contract schemathesis checks in CI), and the metrics routes' security
/// follows `auth.public_metrics`: optional while public, required when not.
#[tokio::test(flavor = "multi_thread")]
async fn the_api_is_described_with_its_error_answers() {
    let env = TestEnv::new("dash_openapi").await;
    let operations = [
        "GET /api/replays",
        "POST /api/replays",
        "GET /api/replays/{id}",
        "GET /api/metrics/daily",
        "GET /api/products/top",
        "GET /api/triggers",
        "GET /api/audit",
        "GET /api/dlq/daily",
        "POST /api/mapreduce/jobs",
        "GET /",
    ];
    let service = Service::start(&env, common::config()).await;
    let api = shared::testkit::assert_openapi(service.addr(), &operations).await;
    let paths = &api["paths"];
    let bearer = json!([{"bearer": []}]);
    assert_eq!(paths["/api/replays"]["post"]["security"], bearer);
    assert_eq!(paths["/api/audit"]["get"]["security"], bearer);
    assert_eq!(paths["/api/mapreduce/jobs"]["post"]["security"], bearer);
    assert!(
        paths["/api/replays"]["get"]["security"].is_null(),
        "listing runs is public"
    );
    for path in [
        "/",
        "/api/metrics/daily",
        "/api/products/top",
        "/api/dlq/daily",
    ] {
        assert_eq!(
            paths[path]["get"]["security"],
            json!([{}, {"bearer": []}]),
            "{path} is public by default"
        );
    }
    let page = &paths["/"]["get"]["responses"]["200"]["content"];
    assert!(page["text/html"].is_object(), "{page}");
    for (path, status) in [
        ("/api/metrics/daily", "404"),
        ("/api/audit", "409"),
        ("/api/mapreduce/jobs", "503"),
    ] {
        let method = if path == "/api/mapreduce/jobs" {
            "post"
        } else {
            "get"
        };
        assert!(
            paths[path][method]["responses"][status].is_object(),
            "{path} documents {status}"
        );
    }
    let daily = &api["components"]["schemas"]["DailyMetrics"];
    assert!(daily["properties"]["days"].is_object(), "{daily}");
    service.stop().await;

    let mut private = env.settings.clone();
    private.auth.public_metrics = false;
    let shutdown = shared::shutdown::CancellationToken::new();
    let app = dashboard::Application::build(private, common::config(), shutdown.clone())
        .await
        .unwrap();
    let addr = app.addr().to_string();
    let task = tokio::spawn(app.run());
    let api = shared::testkit::assert_openapi(&addr, &operations).await;
    for path in [
        "/",
        "/api/metrics/daily",
        "/api/products/top",
        "/api/dlq/daily",
    ] {
        assert_eq!(
            api["paths"][path]["get"]["security"], bearer,
            "{path} needs the token"
        );
    }
    shutdown.cancel();
    let stopped = shared::testkit::within(
        shared::testkit::STOP_LIMIT,
        "the in-process dashboard stopping",
        task,
    );
    stopped.await.unwrap().unwrap();
}

/// The known day the audit test plants, and a few records of the next one.
const AUDIT_DAY: &str = "2026-10-05";
const AUDIT_NEXT: &str = "2026-10-06";

/// Produces `count` interactions on `day` (keyed by their user, Kafka
/// timestamp = event time): views, clicks, add_to_cart and purchases.
async fn produce_interactions(env: &TestEnv, day: &str, first: usize, count: usize) {
    let producer = shared::kafka::producer(&env.settings.kafka).unwrap();
    for i in first..first + count {
        let user = format!("a{}", i % 17);
        let action = ["view", "view", "click", "add_to_cart", "purchase"][i % 5];
        let price = if action == "purchase" {
            format!(r#","price_cents":{}"#, 100 + i)
        } else {
            String::new()
        };
        let ts = format!("{day}T{:02}:{:02}:00Z", (i / 60) % 24, i % 60);
        let payload = format!(
            r#"{{"type":"interaction","user_id":"{user}","product_id":"p{}","action":"{action}","ts":"{ts}"{price}}}"#,
            i % 7
        );
        let millis = chrono::DateTime::parse_from_rfc3339(&ts)
            .unwrap()
            .timestamp_millis();
        producer
            .send(
                FutureRecord::to(&env.settings.kafka.events_topic)
                    .key(&user)
                    .payload(&payload)
                    .timestamp(millis),
                Duration::from_secs(10),
            )
            .await
            .map_err(|(e, _)| e)
            .unwrap();
    }
}

/// The streaming half in-process: the recommendation service on the
/// test's topics and database, as consumer `group`.
async fn streaming_half(
    env: &TestEnv,
    group: &str,
) -> (
    shared::shutdown::CancellationToken,
    tokio::task::JoinHandle<anyhow::Result<()>>,
) {
    let shutdown = shared::shutdown::CancellationToken::new();
    let config = recommendation::RecommendationConfig {
        addr: "127.0.0.1:0".parse().unwrap(),
        group: group.to_owned(),
        worker: shared::config::WorkerConfig {
            max_batch_events: 50,
            max_batch_ms: 20,
            stuck_after_ms: 30_000,
        },
        half_life_days: 7.0,
        read_connections: 4,
    };
    let app = recommendation::Application::build(env.settings.clone(), config, shutdown.clone())
        .await
        .unwrap();
    (shutdown, tokio::spawn(app.run()))
}

/// Waits until the streaming consumer `group` committed `applied` events.
async fn wait_streamed(env: &TestEnv, group: &str, applied: i64) {
    let pool = env.pool().await;
    let topic = env.settings.kafka.events_topic.clone();
    shared::testkit::eventually(
        "the streaming half to apply every event",
        Duration::from_secs(60),
        || {
            let (pool, topic) = (pool.clone(), topic.clone());
            async move {
                let rows = shared::worker::offsets::progress(&pool, group, &topic)
                    .await
                    .ok()?;
                let done: i64 = rows.iter().map(|r| r.2).sum();
                assert!(done <= applied, "{done} applied, more than {applied}");
                (done == applied).then_some(())
            }
        },
    )
    .await;
}

/// `GET /api/audit` with the token.
async fn audit(service: &Service) -> (u16, Value) {
    let response = service
        .client
        .get(format!("{}/api/audit", service.base))
        .bearer_auth(&service.token)
        .send()
        .await
        .unwrap();
    (response.status().as_u16(), response.json().await.unwrap())
}

/// The audit's `(stream, batch)` of `measure` on `day`.
fn compared(report: &Value, day: &str, measure: &str) -> (i64, i64) {
    let found = report["days"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["day"] == day)
        .unwrap_or_else(|| panic!("no {day} in {report}"));
    let c = &found[measure];
    (c["stream"].as_i64().unwrap(), c["batch"].as_i64().unwrap())
}

/// Offsets read to align the halves, and partitions adjusted on `side`.
fn adjusted(report: &Value, side: &str) -> (u64, usize) {
    let partitions = report["partitions"].as_array().unwrap();
    (
        report["records_read"].as_u64().unwrap(),
        partitions.iter().filter(|p| p["adjusted"] == side).count(),
    )
}

/// The Kappa audit: a planted day processed by both halves shows zero
/// drift, with the stream at, ahead of and behind the replay's end offsets
/// (the records in between read and counted as the replay counts them);
/// a double-applied batch injected into the streaming state is reported
/// per day and measure, as a metric, and on the page.
#[tokio::test(flavor = "multi_thread")]
async fn the_audit_finds_the_halves_agree_and_reports_a_double_applied_batch() {
    let env = TestEnv::new("dash_audit").await;
    let group = env.unique("rec");
    produce_interactions(&env, AUDIT_DAY, 0, 60).await;
    let (stream_stop, stream_task) = streaming_half(&env, &group).await;
    wait_streamed(&env, &group, 60).await;
    let mut config = common::config();
    config.audit_consumer = group.clone();
    let service = Service::start(&env, config).await;

    let (status, body) = audit(&service).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (404, Some("not_found")),
        "{body}"
    );
    let unauthorized = service.get("/api/audit").await;
    assert_eq!(unauthorized.0, 401, "the audit needs the token");

    // Both halves at the same offsets.
    let (run, _) = service.replay(json!({"from": "earliest"})).await;
    assert_eq!(run["state"], "succeeded", "{run}");
    let (status, report) = audit(&service).await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(report["zero_drift"], true, "{report}");
    assert_eq!(report["run_id"], run["id"]);
    assert_eq!(
        adjusted(&report, "none"),
        (0, shared::testkit::PARTITIONS as usize),
        "{report}"
    );
    // 60 interactions, a fifth of each kind but views (two fifths).
    assert_eq!(compared(&report, AUDIT_DAY, "views"), (24, 24));
    assert_eq!(compared(&report, AUDIT_DAY, "clicks"), (12, 12));
    assert_eq!(compared(&report, AUDIT_DAY, "add_to_cart"), (12, 12));
    assert_eq!(compared(&report, AUDIT_DAY, "purchases"), (12, 12));
    let revenue: i64 = (0..60).filter(|i| i % 5 == 4).map(|i| 100 + i).sum();
    assert_eq!(
        compared(&report, AUDIT_DAY, "revenue_cents"),
        (revenue, revenue)
    );

    // The stream ahead: 25 more records (some on the known day, some on
    // the next) are taken out of the streaming numbers.
    produce_interactions(&env, AUDIT_DAY, 60, 10).await;
    produce_interactions(&env, AUDIT_NEXT, 70, 15).await;
    wait_streamed(&env, &group, 85).await;
    let (_, report) = audit(&service).await;
    assert_eq!(report["zero_drift"], true, "{report}");
    let (read, ahead) = adjusted(&report, "stream");
    assert_eq!(read, 25, "{report}");
    assert!(ahead > 0, "{report}");
    assert_eq!(
        compared(&report, AUDIT_DAY, "views"),
        (24, 24),
        "compared at the run's offsets"
    );
    assert!(
        report["days"]
            .as_array()
            .unwrap()
            .iter()
            .all(|d| d["day"] != AUDIT_NEXT),
        "the next day is beyond the compared offsets: {report}"
    );
    // Further along: the next audit of the same run adds only what the
    // stream applied since to what the last one read.
    produce_interactions(&env, AUDIT_NEXT, 85, 5).await;
    wait_streamed(&env, &group, 90).await;
    let (_, report) = audit(&service).await;
    assert_eq!(report["zero_drift"], true, "{report}");
    assert_eq!(adjusted(&report, "stream").0, 30, "{report}");

    // The batch ahead: the stream stopped, 15 more records replayed; they
    // are taken out of the batch numbers.
    stream_stop.cancel();
    let stopped = shared::testkit::within(
        shared::testkit::STOP_LIMIT,
        "the streaming worker stopping",
        stream_task,
    );
    stopped.await.unwrap().unwrap();
    // An automatic run reads them: incremental (the 45 records after the
    // full run), its results counting from where that run started.
    produce_interactions(&env, AUDIT_NEXT, 90, 15).await;
    let pool = env.pool().await;
    let id = dashboard::store::enqueue_automatic(&pool, dashboard::store::Trigger::Threshold)
        .await
        .unwrap()
        .unwrap();
    let runs = service
        .wait_runs("the incremental run", |runs| {
            runs.iter()
                .any(|r| r["id"] == id && r["state"] == "succeeded")
        })
        .await;
    let run = runs.iter().find(|r| r["id"] == id).unwrap();
    assert_eq!(
        (&run["kind"], &run["records"]),
        (&json!("incremental"), &json!(45)),
        "{run}"
    );
    let (_, report) = audit(&service).await;
    assert_eq!(report["run_id"], id, "{report}");
    assert_eq!(report["zero_drift"], true, "{report}");
    let (read, behind) = adjusted(&report, "batch");
    assert_eq!(read, 15, "{report}");
    assert!(behind > 0, "{report}");
    assert_eq!(compared(&report, AUDIT_DAY, "views"), (28, 28), "{report}");
    // Another one: it started after the stream's position, and the batch
    // half is still compared from the beginning (the 25 records after the
    // stream's position taken out, not only the run's own 10).
    produce_interactions(&env, AUDIT_NEXT, 105, 10).await;
    let id = dashboard::store::enqueue_automatic(&pool, dashboard::store::Trigger::Threshold)
        .await
        .unwrap()
        .unwrap();
    service
        .wait_runs("the second incremental run", |runs| {
            runs.iter()
                .any(|r| r["id"] == id && r["state"] == "succeeded")
        })
        .await;
    let (_, report) = audit(&service).await;
    assert_eq!(report["run_id"], id, "{report}");
    assert_eq!(report["zero_drift"], true, "{report}");
    assert_eq!(adjusted(&report, "batch").0, 25, "{report}");
    assert_eq!(compared(&report, AUDIT_DAY, "views"), (28, 28), "{report}");

    // A batch applied twice on the streaming side (7 views and $12.50 of
    // revenue again in one partition): reported per day and measure.
    let injected = sqlx::query(
        "UPDATE rec_daily SET views = views + 7, revenue_cents = revenue_cents + 1250
         WHERE day = $1::date AND partition = (SELECT min(partition) FROM rec_daily WHERE day = $1::date)",
    )
    .bind(AUDIT_DAY)
    .execute(&pool)
    .await
    .unwrap();
    assert_eq!(injected.rows_affected(), 1);
    let (_, report) = audit(&service).await;
    assert_eq!(report["zero_drift"], false, "{report}");
    assert_eq!(report["drift"]["views"], 7, "{report}");
    assert_eq!(report["drift"]["revenue_cents"], 1250, "{report}");
    assert_eq!(report["drift"]["purchases"], 0, "{report}");
    let (stream, batch) = compared(&report, AUDIT_DAY, "views");
    assert_eq!(stream - batch, 7, "{report}");
    let metrics = shared::testkit::metrics_text(service.addr()).await;
    let drift = |measure: &str| {
        shared::testkit::metric(
            &metrics,
            "kappa_dashboard_audit_drift",
            &[&format!("measure=\"{measure}\"")],
        )
    };
    assert_eq!(
        (drift("views"), drift("revenue_cents"), drift("clicks")),
        (7.0, 1250.0, 0.0),
        "{metrics}"
    );
    let page = service.page().await;
    let line = page
        .split(r#"id="audit""#)
        .nth(1)
        .unwrap()
        .split("</p>")
        .next()
        .unwrap();
    assert!(
        line.contains("<b>drift</b>") && line.contains(&format!("{AUDIT_DAY} views")),
        "{line}"
    );
    service.stop().await;
}
