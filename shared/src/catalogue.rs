//! Every metric the suite exports, in one table, and the process's
//! Prometheus recorder that exports them: its kind, its labels and
//! what it means. `/metrics` prints the meaning as `# HELP`; histograms get
//! buckets of their own unit (`_seconds` or `_size`, a count); the README's
//! metrics reference is this table. A test reads the sources and fails on
//! a metric that is not here, and on a README that does not list it.

/// What a metric is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
}

/// One metric of the suite.
#[derive(Debug, Clone, Copy)]
pub struct Metric {
    pub name: &'static str,
    pub kind: Kind,
    /// Label names, comma-separated ("" for none).
    pub labels: &'static str,
    pub help: &'static str,
}

const fn m(name: &'static str, kind: Kind, labels: &'static str, help: &'static str) -> Metric {
    Metric {
        name,
        kind,
        labels,
        help,
    }
}

use std::sync::OnceLock;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use Kind::{Counter, Gauge, Histogram};

/// The suite's metrics, by component.
pub const METRICS: &[Metric] = &[
    // HTTP, every service.
    m("kappa_http_requests_total", Counter, "route,method,status", "HTTP requests answered."),
    m("kappa_http_request_duration_seconds", Histogram, "route,method,status", "Time to answer an HTTP request."),
    m("kappa_memory_releases_total", Counter, "", "Times freed memory was returned to the OS after a burst of work (shared::memory)."),
    // Workers (shared::worker), every consumer.
    m("kappa_sink_events_applied_total", Counter, "consumer", "Events applied and committed with their offsets."),
    m("kappa_sink_dead_lettered_total", Counter, "consumer", "Records committed as dead letters (unparseable, refused, unresolvable)."),
    m("kappa_sink_refused_total", Counter, "consumer,code", "Events the worker refused (an outcome, dead-lettered with the batch's commit) or the database refused (isolated by bisection, then dead-lettered)."),
    m("kappa_sink_skipped_total", Counter, "consumer", "Records that are not the worker's (other event types, events it does not act on): read, their offsets committed with the next commit."),
    m("kappa_sink_duplicates_skipped_total", Counter, "consumer", "Events skipped (offsets committed, nothing applied): their id came within kafka.dedupe_window records before."),
    m("kappa_sink_commit_failures_total", Counter, "consumer", "Commits that failed and were retried (database or broker unavailable)."),
    m("kappa_sink_claim_check_failures_total", Counter, "consumer", "Reads of the claim-check store that failed and were retried (store unavailable): the batch waits, no payload is judged missing."),
    m("kappa_sink_fenced_total", Counter, "consumer", "Commits refused because a newer owner of the partition fenced this one."),
    m("kappa_sink_producers_replaced_total", Counter, "consumer", "Kafka-transaction mode: transactions that did not finish within 45 s (librdkafka can wait forever for a group coordinator that left the cluster), their producer replaced by a new one under the same transactional id."),
    m("kappa_sink_batch_size", Histogram, "consumer", "Records per committed range (a count)."),
    m("kappa_sink_commit_seconds", Histogram, "consumer", "Time from a range's first apply to its commit."),
    m("kappa_sink_fetch_to_commit_seconds", Histogram, "consumer", "Time from a record's fetch to its commit (arrival latency, not event-time lag)."),
    m("kappa_sink_event_time_lag_seconds", Gauge, "consumer", "Wall clock minus the newest event time committed (large during a backfill)."),
    m("kappa_sink_consumer_lag", Gauge, "consumer", "Records between the committed offsets and the partitions' ends."),
    m("kappa_sink_committed_offset", Gauge, "consumer", "Per partition, the offset the group resumes from, as this instance last committed or loaded it."),
    m("kappa_sink_records_in_hand", Gauge, "consumer", "Records polled and not yet committed."),
    m("kappa_sink_partitions_assigned", Gauge, "consumer", "Partitions this instance owns."),
    m("kappa_kafka_client_errors_total", Counter, "client", "Errors librdkafka reported (broker down, timeouts)."),
    m("kappa_dlq_messages_total", Counter, "code", "Records written to the dead-letter topic, by reason."),
    m("kappa_claim_checks_rejected_total", Counter, "code", "Claim checks that could not be resolved (missing or corrupt payload)."),
    m("kappa_outbox_published_total", Counter, "outbox", "Outbox rows published to Kafka."),
    m("kappa_outbox_failures_total", Counter, "outbox", "Outbox relay rounds that failed and were retried."),
    m("kappa_outbox_unsent", Gauge, "outbox", "Outbox rows not yet published."),
    m("kappa_outbox_lag_seconds", Gauge, "outbox", "Age of the oldest unpublished outbox row."),
    // Gateway.
    m("kappa_gateway_events_produced_total", Counter, "", "Events acknowledged by the broker."),
    m("kappa_gateway_events_rejected_total", Counter, "reason", "Events refused before producing, by reason (the parser's codes, too_large)."),
    m("kappa_gateway_events_failed_total", Counter, "", "Events the broker did not acknowledge in time (503)."),
    m("kappa_gateway_claim_checks_total", Counter, "", "Events stored by claim check (too large to travel inline)."),
    m("kappa_gateway_products_uploaded_total", Counter, "", "Product uploads accepted."),
    m("kappa_gateway_upload_bytes_total", Counter, "kind", "Bytes of product assets stored."),
    m("kappa_dlq_redriven_total", Counter, "code", "Dead letters republished to their origin topic by a redrive (POST /dlq/redrive), by reason."),
    m("kappa_dlq_redrive_refused_total", Counter, "why", "Dead letters a redrive refused: max_redrives, already_redriven, no_origin, origin_topic_not_allowed."),
    // Recommendation.
    m("kappa_recommendation_bad_entries_total", Counter, "table", "Stored model entries dropped on load (not a finite score)."),
    m("kappa_recommendation_event_time_clamped_total", Counter, "", "Interactions whose event time was after their record's timestamp, counted at the record's."),
    m("kappa_recommendation_answers_in_snapshot_total", Counter, "", "Recommendations for a user read in a REPEATABLE READ transaction: a commit fell between the unlocked reads three times, or the popular fill-in of the position was not kept yet."),
    // Dashboard (batch replays).
    m("kappa_replay_duration_seconds", Histogram, "", "Duration of a successful replay."),
    m("kappa_replay_events_per_second", Gauge, "", "Throughput of the last successful replay."),
    m("kappa_replay_failures_total", Counter, "", "Replays that failed."),
    m("kappa_replay_duplicates_skipped_total", Counter, "", "Records a replay skipped: their event id came within kafka.dedupe_window records before."),
    m("kappa_replay_last_success_timestamp_seconds", Gauge, "", "When the last replay succeeded (Unix time)."),
    m("kappa_replay_progress", Gauge, "", "Fraction of the running replay's records read (0 to 1)."),
    m("kappa_dashboard_audit_drift", Gauge, "measure", "Kappa audit over every day: per measure, the absolute differences between the streaming and the batch half, summed over the days (0: they agree)."),
    m("kappa_dashboard_audit_last_timestamp_seconds", Gauge, "", "When the last Kappa audit over every day ran (Unix time)."),
    // Mailers.
    m("kappa_mailer_sent_total", Counter, "mode", "Mails handed to the SMTP server."),
    m("kappa_mailer_resent_total", Counter, "mode", "Mails sent again after a crash between SMTP and commit."),
    m("kappa_mailer_stage_seconds", Histogram, "mode,stage", "Time per stage of sending mail: a user's address (once per user and batch), then per mail SMTP and the log."),
    m("kappa_mailer_request_to_sent_seconds", Histogram, "mode", "Time from the mail request's event time to the SMTP acknowledgement."),
    m("kappa_mailer_users_calls_total", Counter, "", "Calls of the stateless mailer to the users service."),
    m("kappa_mailer_parked_total", Counter, "mode", "Mail requests the stateful mailer parked: their user was not in its address store yet."),
    m("kappa_mailer_parked", Gauge, "mode", "Mail requests parked now, waiting for their user (or their wait to end)."),
    m("kappa_mailer_users_circuit_open", Gauge, "", "1 while the circuit to the users service is open."),
    m("kappa_mailer_store_asked_total", Counter, "answer", "User updates the stateful mailer's store asked the users service about (a version jump, no version, another address under the same version), by answer: `user`, `unknown`, `unanswered`."),
    // Product DAG.
    m("kappa_products_parts_total", Counter, "kind,outcome", "Asset branch results produced."),
    m("kappa_products_branch_seconds", Histogram, "kind", "Time an asset branch takes per upload."),
    m("kappa_products_buffered_total", Counter, "", "Part events buffered by the creator while waiting for the rest."),
    m("kappa_products_decided_total", Counter, "status", "Products created or failed by the creator."),
    m("kappa_products_ignored_total", Counter, "why", "Events the creator ignored (a result nobody waits for, an upload seen again)."),
    m("kappa_products_part_seconds", Histogram, "kind", "Time from upload to a part's arrival at the creator."),
    m("kappa_products_join_seconds", Histogram, "", "Time from upload to the creator's decision."),
    // MapReduce.
    m("kappa_pagecount_jobs_started_total", Counter, "", "Page-count jobs started."),
    m("kappa_pagecount_jobs_succeeded_total", Counter, "", "Page-count jobs finished."),
    m("kappa_pagecount_chunks_mapped_total", Counter, "", "Map tasks (chunks) completed."),
    m("kappa_pagecount_map_seconds", Histogram, "", "Time to map one chunk."),
    m("kappa_pagecount_chunk_read_stalls_total", Counter, "", "Chunk reads that saw nothing of their chunk for 15 s and assigned its partition again."),
];

