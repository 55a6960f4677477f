//! The web page renders the API's numbers as charts in a real browser
//! (headless Chromium from Debian's package); a screenshot is kept in
//! `.run/artifacts/dashboard.png`.

mod common;

use std::process::Command;
use std::time::Duration;

use common::Service;
use rdkafka::producer::FutureRecord;
use serde_json::{json, Value};
use shared::testkit::{repo_root, TestEnv};

/// The page at `base`, asked with the admin `token` or without one.
async fn page_of(base: &str, token: Option<&str>) -> String {
    let mut request = reqwest::Client::new().get(format!("{base}/"));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.expect("the dashboard answers");
    response.text().await.unwrap()
}

fn chromium(args: &[&str], profile: &std::path::Path) -> std::process::Output {
    Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
        ])
        .args([
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(args)
        .output()
        .expect("chromium is installed (scripts/test.sh installs Debian's chromium)")
}

#[tokio::test(flavor = "multi_thread")]
async fn the_page_renders_the_charts_from_the_api() {
    let env = TestEnv::new("dash_page").await;
    let producer = shared::kafka::producer(&env.settings.kafka).unwrap();
    for (day, views, purchases) in [
        ("2026-11-10", 12, 2),
        ("2026-11-11", 7, 1),
        ("2026-11-12", 20, 5),
    ] {
        for i in 0..(views + purchases) {
            let (action, price) = if i < views {
                ("view", "")
            } else {
                ("purchase", r#","price_cents":2500"#)
            };
            let payload = format!(
                r#"{{"type":"interaction","user_id":"u{i}","product_id":"p{}","action":"{action}","ts":"{day}T12:00:00Z"{price}}}"#,
                i % 4
            );
            producer
                .send(
                    FutureRecord::to(&env.settings.kafka.events_topic)
                        .key(&shared::testkit::key_of(&payload))
                        .payload(&payload),
                    Duration::from_secs(10),
                )
                .await
                .map_err(|(e, _)| e)
                .unwrap();
        }
    }
    let service = Service::start(&env, common::config()).await;
    let (run, _) = service.replay(json!({"from": "earliest"})).await;
    assert_eq!(run["state"], "succeeded");
    let (_, metrics) = service.get("/api/metrics/daily").await;
    let days = metrics["days"].as_array().unwrap().clone();

    let profile = repo_root()
        .join(".run")
        .join(format!("chromium-{}", std::process::id()));
    let url = format!("{}/", service.base);
    let dom = tokio::task::block_in_place(|| {
        chromium(
            &["--virtual-time-budget=2000", "--dump-dom", &url],
            &profile,
        )
    });
    let dom = String::from_utf8_lossy(&dom.stdout).to_string();
    assert!(dom.contains(r#"id="chart-views""#), "{dom}");
    // One bar per day, carrying exactly the API's numbers.
    for (chart, field) in [("chart-views", "views"), ("chart-purchases", "purchases")] {
        let section = dom
            .split(&format!(r#"id="{chart}""#))
            .nth(1)
            .unwrap()
            .split("</svg>")
            .next()
            .unwrap();
        let values: Vec<u64> = section
            .split(r#"data-value=""#)
            .skip(1)
            .map(|rest| rest.split('"').next().unwrap().parse::<f64>().unwrap() as u64)
            .collect();
        let expected: Vec<u64> = days
            .iter()
            .map(|d: &Value| d[field].as_u64().unwrap())
            .collect();
        assert_eq!(values, expected, "{chart}");
    }
    assert!(dom.contains(&format!(
        r#"<b id="total-views">{}</b>"#,
        metrics["totals"]["views"]
    )));
    assert!(dom.contains(r#"id="replay""#), "the replay button is there");

    let artifacts = repo_root().join(".run").join("artifacts");
    std::fs::create_dir_all(&artifacts).unwrap();
    let shot = artifacts.join("dashboard.png");
    let _ = std::fs::remove_file(&shot);
    let arg = format!("--screenshot={}", shot.display());
    tokio::task::block_in_place(|| {
        chromium(
            &[
                "--window-size=900,1500",
                "--virtual-time-budget=2000",
                &arg,
                &url,
            ],
            &profile,
        )
    });
    assert!(
        std::fs::metadata(&shot)
            .map(|m| m.len() > 10_000)
            .unwrap_or(false),
        "screenshot at {}",
        shot.display()
    );
    let _ = std::fs::remove_dir_all(&profile);

    // Served with a policy that allows the page's own script (by hash) and
    // nothing else; the click below proves the script still runs under it.
    let served = reqwest::get(&url).await.unwrap();
    let headers = served.headers();
    let policy = headers["content-security-policy"].to_str().unwrap();
    assert!(
        policy.contains("script-src 'sha256-") && policy.contains("frame-ancestors 'none'"),
        "{policy}"
    );
    assert_eq!(headers["x-frame-options"], "DENY");
    assert_eq!(headers["x-content-type-options"], "nosniff");

    // The Replay button, clicked in a real browser, starts a run that the
    // page then shows with its progress bar.
    let browser = common::browser::Browser::start().await;
    browser.goto(&url).await;
    browser
        .execute(
            "sessionStorage.setItem('token', arguments[0])",
            json!([service.token]),
        )
        .await;
    browser.click("#replay").await;
    let runs = service
        .wait_runs("the run the button started", |runs| runs.len() == 2)
        .await;
    let started = runs.last().unwrap();
    assert_eq!(started["trigger"], "manual", "{started}");
    let bar = format!(".bar[data-run=\"{}\"]", started["id"]);
    browser
        .wait_for(
            "the new run on the page",
            &format!("return document.querySelector('{bar}') !== null"),
        )
        .await;
    browser.quit().await;
    service.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_products_panel_shows_counts_waiting_joins_and_the_slowest_branch() {
    let env = TestEnv::new("dash_products").await;
    let pool = env.pool().await;
    // The product creator's tables as it leaves them: two active products,
    // one still waiting for its video (its image took 4 s, metadata 1 s).
    // Rows are written 30 s after their upload; what the page says it
    // waited is bounded by that and the time since, however slow the box.
    let written = std::time::Instant::now();
    for (id, status) in [("a1", "active"), ("a2", "active"), ("w1", "pending")] {
        sqlx::query(
            "INSERT INTO products (id, status, metadata, upload_event, uploaded_at, buffered_at, deadline_at)
             VALUES ($1, $2, '{}', gen_random_uuid(), now() - interval '30 seconds',
                     now() - interval '30 seconds', now() + interval '90 seconds')",
        )
        .bind(id)
        .bind(status)
        .execute(&pool)
        .await
        .unwrap();
    }
    for (id, part, kind, arrived_after) in [
        ("w1", "metadata", "metadata", Some(1)),
        ("w1", "image-1", "image", Some(4)),
        ("w1", "video", "video", None),
    ] {
        sqlx::query(
            "INSERT INTO product_parts (product_id, part, kind, state, arrived_at)
             SELECT $1, $2, $3, CASE WHEN $4::int IS NULL THEN 'waiting' ELSE 'processed' END,
                    p.uploaded_at + $4::int * interval '1 second' FROM products p WHERE p.id = $1",
        )
        .bind(id)
        .bind(part)
        .bind(kind)
        .bind(arrived_after)
        .execute(&pool)
        .await
        .unwrap();
    }
    let service = Service::start(&env, common::config()).await;
    // Without the token, the page shows what the public APIs show: counts,
    // not which product waits for which part.
    let public = page_of(&service.base, None).await;
    assert!(
        public.contains(r#"<b id="products-pending">1</b>"#),
        "{public}"
    );
    assert!(!public.contains(r#"id="pending-joins""#), "{public}");
    assert!(!public.contains("<td>w1</td>"), "{public}");
    let page = page_of(&service.base, Some(env.settings.auth.admin_token.expose())).await;
    assert!(page.contains(r#"<b id="products-active">2</b>"#), "{page}");
    assert!(page.contains(r#"<b id="products-pending">1</b>"#), "{page}");
    assert!(
        page.contains(r#"<b id="products-incomplete">0</b>"#),
        "{page}"
    );
    let slowest = page.split(r#"id="slowest-branch""#).nth(1).unwrap();
    assert!(
        slowest.starts_with(">Slowest branch: <b>image</b>, 4.00 s"),
        "{slowest}"
    );
    let joins = page.split(r#"id="pending-joins""#).nth(1).unwrap();
    // Waited since its upload 30 s before the rows were written, plus the
    // moments the service took to start and answer (seconds on a busy box).
    let waited: u64 = joins
        .split("<td>w1</td><td>video</td><td>")
        .nth(1)
        .and_then(|rest| rest.split(" s</td>").next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no waiting row for w1's video: {joins}"));
    let since = written.elapsed().as_secs() + 1;
    assert!(
        (30..=30 + since).contains(&waited),
        "{joins} (rows written {since} s ago)"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_mapreduce_panel_shows_progress_and_the_newest_top_pages() {
    let env = TestEnv::new("dash_mapreduce").await;
    let pool = env.pool().await;
    // As the coordinator and reducers leave their tables: job 1 done, job 2 half mapped.
    for (state, chunks) in [("succeeded", 2), ("running", 4)] {
        sqlx::query(
            "INSERT INTO pagecount_jobs (state, input_topic, ranges, lines_total, chunk_lines, chunks_total, shuffle_partitions, combiner)
             VALUES ($1, 'access-logs', '[]', 100, 50, $2, 2, true)",
        )
        .bind(state)
        .bind(chunks)
        .execute(&pool)
        .await
        .unwrap();
    }
    for (job, chunk, partition) in [
        (1, 0, 0),
        (1, 1, 0),
        (1, 0, 1),
        (1, 1, 1),
        (2, 0, 0),
        (2, 1, 0),
    ] {
        sqlx::query("INSERT INTO pagecount_chunks VALUES ($1, $2, $3, 50, 0, 5, 100, now())")
            .bind(job as i64)
            .bind(chunk)
            .bind(partition)
            .execute(&pool)
            .await
            .unwrap();
    }
    sqlx::query(
        "INSERT INTO pagecount_partitions (job_id, shuffle_partition) VALUES (1, 0), (1, 1)",
    )
    .execute(&pool)
    .await
    .unwrap();
    sqlx::query("INSERT INTO pagecount_pages VALUES (1, '/home', 70), (1, '/cart', 30)")
        .execute(&pool)
        .await
        .unwrap();
    let service = Service::start(&env, common::config()).await;
    // The top pages are the token's (`GET /jobs/{id}/pages`): not on the
    // public page.
    let public = page_of(&service.base, None).await;
    assert!(public.contains(r#"id="mapreduce""#), "{public}");
    assert!(!public.contains(r#"id="top-pages""#), "{public}");
    assert!(!public.contains("/home"), "{public}");
    let page = page_of(&service.base, Some(env.settings.auth.admin_token.expose())).await;
    let panel = page.split(r#"id="mapreduce""#).nth(1).unwrap();
    assert!(panel.contains(r#"<td>2</td><td class="state mr-running">running</td><td><div class="bar" title="2/4"><div style="width:50.0%">"#), "{panel}");
    assert!(panel.contains(r#"title="0/2""#), "{panel}");
    let top = page.split(r#"id="top-pages""#).nth(1).unwrap();
    assert!(top.contains("top pages, job 1"), "{top}");
    assert!(
        top.find("/home").unwrap() < top.find("/cart").unwrap(),
        "{top}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_count_pages_button_starts_a_job_on_the_coordinator() {
    let env = TestEnv::new("dash_mr_button").await;
    let shutdown = shared::shutdown::CancellationToken::new();
    let _stop = shutdown.clone().drop_guard();
    let coordinator = pagecount::Application::build(
        env.settings.clone(),
        pagecount::PagecountConfig {
            addr: "127.0.0.1:0".parse().unwrap(),
            role: pagecount::Role::Coordinator,
            group_prefix: env.unique("pagecount"),
            instance: "1".into(),
            tasks_topic: env.unique("tasks"),
            shuffle_topic: env.unique("shuffle"),
            topic_partitions: 2,
            chunk_lines: 1000,
            keep_jobs: 10,
            worker: shared::config::WorkerConfig {
                max_batch_events: 100,
                max_batch_ms: 50,
                stuck_after_ms: 60_000,
            },
            relay_interval_ms: 100,
            test_pause_before_publish_ms: 0,
        },
        shutdown.clone(),
    )
    .await
    .unwrap();
    let mut config = common::config();
    config.pagecount_url = format!("http://{}", coordinator.addr());
    tokio::spawn(coordinator.run());
    let service = Service::start(&env, config).await;
    let page = page_of(&service.base, None).await;
    assert!(page.contains(r#"<button id="mapreduce-run">"#), "{page}");

    let url = format!("{}/api/mapreduce/jobs", service.base);
    let refused = service.client.post(&url).send().await.unwrap();
    assert_eq!(refused.status(), 401);
    let started = service
        .client
        .post(&url)
        .bearer_auth(&service.token)
        .send()
        .await
        .unwrap();
    assert_eq!(started.status(), 202);
    let job: Value = started.json().await.unwrap();
    let (state,): (String,) = sqlx::query_as("SELECT state FROM pagecount_jobs WHERE id = $1")
        .bind(job["id"].as_i64().unwrap())
        .fetch_one(&env.pool().await)
        .await
        .unwrap();
    // The access-log topic of this test is empty: nothing to map, done at once.
    assert_eq!(state, "succeeded", "{job}");

    // The coordinator gone: a clear 503, not a hang.
    let mut gone = common::config();
    gone.pagecount_url = "http://127.0.0.1:9".into();
    let other = Service::start(&env, gone).await;
    let answer = other
        .client
        .post(format!("{}/api/mapreduce/jobs", other.base))
        .bearer_auth(&other.token)
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 503);
    let body: Value = answer.json().await.unwrap();
    assert_eq!(body["error"], "pagecount_unavailable");
}

/// `auth.public_metrics`: true (the default) serves the daily metrics to
/// anyone; false answers 401 without the token and 200 with it. The admin
/// routes need the token either way, and the rest stays public.
#[tokio::test(flavor = "multi_thread")]
async fn who_can_read_the_metrics_is_configured() {
    let env = TestEnv::new("dash_public").await;
    let producer = shared::kafka::producer(&env.settings.kafka).unwrap();
    let payload = r#"{"type":"interaction","user_id":"u1","product_id":"p1","action":"purchase","price_cents":990,"ts":"2026-11-10T12:00:00Z"}"#;
    producer
        .send(
            FutureRecord::to(&env.settings.kafka.events_topic)
                .key("u1")
                .payload(payload),
            Duration::from_secs(10),
        )
        .await
        .map_err(|(e, _)| e)
        .unwrap();
    let metrics_routes = [
        "/",
        "/api/metrics/daily",
        "/api/products/top?day=2026-11-10&by=purchases",
        "/api/dlq/daily",
    ];
    let status = |service: &Service, path: &str, token: Option<String>| {
        let mut request = service.client.get(format!("{}{path}", service.base));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        async move { request.send().await.unwrap() }
    };

    let public = Service::start(&env, common::config()).await;
    let (run, _) = public.replay(json!({"from": "earliest"})).await;
    assert_eq!(run["state"], "succeeded", "{run}");
    for path in metrics_routes {
        assert_eq!(
            status(&public, path, None).await.status(),
            200,
            "{path} is public"
        );
    }
    assert_eq!(
        status(&public, "/api/audit", None).await.status(),
        401,
        "the audit needs the token"
    );
    public.stop().await;

    let mut settings = env.settings.clone();
    settings.auth.public_metrics = false;
    let private = Service::start_with(settings, common::config()).await;
    for path in metrics_routes {
        let refused = status(&private, path, None).await;
        assert_eq!(refused.status(), 401, "{path} needs the token");
        assert!(
            refused.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with("application/json"),
            "{path}"
        );
        let body: Value = refused.json().await.unwrap();
        assert_eq!(body["error"], "unauthorized", "{path}: {body}");
        let wrong = status(&private, path, Some("not-the-token".into())).await;
        assert_eq!(wrong.status(), 401, "{path} with a wrong token");
        let allowed = status(&private, path, Some(private.token.clone())).await;
        assert_eq!(allowed.status(), 200, "{path} with the token");
    }
    let (code, daily) = {
        let answer = status(&private, "/api/metrics/daily", Some(private.token.clone())).await;
        (answer.status(), answer.json::<Value>().await.unwrap())
    };
    assert_eq!(
        (code.as_u16(), &daily["totals"]["revenue_cents"]),
        (200, &json!(990))
    );
    for path in ["/api/replays", "/api/triggers", "/healthz"] {
        assert_eq!(
            status(&private, path, None).await.status(),
            200,
            "{path} stays public"
        );
    }
    private.stop().await;
}

/// Dead letters by reason over time: per day of their DLQ timestamp and
/// `dlq.code`, on `GET /api/dlq/daily` and the page (a chart of the daily
/// total and a table by reason); a later look counts only what is new.
/// Codes outside the catalogue (anyone who can write to the topic chooses
/// them) are counted together as `other`, never as columns of their own.
#[tokio::test(flavor = "multi_thread")]
async fn dead_letters_are_counted_by_reason_and_day() {
    use rdkafka::message::{Header, OwnedHeaders};
    let env = TestEnv::new("dash_dlq").await;
    let producer = shared::kafka::producer(&env.settings.kafka).unwrap();
    let letter = |code: Option<&'static str>, day: &'static str| {
        let producer = producer.clone();
        let topic = env.settings.kafka.dlq_topic.clone();
        async move {
            let millis = chrono::DateTime::parse_from_rfc3339(&format!("{day}T09:30:00Z"))
                .unwrap()
                .timestamp_millis();
            let mut headers = OwnedHeaders::new().insert(Header {
                key: "dlq.origin.topic",
                value: Some("events"),
            });
            if let Some(code) = code {
                headers = headers.insert(Header {
                    key: shared::dlq::header::CODE,
                    value: Some(code),
                });
            }
            producer
                .send(
                    FutureRecord::to(&topic)
                        .key("k")
                        .payload("{broken")
                        .headers(headers)
                        .timestamp(millis),
                    Duration::from_secs(10),
                )
                .await
                .map_err(|(e, _)| e)
                .unwrap();
        }
    };
    for (code, day, n) in [
        (Some("invalid_json"), "2026-11-20", 3),
        (Some("key_mismatch"), "2026-11-20", 1),
        (Some("forged_code_one"), "2026-11-20", 1),
        (Some("forged_code_two"), "2026-11-20", 1),
        (Some("invalid_json"), "2026-11-22", 2),
        (None, "2026-11-22", 1),
    ] {
        for _ in 0..n {
            letter(code, day).await;
        }
    }
    let service = Service::start(&env, common::config()).await;
    let (status, body) = service.get("/api/dlq/daily").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["total"], 9, "{body}");
    assert_eq!(body["complete"], true, "{body}");
    assert_eq!(
        body["days"],
        json!([
            {"day": "2026-11-20", "total": 6, "by_code": {"invalid_json": 3, "key_mismatch": 1, "other": 2}},
            {"day": "2026-11-22", "total": 3, "by_code": {"invalid_json": 2, "unknown": 1}},
        ])
    );
    assert_eq!(
        body["totals"],
        json!({"invalid_json": 5, "key_mismatch": 1, "other": 2, "unknown": 1})
    );
    let (_, ranged) = service.get("/api/dlq/daily?from=2026-11-21").await;
    assert_eq!(ranged["total"], 3, "{ranged}");
    assert_eq!(
        service
            .get("/api/dlq/daily?from=2026-11-22&to=2026-11-20")
            .await
            .0,
        400
    );

    let page = page_of(&service.base, None).await;
    let chart = page
        .split(r#"id="chart-dlq""#)
        .nth(1)
        .expect("a dead-letter chart")
        .split("</svg>")
        .next()
        .unwrap();
    let bars: Vec<&str> = chart
        .split(r#"data-value=""#)
        .skip(1)
        .map(|rest| rest.split('"').next().unwrap())
        .collect();
    assert_eq!(bars, ["6", "3"], "{chart}");
    let table = page
        .split(r#"id="dlq""#)
        .nth(1)
        .unwrap()
        .split("</table>")
        .next()
        .unwrap();
    assert!(
        table.contains(r#"<tr data-day="2026-11-22"><td>2026-11-22</td><td data-code="invalid_json">2</td><td data-code="key_mismatch">0</td><td data-code="other">0</td><td data-code="unknown">1</td><td class="total">3</td></tr>"#),
        "{table}"
    );
    assert!(
        !page.contains("forged_code"),
        "a forged code became a column"
    );

    // Later letters are counted once each, on top of the earlier ones.
    letter(Some("key_mismatch"), "2026-11-22").await;
    let body = shared::testkit::eventually(
        "the new dead letter counted",
        Duration::from_secs(10),
        || async {
            let (_, body) = service.get("/api/dlq/daily").await;
            (body["total"] == 10).then_some(body)
        },
    )
    .await;
    assert_eq!(body["days"][1]["by_code"]["key_mismatch"], 1, "{body}");
    assert_eq!(body["totals"]["invalid_json"], 5, "{body}");
    service.stop().await;
}
