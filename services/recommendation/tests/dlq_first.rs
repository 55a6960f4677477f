//! A dead letter is acknowledged by the DLQ before its offset is committed:
//! while the DLQ cannot be written, the batch holding a poison message does
//! not commit (and nothing after it); once it can, the message is copied
//! exactly once and the batch commits.

mod common;

use std::time::{Duration, Instant};

use rdkafka::message::Message;
use shared::testkit::TestEnv;

#[tokio::test(flavor = "multi_thread")]
async fn the_offset_of_a_dead_letter_moves_only_after_the_dlq_has_it() {
    let mut env = TestEnv::new("rec_dlq_first").await;
    let mut settings = env.settings.clone();
    // A DLQ topic that does not exist yet (the broker creates none on its own).
    settings.kafka.dlq_topic = format!("{}-late", env.settings.kafka.dlq_topic);
    settings.kafka.delivery_timeout_ms = 1500;
    env.topics.push(settings.kafka.dlq_topic.clone());
    let t = "2026-11-20T00:00:00Z";
    let mut events: Vec<(String, String)> = (0..3)
        .map(|i| {
            (
                "u1".to_owned(),
                common::interaction("u1", &format!("p{i}"), "view", t),
            )
        })
        .collect();
    events.push(("u1".to_owned(), "{poison".to_owned()));
    events.extend((3..6).map(|i| {
        (
            "u1".to_owned(),
            common::interaction("u1", &format!("p{i}"), "view", t),
        )
    }));
    common::produce(&env.settings.kafka, &events).await;

    let service = common::InProcess::start_with(
        settings.clone(),
        common::config(&env.unique("rec-dlq-first")),
    )
    .await;
    let pool = env.pool().await;
    let topic = &env.settings.kafka.events_topic;
    let failures = || async {
        let text = shared::testkit::metrics_text(&service.addr.to_string()).await;
        shared::testkit::metric(&text, "kappa_sink_commit_failures_total", &[])
    };
    // Two failed attempts: the DLQ write failed, so nothing committed.
    let until = Instant::now() + Duration::from_secs(60);
    while failures().await < 2.0 {
        assert!(Instant::now() < until, "the commit never failed");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        common::progress(&pool, &env.unique("rec-dlq-first"), topic).await,
        (0, 0)
    );

    shared::kafka::ensure_topic(
        &settings.kafka,
        &settings.kafka.dlq_topic,
        shared::testkit::PARTITIONS,
        -1,
    )
    .await
    .unwrap();
    common::wait_applied(
        &pool,
        &env.unique("rec-dlq-first"),
        topic,
        6,
        Duration::from_secs(60),
    )
    .await;
    assert_eq!(
        common::progress(&pool, &env.unique("rec-dlq-first"), topic).await,
        (6, 1)
    );
    let dead = env
        .read_exactly(&settings.kafka.dlq_topic, 1, Duration::from_secs(30))
        .await;
    assert_eq!(dead[0].payload(), Some(&b"{poison"[..]));
    service.stop().await;
}