/// Buckets of histograms in seconds: 0.5 ms to 15 min.
pub const SECONDS_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    60.0, 300.0, 900.0,
];

/// Buckets of histograms that count (`_size`): 1 to 50,000.
pub const COUNT_BUCKETS: &[f64] = &[
    1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0, 2000.0, 5000.0, 10000.0, 20000.0,
    50000.0,
];

/// The process-wide Prometheus recorder, installed on first use.
pub fn handle() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let handle = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), SECONDS_BUCKETS)
            .and_then(|b| b.set_buckets_for_metric(Matcher::Suffix("_size".into()), COUNT_BUCKETS))
            .expect("static buckets are valid")
            .install_recorder()
            .expect("no other metrics recorder is installed");
        describe();
        handle
    })
}

/// The metric called `name`, if the catalogue has it.
pub fn find(name: &str) -> Option<&'static Metric> {
    METRICS.iter().find(|m| m.name == name)
}

/// Gives every metric its `# HELP` (call once the recorder is installed).
pub fn describe() {
    for metric in METRICS {
        match metric.kind {
            Kind::Counter => metrics::describe_counter!(metric.name, metric.help),
            Kind::Gauge => metrics::describe_gauge!(metric.name, metric.help),
            Kind::Histogram => metrics::describe_histogram!(metric.name, metric.help),
        }
    }
}

