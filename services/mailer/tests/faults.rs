//! The mail workers through faults: the users service down for a while
//! (stateless: mails wait, none lost, none doubled), the address store
//! deleted (stateful: rebuilt from the topic, not ready meanwhile), the SMTP
//! server killed mid-stream (mails wait for it), and each worker killed with
//! SIGKILL mid-stream (every request, one mail; a second copy only inside
//! the resend window).

mod common;

use std::time::{Duration, Instant};

use common::{message_id, World};
use mailer::Mode;

/// Batches of the worker in `group` that failed and were retried so far.
fn failed_batches(group: &str) -> f64 {
    let text = shared::catalogue::handle().render();
    shared::testkit::metric(
        &text,
        "kappa_sink_commit_failures_total",
        &[&format!("consumer=\"{group}\"")],
    )
}

/// Waits until the worker in `group` failed a batch `more` times since `from`
/// (it met the fault, it did not just idle).
async fn until_failed(group: &str, from: f64, more: f64, what: &str) {
    shared::testkit::eventually(what, Duration::from_secs(60), || async {
        (failed_batches(group) >= from + more).then_some(())
    })
    .await;
}

/// `n` requests for `users` users: (event id, user, subject).
fn requests(n: usize, users: usize) -> Vec<(String, String, String)> {
    (0..n)
        .map(|i| {
            let id = format!("0193a5c2-7f1e-7000-8000-{:012x}", 0xd000_0000 + i);
            (id, format!("user{}", i % users), format!("mail {i}"))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn stateless_waits_while_the_users_service_is_down() {
    let mut world = World::new("mail_users_down", "").await;
    for u in 0..10 {
        world
            .user(&format!("user{u}"), &format!("user{u}@example.com"))
            .await;
    }
    let config = world.config(Mode::Stateless);
    let group = config.group.clone();
    let mailer = world.mailer(config).await;
    let mails = requests(200, 10);
    world.request(&mails[..100]).await;
    world.wait_delivered(100).await;
    world.stop_users().await;
    let down = Instant::now();
    let failed = failed_batches(&group);
    world.request(&mails[100..]).await;
    // Nothing goes out while it is down (the worker waits, it does not
    // skip): it has read the requests and failed on them, more than once.
    until_failed(
        &group,
        failed,
        2.0,
        "the worker to fail on the down users service",
    )
    .await;
    assert_eq!(
        world.delivered().await.len(),
        100,
        "sent without an address"
    );
    world.start_users().await;
    let delivered = world.wait_delivered(200).await;
    eprintln!("users service down {:?}", down.elapsed());
    for (id, user, _) in &mails {
        assert_eq!(
            delivered[&message_id(id, Mode::Stateless)].to,
            format!("{user}@example.com")
        );
    }
    mailer.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn mails_wait_for_an_smtp_server_killed_mid_stream() {
    let world = World::new("mail_smtp_down", "").await;
    for u in 0..10 {
        world
            .user(&format!("user{u}"), &format!("user{u}@example.com"))
            .await;
    }
    let config = world.config(Mode::Stateless);
    let group = config.group.clone();
    let mailer = world.mailer(config).await;
    let mails = requests(300, 10);
    world.request(&mails[..100]).await;
    world.wait_delivered(100).await;
    // Killed with the worker's connections open: the next mails meet dead
    // sockets, then a refused port.
    let failed = failed_batches(&group);
    world.mailpit.kill();
    world.request(&mails[100..]).await;
    // A send met the outage (a batch failed on it) before the server is back.
    until_failed(&group, failed, 1.0, "a send to meet the dead SMTP server").await;
    world.mailpit.restart();
    let delivered = world.wait_delivered_allowing_resends(300).await;
    for (id, user, _) in &mails {
        assert_eq!(
            delivered[&message_id(id, Mode::Stateless)].to,
            format!("{user}@example.com")
        );
    }
    world
        .assert_copies_within_the_resend_window(&delivered, Mode::Stateless)
        .await;
    mailer.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_deleted_store_is_rebuilt_and_not_ready_meanwhile() {
    let mut world = World::new("mail_rebuild", "").await;
    // Ten address changes of each user on the topic.
    let updates: Vec<(String, String)> = (0..3_000)
        .map(|i| {
            let user = format!("user{}", i % 300);
            let event = serde_json::json!({"type": "user_updated", "user_id": user, "email": format!("{user}+{i}@example.com"), "version": i / 300 + 1});
            (user, event.to_string())
        })
        .collect();
    world.produce(&updates).await;
    let first = world.mailer(world.config(Mode::Stateful)).await;
    let client = world.client.clone();
    let ready = |base: String| {
        let client = client.clone();
        async move {
            client
                .get(format!("{base}/readyz"))
                .send()
                .await
                .map(|r| r.status().as_u16())
                .unwrap_or(0)
        }
    };
    let until = Instant::now() + Duration::from_secs(60);
    while ready(first.base.clone()).await != 200 {
        assert!(Instant::now() < until, "the store never caught up");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    first.stop().await;

    // Last on its partition, an update that jumps versions: the store asks
    // the users service, which is down, so a rebuild cannot reach that
    // partition's end until the service answers (the ask lasts 30 s).
    world.stop_users().await;
    let jump = serde_json::json!({"type": "user_updated", "user_id": "held", "email": "held@example.com", "version": 5});
    world.produce(&[("held".into(), jump.to_string())]).await;
    // Delete the store: the next start rebuilds it from the beginning.
    std::fs::remove_dir_all(world.dir.join("stateful")).unwrap();
    let second = world.mailer(world.config(Mode::Stateful)).await;
    let early = ready(second.base.clone()).await;
    assert_eq!(early, 503, "not ready while rebuilding");
    world.start_users().await;
    let id = "0193a5c2-7f1e-7000-8000-00000000e001";
    world
        .request(&[(id.into(), "user7".into(), "after the rebuild".into())])
        .await;
    let delivered = world.wait_delivered(1).await;
    // user7's last update is number 2707 (version 10).
    assert_eq!(
        delivered[&message_id(id, Mode::Stateful)].to,
        "user7+2707@example.com"
    );
    assert_eq!(ready(second.base.clone()).await, 200);
    second.stop().await;
}

async fn sigkill_mid_stream(mode: Mode) {
    let world = World::new(&format!("mail_kill_{}", mode.as_str()), "").await;
    for u in 0..20 {
        world
            .user(&format!("user{u}"), &format!("user{u}@example.com"))
            .await;
    }
    let mails = requests(1000, 20);
    let producing = {
        let mails = mails.clone();
        let settings = world.env.settings.clone();
        tokio::spawn(async move {
            let producer = shared::kafka::producer(&settings.kafka).unwrap();
            for chunk in mails.chunks(100) {
                for (id, user, subject) in chunk {
                    let payload = serde_json::json!({"type": "mail_requested", "id": id, "user_id": user, "subject": subject, "body": "b"}).to_string();
                    producer
                        .send(
                            rdkafka::producer::FutureRecord::to(&settings.kafka.events_topic)
                                .key(user)
                                .payload(&payload),
                            Duration::from_secs(30),
                        )
                        .await
                        .map_err(|(e, _)| e)
                        .unwrap();
                }
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
        })
    };
    let log = format!("test-mailer-kill-{}", mode.as_str());
    let (mut child, _) = world.mailer_process(mode, &log);
    const KILLS: usize = 3;
    for round in 1..=KILLS {
        let until = Instant::now() + Duration::from_secs(120);
        while world.delivered().await.len() < round * 200 {
            assert!(Instant::now() < until, "no progress");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        child.kill().unwrap();
        child.wait().unwrap();
        child = world.mailer_process(mode, &log).0;
    }
    producing.await.unwrap();
    let delivered = world.wait_delivered_allowing_resends(1000).await;
    for (id, user, subject) in &mails {
        let mail = &delivered[&message_id(id, mode)];
        assert_eq!(
            (&mail.to, &mail.subject),
            (&format!("{user}@example.com"), subject)
        );
    }
    // The bound from outside the worker (not its own log): a SIGKILL can
    // interrupt a mail once, and only the mails in flight: at most
    // `mailer.concurrency` (16, the child's default) per kill, and no mail
    // more than once per kill.
    let extra: usize = delivered.values().map(|d| d.copies - 1).sum();
    assert!(
        extra <= KILLS * 16,
        "{extra} extra copies after {KILLS} kills"
    );
    assert!(delivered.values().all(|d| d.copies <= 1 + KILLS));
    let twice = world
        .assert_copies_within_the_resend_window(&delivered, mode)
        .await;
    let pool = world.env.pool().await;
    let (sent, resent): (i64, i64) =
        sqlx::query_as("SELECT count(*) FILTER (WHERE state = 'sent'), count(*) FILTER (WHERE attempts > 1) FROM mail_log")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(sent, 1000, "every request logged sent, once");
    eprintln!("{}: {resent} request(s) attempted again after a kill, {twice} arrived twice (same Message-ID)", mode.as_str());
    drop(child);
}

#[tokio::test(flavor = "multi_thread")]
async fn sigkill_of_the_stateless_worker_mid_stream_sends_every_mail_once() {
    sigkill_mid_stream(Mode::Stateless).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn sigkill_of_the_stateful_worker_mid_stream_sends_every_mail_once() {
    sigkill_mid_stream(Mode::Stateful).await;
}
