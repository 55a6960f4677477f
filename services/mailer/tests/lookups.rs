//! What a batch of mails costs the stateless worker: each user is looked up
//! once, and mails of users the users service does not know are refused in
//! the batch's own commit (dead-lettered `unknown_user`), not by retrying
//! or bisecting the batch. Records that are not mail (views, user updates)
//! reach no lookup. Counted at the users service and in the runtime's
//! metrics (this binary holds this one test: the counters are its own).

mod common;

use std::time::Duration;

use common::World;
use mailer::Mode;
use rdkafka::message::Message;
use serde_json::json;
use shared::dlq::{header, header_str};
use shared::testkit::{eventually, metric};

const USERS: usize = 10;
const MAILS_EACH: usize = 10;

#[tokio::test(flavor = "multi_thread")]
async fn each_user_is_looked_up_once_and_refusals_cost_no_retry() {
    let world = World::new("mail_lookups", "").await;
    for i in 0..USERS {
        world
            .user(&format!("known{i}"), &format!("known{i}@example.com"))
            .await;
    }
    // Views first (not mail), then ten requests of each of ten known and
    // ten unknown users, interleaved.
    let topic = &world.env.settings.kafka.events_topic;
    let mut records = Vec::new();
    for i in 0..2_000 {
        let user = format!("viewer{}", i % 50);
        let view =
            json!({"type": "interaction", "user_id": user, "product_id": "p1", "action": "view"});
        records.push((user, view.to_string()));
    }
    for n in 0..MAILS_EACH {
        for i in 0..USERS {
            for user in [format!("known{i}"), format!("nobody{i}")] {
                let request = json!({"type": "mail_requested", "id": uuid::Uuid::now_v7(), "user_id": user, "subject": format!("mail {n}"), "body": "hello"});
                records.push((user, request.to_string()));
            }
        }
    }
    world.produce(&records).await;
    // The users' own updates are on the topic too (the outbox): the worker
    // starts on everything at once.
    let total = (records.len() + USERS) as i64;
    eventually(
        "the users' updates published",
        Duration::from_secs(30),
        || async { (world.env.count(topic).await == total).then_some(()) },
    )
    .await;

    // One batch: more room than the 200 requests, a window longer than
    // reading them takes.
    let mut config = world.config(Mode::Stateless);
    config.worker.max_batch_events = 1_000;
    config.worker.max_batch_ms = 3_000;
    let group = config.group.clone();
    let mailer = world.mailer(config).await;

    let delivered = world.wait_delivered(USERS * MAILS_EACH).await;
    assert!(delivered.values().all(|d| d.to.starts_with("known")));
    let letters = world
        .env
        .read_exactly(
            &world.env.settings.kafka.dlq_topic,
            USERS * MAILS_EACH,
            Duration::from_secs(60),
        )
        .await;
    for letter in &letters {
        let h = letter.headers().unwrap();
        assert_eq!(header_str(h, header::CODE), Some("unknown_user"));
        let user = std::str::from_utf8(letter.key().unwrap()).unwrap();
        assert!(user.starts_with("nobody"), "{user}");
        assert_eq!(
            header_str(h, header::REASON).unwrap(),
            format!("the users service has no user {user}")
        );
    }

    let consumer = format!("consumer=\"{group}\"");
    eventually("the batch committed", Duration::from_secs(30), || async {
        let text = shared::catalogue::handle().render();
        (metric(&text, "kappa_sink_committed_offset", &[&consumer]) == total as f64).then_some(())
    })
    .await;
    let text = shared::catalogue::handle().render();
    let lookups = metric(
        &text,
        "kappa_http_requests_total",
        &["route=\"/users/{id}\"", "method=\"GET\""],
    );
    assert_eq!(lookups, (2 * USERS) as f64, "each user looked up once");
    assert_eq!(
        metric(&text, "kappa_mailer_users_calls_total", &[]),
        (2 * USERS) as f64
    );
    assert_eq!(
        metric(&text, "kappa_sink_commit_seconds_count", &[&consumer]),
        1.0,
        "the refusals committed with the batch: nothing bisected, nothing retried"
    );
    assert_eq!(
        metric(
            &text,
            "kappa_sink_refused_total",
            &[&consumer, "code=\"unknown_user\""]
        ),
        (USERS * MAILS_EACH) as f64
    );
    assert_eq!(
        metric(&text, "kappa_sink_skipped_total", &[&consumer]),
        (2_000 + USERS) as f64,
        "views and user updates skipped"
    );
    mailer.stop().await;
}
