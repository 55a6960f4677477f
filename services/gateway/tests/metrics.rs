//! `/metrics` as an operator reads it: every series explained, failure
//! counters present at 0 before the first failure, rejected events counted
//! by reason, histograms in buckets of their unit.

mod common;

use shared::testkit::metric;

#[tokio::test(flavor = "multi_thread")]
async fn metrics_are_explained_zeroed_and_counted_by_reason() {
    let app = common::spawn_app("metrics", |_, _| {}).await;

    let text = app.scrape().await;
    for reason in ["invalid_json", "ts_in_future", "unknown_type", "too_large"] {
        assert!(
            text.contains(&format!(
                "kappa_gateway_events_rejected_total{{reason=\"{reason}\"}} 0"
            )),
            "{reason} is exported at 0 from start-up:\n{text}"
        );
    }
    assert!(
        text.contains("kappa_gateway_events_failed_total 0"),
        "{text}"
    );

    let body = "{\"type\":\"page_access\",\"page\":\"/a\"}\nnot json\n{\"type\":\"nope\"}\nnot json either\n";
    assert_eq!(app.post_ndjson(body).await.status(), 400);
    let text = app.scrape().await;
    let rejected = |reason: &str| {
        metric(
            &text,
            "kappa_gateway_events_rejected_total",
            &[&format!("reason=\"{reason}\"")],
        )
    };
    assert_eq!(rejected("invalid_json"), 2.0);
    assert_eq!(rejected("unknown_type"), 1.0);
    assert_eq!(rejected("ts_in_future"), 0.0);

    // Every exported metric has its meaning, and its kind.
    let names: std::collections::BTreeSet<&str> = text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| l.split(['{', ' ']).next().unwrap())
        .map(|n| {
            ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| n.strip_suffix(s))
                .unwrap_or(n)
        })
        .collect();
    assert!(names.len() >= 4, "{names:?}");
    for name in names {
        assert!(
            text.contains(&format!("# HELP {name} ")),
            "{name} has no HELP line:\n{text}"
        );
        assert!(text.contains(&format!("# TYPE {name} ")), "{name}");
    }
    // Request durations in seconds, up to minutes: not a `+Inf` catch-all.
    assert!(
        text.contains("kappa_http_request_duration_seconds_bucket{") && text.contains("le=\"300\""),
        "{text}"
    );
    app.stop().await;
}