/// Registers failure counters at 0, so a dashboard or an alert sees the
/// series from start-up rather than only after the first failure.
pub fn zero(name: &'static str, labels: &[(&'static str, String)]) {
    debug_assert!(find(name).is_some(), "{name} is not in the catalogue");
    handle(); // a series registered before the recorder is lost
    let labels: Vec<metrics::Label> = labels
        .iter()
        .map(|(k, v)| metrics::Label::new(*k, v.clone()))
        .collect();
    metrics::counter!(name, labels).increment(0);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histograms_have_a_unit_with_buckets_and_names_are_unique() {
        for metric in METRICS.iter().filter(|m| m.kind == Kind::Histogram) {
            assert!(
                metric.name.ends_with("_seconds") || metric.name.ends_with("_size"),
                "{}: a histogram is in seconds or a count (_size)",
                metric.name
            );
        }
        for metric in METRICS.iter().filter(|m| m.kind == Kind::Counter) {
            assert!(metric.name.ends_with("_total"), "{}", metric.name);
        }
        let mut names: Vec<&str> = METRICS.iter().map(|m| m.name).collect();
        names.sort_unstable();
        let count = names.len();
        names.dedup();
        assert_eq!(names.len(), count, "a metric is listed twice");
    }

    #[test]
    fn counts_and_seconds_fall_in_buckets_of_their_unit() {
        let handle = handle();
        metrics::histogram!("kappa_sink_batch_size", "consumer" => "unit").record(214.0);
        metrics::histogram!("kappa_sink_commit_seconds", "consumer" => "unit").record(0.003);
        let text = handle.render();
        let bucket = |name: &str, le: &str| {
            crate::testkit::metric(
                &text,
                &format!("{name}_bucket"),
                &["consumer=\"unit\"", &format!("le=\"{le}\"")],
            )
        };
        // A batch of 214 records is in the 500 bucket, not only in +Inf.
        assert_eq!(bucket("kappa_sink_batch_size", "200"), 0.0, "{text}");
        assert_eq!(bucket("kappa_sink_batch_size", "500"), 1.0, "{text}");
        assert_eq!(bucket("kappa_sink_commit_seconds", "0.0025"), 0.0, "{text}");
        assert_eq!(bucket("kappa_sink_commit_seconds", "0.005"), 1.0, "{text}");
        assert!(text.contains("# HELP kappa_sink_batch_size Records per committed range"));
    }

    /// `(kind, name)` of every `metrics::<kind>!("name"` in `text`.
    fn used(text: &str) -> Vec<(Kind, String)> {
        let mut found = Vec::new();
        for (macro_name, kind) in [
            ("metrics::counter!(", Kind::Counter),
            ("metrics::gauge!(", Kind::Gauge),
            ("metrics::histogram!(", Kind::Histogram),
        ] {
            for (at, _) in text.match_indices(macro_name) {
                let rest = text[at + macro_name.len()..].trim_start();
                if let Some(rest) = rest.strip_prefix('"') {
                    let name = &rest[..rest.find('"').unwrap()];
                    if name.bytes().all(|b| b.is_ascii_lowercase() || b == b'_') {
                        found.push((kind, name.to_owned()));
                    }
                }
            }
        }
        found
    }

    #[test]
    fn every_metric_in_the_code_is_catalogued_and_in_the_readme() {
        let files = crate::testkit::workspace_sources();
        let mut seen = 0;
        for file in &files {
            let text = std::fs::read_to_string(file).unwrap();
            for (kind, name) in used(&text) {
                seen += 1;
                let metric = find(&name).unwrap_or_else(|| {
                    panic!("{name} ({}) is not in the catalogue", file.display())
                });
                assert_eq!(metric.kind, kind, "{name} in {}", file.display());
            }
        }
        assert!(seen > 40, "the scan found only {seen} metrics");
        let readme = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md");
        let readme = std::fs::read_to_string(readme).unwrap();
        for metric in METRICS {
            assert!(
                readme.contains(&format!("| `{}` |", metric.name)),
                "README's metrics reference lacks {}",
                metric.name
            );
        }
    }
}
