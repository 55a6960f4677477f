//! The page's charts and runs table as a person sees them, read in headless
//! Chromium (chromedriver): a continuous time axis with the years when the
//! range spans years, a missing day left as a gap and a six-year gap
//! collapsed behind a marker, a y-axis with round ticks, money and counts
//! with thousands separators, a width that follows the window, labels that
//! never overlap, and the runs
//! with % done, duration, rejected records and a failed run's error. A
//! screenshot is saved to `.run/artifacts/dashboard-page.png`.

mod common;

use std::time::Duration;

use common::browser::Browser;
use common::Service;
use futures::future::join_all;
use rdkafka::producer::FutureRecord;
use serde_json::{json, Value};
use shared::testkit::{key_of, repo_root, TestEnv};

/// (day, views, purchase prices in cents). 2026-01-01 has no data; 1990
/// is a backfill older than the default range's ten-year window.
const DATA: [(&str, u32, &[u64]); 5] = [
    ("1990-03-14", 0, &[99]),
    ("2019-06-01", 3, &[]),
    ("2025-12-30", 1_200, &[100_000_000, 100_000_000]),
    ("2025-12-31", 40, &[141_981_246]),
    ("2026-01-02", 25, &[]),
];

async fn produce(env: &TestEnv) {
    let producer = shared::kafka::producer(&env.settings.kafka).unwrap();
    let mut records: Vec<(i64, String)> = Vec::new();
    for (day, views, prices) in DATA {
        let millis = chrono::DateTime::parse_from_rfc3339(&format!("{day}T12:00:00Z"))
            .unwrap()
            .timestamp_millis();
        for i in 0..views {
            records.push((millis, format!(r#"{{"type":"interaction","user_id":"u{}","product_id":"p{}","action":"view","ts":"{day}T12:00:00Z"}}"#, i % 50, i % 7)));
        }
        for (i, price) in prices.iter().enumerate() {
            records.push((millis, format!(r#"{{"type":"interaction","user_id":"u{i}","product_id":"p1","action":"purchase","price_cents":{price},"ts":"{day}T12:00:00Z"}}"#)));
        }
    }
    // One record that does not parse: the run shows it as rejected.
    records.push((records[1].0, "{broken".to_owned()));
    let topic = &env.settings.kafka.events_topic;
    let keys: Vec<String> = records.iter().map(|(_, p)| key_of(p)).collect();
    let sends = records.iter().zip(&keys).map(|((millis, payload), key)| {
        producer.send(
            FutureRecord::to(topic)
                .key(key)
                .payload(payload)
                .timestamp(*millis),
            Duration::from_secs(30),
        )
    });
    for sent in join_all(sends).await {
        sent.map_err(|(e, _)| e).unwrap();
    }
}

/// The text of every element matching `css`.
async fn texts(browser: &Browser, css: &str) -> Vec<String> {
    let found = browser
        .execute(
            "return [...document.querySelectorAll(arguments[0])].map(e => e.textContent)",
            json!([css]),
        )
        .await;
    serde_json::from_value(found).unwrap()
}

/// Attribute `name` of every element matching `css`.
async fn attrs(browser: &Browser, css: &str, name: &str) -> Vec<String> {
    let found = browser
        .execute(
            "return [...document.querySelectorAll(arguments[0])].map(e => e.getAttribute(arguments[1]))",
            json!([css, name]),
        )
        .await;
    serde_json::from_value(found).unwrap()
}

/// The pairs of a chart's axis labels (day, year, gap, y tick) whose boxes
/// overlap as the browser laid them out, as `chart: "a" over "b"`.
async fn colliding_labels(browser: &Browser) -> Vec<String> {
    let found = browser
        .execute(
            r#"const out = [];
            for (const svg of document.querySelectorAll('svg.chart')) {
              const labels = [...svg.querySelectorAll('text.tick, text.year, text.gap, text.ytick')]
                .map(e => [e.textContent, e.getBoundingClientRect()]);
              for (let i = 0; i < labels.length; i++) {
                for (let j = i + 1; j < labels.length; j++) {
                  const [a, p] = labels[i], [b, q] = labels[j];
                  if (p.left < q.right && q.left < p.right && p.top < q.bottom && q.top < p.bottom) {
                    out.push(`${svg.id}: "${a}" over "${b}"`);
                  }
                }
              }
            }
            return out;"#,
            json!([]),
        )
        .await;
    serde_json::from_value(found).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_charts_show_a_time_axis_round_ticks_years_and_formatted_numbers() {
    let env = TestEnv::new("dash_charts").await;
    produce(&env).await;
    let service = Service::start(&env, common::config()).await;
    let (run, _) = service.replay(json!({"from": "earliest"})).await;
    assert_eq!(run["state"], "succeeded", "{run}");
    // A failed run as the runner leaves one, 3 s from start to failure.
    sqlx::query(
        "INSERT INTO replay_runs (trigger, state, started_at, finished_at, error)
         VALUES ('manual', 'failed', now() - interval '4 seconds', now() - interval '1 second',
                 'reading watermarks: broker down (test)')",
    )
    .execute(&env.pool().await)
    .await
    .unwrap();

    let browser = Browser::start().await;
    browser.set_window_size(1280, 2400).await;
    browser.goto(&format!("{}/", service.base)).await;

    // The newest days with data: the 1990 backfill is outside the window,
    // 2019 and 2025-12/2026-01 are in it, with the years under the labels.
    let days = attrs(&browser, "#chart-views rect[data-day]", "data-day").await;
    assert_eq!(
        days,
        ["2019-06-01", "2025-12-30", "2025-12-31", "2026-01-02"]
    );
    let labels = texts(&browser, "#chart-views .tick").await;
    assert_eq!(labels, ["06-01", "12-30", "12-31", "01-01", "01-02"]);
    let years = texts(&browser, "#chart-views .year").await;
    assert_eq!(years, ["2019", "2025", "2026"]);

    // 2026-01-01 is a gap of one day's width; the six years without data
    // are one break with a marker.
    let x: Vec<f64> = attrs(&browser, "#chart-views rect[data-day]", "x")
        .await
        .iter()
        .map(|v| v.parse().unwrap())
        .collect();
    let step = x[2] - x[1];
    assert!((x[3] - x[2] - 2.0 * step).abs() < 0.01, "{x:?}");
    let gap = (
        attrs(&browser, "#chart-views .gap-break", "data-from").await,
        attrs(&browser, "#chart-views .gap-break", "data-to").await,
    );
    assert_eq!(gap, (vec!["2019-06-02".into()], vec!["2025-12-29".into()]));
    assert_eq!(texts(&browser, "#chart-views .gap").await, ["7 yr"]);

    // Round y ticks, printed as counts and as money.
    let ticks = texts(&browser, "#chart-views .ytick").await;
    assert_eq!(ticks, ["0", "500", "1,000", "1,500"]);
    let ticks = texts(&browser, "#chart-revenue .ytick").await;
    assert_eq!(
        ticks,
        ["$0", "$500,000", "$1,000,000", "$1,500,000", "$2,000,000"]
    );
    let total = |id: &'static str| texts(&browser, id);
    assert_eq!(total("#total-revenue").await, ["$3,419,812.46"]);
    assert_eq!(total("#total-views").await, ["1,268"]);
    let tips = texts(&browser, "#chart-revenue rect[data-day] title").await;
    assert!(
        tips.contains(&"2025-12-31: $1,419,812.46".to_owned()),
        "{tips:?}"
    );

    // The charts follow the window's width.
    let width = || async {
        let w = browser
            .execute(
                "return document.getElementById('chart-views').getBoundingClientRect().width",
                json!([]),
            )
            .await;
        w.as_f64().unwrap()
    };
    let wide = width().await;
    browser.set_window_size(700, 2400).await;
    let narrow = width().await;
    assert!(
        wide > narrow + 400.0 && narrow > 500.0,
        "{wide} then {narrow}"
    );

    // The runs: % done, duration, rejected records, and the error.
    let headers = texts(&browser, "#runs th").await;
    for column in ["% done", "ETA", "records", "rejected", "duration", "error"] {
        assert!(headers.contains(&column.to_owned()), "{headers:?}");
    }
    let row = |css: &str| format!("#runs tr[data-run=\"{}\"] {css}", run["id"]);
    assert_eq!(texts(&browser, &row(".pct")).await, ["100.0%"]);
    assert_eq!(texts(&browser, &row(".rejected")).await, ["1"]);
    // 1,272 interactions and the broken record.
    let records: u32 = DATA.iter().map(|(_, v, p)| v + p.len() as u32).sum();
    assert_eq!(records + 1, 1_273);
    assert_eq!(texts(&browser, &row(".records")).await, ["1,273"]);
    assert!(
        texts(&browser, &row(".duration")).await[0].ends_with(" s"),
        "{run}"
    );
    let failed = run["id"].as_i64().unwrap() + 1;
    let failed = |css: &str| format!("#runs tr[data-run=\"{failed}\"] {css}");
    assert_eq!(
        texts(&browser, &failed(".error")).await,
        ["reading watermarks: broker down (test)"]
    );
    assert_eq!(texts(&browser, &failed(".duration")).await, ["3.0 s"]);

    browser.set_window_size(1280, 2400).await;
    let shot = repo_root()
        .join(".run")
        .join("artifacts")
        .join("dashboard-page.png");
    browser.screenshot(&shot).await;
    let size = std::fs::metadata(&shot).map(|m| m.len()).unwrap_or(0);
    assert!(
        size > 20_000,
        "screenshot at {} ({size} bytes)",
        shot.display()
    );
    println!("dashboard page screenshot: {}", shot.display());
    // Every label of every chart's axes stands clear of the others, on the
    // default range and on one whose days are narrow (a month before 2019's
    // day, then the break: the gap's length and 2025 meet beside it).
    assert_eq!(colliding_labels(&browser).await, Vec::<String>::new());
    browser
        .goto(&format!("{}/?from=2019-05-01&to=2026-01-02", service.base))
        .await;
    let years = texts(&browser, "#chart-views .year").await;
    assert_eq!(years, ["2019", "2025", "2026"]);
    assert_eq!(texts(&browser, "#chart-views .gap").await, ["7 yr"]);
    assert_eq!(colliding_labels(&browser).await, Vec::<String>::new());
    let (_, metrics) = service.get("/api/metrics/daily").await;
    assert_eq!(
        metrics["totals"]["revenue_cents"],
        Value::from(341_981_246u64)
    );
    browser.quit().await;
    service.stop().await;
}
