//! Event ids are idempotent: the same id produced twice (a client retrying
//! what timed out but had been written) is applied once, whether the repeat
//! lands in the same batch, in a later one, or after the worker was killed
//! and restarted; its offset commits all the same. An event dead-lettered
//! and sent again with its id once the cause is gone is applied.

mod common;

use std::time::Duration;

use shared::claim_check::sha256_hex;
use shared::event::{ClaimRef, ClaimedEvent, EventType};
use shared::testkit::{eventually, TestEnv};
use sqlx::PgPool;
use uuid::Uuid;

const T: &str = "2026-11-20T00:00:00Z";

/// A view of `product` by u1 carrying `id`.
fn view_with_id(id: Uuid, product: &str) -> String {
    let event = common::interaction("u1", product, "view", T);
    event.replacen('{', &format!(r#"{{"id":"{id}","#), 1)
}

fn keyed(payloads: &[&str]) -> Vec<(String, String)> {
    payloads
        .iter()
        .map(|p| ("u1".to_owned(), (*p).to_owned()))
        .collect()
}

/// Waits until `group` committed every record of the topic (`records` in all).
async fn wait_committed(pool: &PgPool, group: &str, topic: &str, records: i64) {
    eventually(
        &format!("{records} records committed"),
        Duration::from_secs(90),
        || async {
            let rows = shared::worker::offsets::progress(pool, group, topic)
                .await
                .ok()?;
            (rows.iter().map(|r| r.1).sum::<i64>() == records).then_some(())
        },
    )
    .await;
}

/// Views in the model's daily counters.
async fn views(pool: &PgPool) -> i64 {
    sqlx::query_scalar("SELECT coalesce(sum(views), 0)::int8 FROM rec_daily")
        .fetch_one(pool)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_same_event_id_twice_is_applied_once() {
    let env = TestEnv::new("rec_dup").await;
    let group = env.unique("rec-dup");
    let topic = &env.settings.kafka.events_topic;
    let pool = env.pool().await;
    let service = common::InProcess::start(&env, env.settings.database.url.expose(), &group).await;
    let first = view_with_id(Uuid::now_v7(), "p1");
    let second = view_with_id(Uuid::now_v7(), "p2");
    // Without an id, the same bytes twice are two events (their ids derive
    // from their offsets).
    let plain = common::interaction("u1", "p3", "view", T);

    // One batch: the first event, another, the first again.
    common::produce(
        &env.settings.kafka,
        &keyed(&[&first, &second, &first, &plain, &plain]),
    )
    .await;
    wait_committed(&pool, &group, topic, 5).await;
    // A batch of its own, after the first one committed: the first again.
    common::produce(&env.settings.kafka, &keyed(&[&first])).await;
    wait_committed(&pool, &group, topic, 6).await;

    assert_eq!(common::progress(&pool, &group, topic).await, (4, 0));
    assert_eq!(views(&pool).await, 4, "the repeats changed no counter");
    let metrics = shared::testkit::metrics_text(&service.addr.to_string()).await;
    let consumer = format!("consumer=\"{group}\"");
    assert_eq!(
        shared::testkit::metric(
            &metrics,
            "kappa_sink_duplicates_skipped_total",
            &[&consumer]
        ),
        2.0,
        "{metrics}"
    );
    service.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn after_a_sigkill_a_repeat_is_skipped_and_a_dead_letter_sent_again_applies() {
    let env = TestEnv::new("rec_dup_kill").await;
    let group = env.unique("rec-dup-kill");
    let topic = &env.settings.kafka.events_topic;
    let url = env.settings.database.url.expose().to_owned();
    let pool = env.pool().await;
    let first = view_with_id(Uuid::now_v7(), "p1");
    // A claim-checked view whose payload never reached the store: dead-lettered.
    let lost = Uuid::now_v7();
    let body = view_with_id(lost, "from-the-store");
    let envelope = ClaimedEvent {
        event_type: EventType::Interaction,
        id: Some(lost),
        ts: None,
        key: "u1".into(),
        claim_check: ClaimRef {
            token: Uuid::new_v4(),
            sha256: sha256_hex(body.as_bytes()),
            size: body.len() as u64,
            content_type: "application/json".into(),
        },
    };
    let envelope = String::from_utf8(envelope.to_json()).unwrap();
    let plain = common::interaction("u1", "p2", "view", T);

    let mut child = common::spawn_child(&env, &url, &group, "test-rec-dup-kill");
    common::produce(&env.settings.kafka, &keyed(&[&first, &envelope, &plain])).await;
    wait_committed(&pool, &group, topic, 3).await;
    assert_eq!(common::progress(&pool, &group, topic).await, (2, 1));

    // Killed, restarted: nothing of the first life is in memory.
    common::kill9(&mut child);
    let mut child = common::spawn_child(&env, &url, &group, "test-rec-dup-kill");
    // The first event again (a retry), and the dead-lettered one again with
    // its id, inline this time.
    let more = common::interaction("u1", "p3", "view", T);
    common::produce(&env.settings.kafka, &keyed(&[&first, &body, &more])).await;
    wait_committed(&pool, &group, topic, 6).await;

    assert_eq!(
        common::progress(&pool, &group, topic).await,
        (4, 1),
        "the repeat skipped, the dead letter's second copy applied"
    );
    assert_eq!(views(&pool).await, 4);
    let skipped = child
        .wait_metric("kappa_sink_duplicates_skipped_total", 1.0)
        .await;
    assert_eq!(skipped, 1.0);
    common::terminate(&mut child);
}
