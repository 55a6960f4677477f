//! A mail request produced twice with the same id (a client retrying what
//! timed out but had been written) is one mail, also when the copy arrives
//! after the worker was killed and restarted: the runtime skips it before
//! the worker sees it (no lookup, no mail log write). A request
//! dead-lettered for an unknown user and sent again with its id once the
//! user exists is mailed.

mod common;

use std::time::Duration;

use common::{message_id, World};
use mailer::Mode;
use shared::testkit::{eventually, metric, metrics_text};

/// Waits until the topic holds `records` records (the users service's
/// `user_updated` events among them) and `group` committed them all;
/// returns (applied, dead-lettered).
async fn wait_committed(world: &World, group: &str, records: i64) -> (i64, i64) {
    let pool = world.env.pool().await;
    let topic = &world.env.settings.kafka.events_topic;
    eventually(
        &format!("{records} records committed"),
        Duration::from_secs(90),
        || async {
            if world.env.count(topic).await != records {
                return None;
            }
            let rows = shared::worker::offsets::progress(&pool, group, topic)
                .await
                .ok()?;
            let next: i64 = rows.iter().map(|r| r.1).sum();
            (next == records).then(|| {
                (
                    rows.iter().map(|r| r.2).sum(),
                    rows.iter().map(|r| r.3).sum(),
                )
            })
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn a_request_sent_twice_is_one_mail_across_a_sigkill() {
    let world = World::new("mail_dup", "").await;
    world.user("ann", "ann@example.com").await;
    let mode = Mode::Stateless;
    let group = world.config(mode).group;
    let (first, to_bob, later) = (
        "0193a5c2-7f1e-7000-8000-00000000d001".to_owned(),
        "0193a5c2-7f1e-7000-8000-00000000d002".to_owned(),
        "0193a5c2-7f1e-7000-8000-00000000d003".to_owned(),
    );
    let (mut mailer, _) = world.mailer_process(mode, "test-mailer-dup");
    // bob does not exist yet: his mail is dead-lettered (unknown_user).
    world
        .request(&[
            (first.clone(), "ann".into(), "first".into()),
            (to_bob.clone(), "bob".into(), "to bob".into()),
        ])
        .await;
    // ann's user_updated (not the mailer's: skipped), her mail, bob's
    // mail (dead-lettered).
    assert_eq!(wait_committed(&world, &group, 3).await, (1, 1));
    world.wait_delivered(1).await;

    mailer.kill().unwrap();
    mailer.wait().unwrap();
    world.user("bob", "bob@example.com").await;
    let (_mailer, port) = world.mailer_process(mode, "test-mailer-dup");
    // The first request again (a retry), bob's again now that he exists.
    world
        .request(&[
            (first.clone(), "ann".into(), "first".into()),
            (to_bob.clone(), "bob".into(), "to bob".into()),
            (later.clone(), "ann".into(), "later".into()),
        ])
        .await;
    // bob's user_updated (skipped) and the three requests: the repeat is
    // skipped too, the other two applied.
    assert_eq!(wait_committed(&world, &group, 7).await, (3, 1));

    let delivered = world.wait_delivered(3).await;
    assert_eq!(delivered[&message_id(&to_bob, mode)].to, "bob@example.com");
    assert!(delivered.contains_key(&message_id(&later, mode)));
    let metrics = metrics_text(&format!("127.0.0.1:{port}")).await;
    assert_eq!(
        metric(&metrics, "kappa_sink_duplicates_skipped_total", &[]),
        1.0,
        "the repeat was skipped by the runtime"
    );
    assert_eq!(metric(&metrics, "kappa_mailer_sent_total", &[]), 2.0);
}
