//! Both mail workers end to end, on a real SMTP server (Mailpit): a request
//! typed into kcat becomes one mail to the right address; after an address
//! change, the stateful worker uses the new one (the update is earlier in the
//! same partition); bad input goes to the DLQ with its reason and the worker
//! goes on.

mod common;

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{message_id, World};
use mailer::Mode;
use rdkafka::message::Message;
use shared::dlq::{header, header_str};

#[tokio::test(flavor = "multi_thread")]
async fn a_request_typed_into_kcat_is_one_mail_in_each_mode() {
    let world = World::new("mail_kcat", "").await;
    world.user("ann", "ann@example.com").await;
    let stateless = world.mailer(world.config(Mode::Stateless)).await;
    let stateful = world.mailer(world.config(Mode::Stateful)).await;

    let kafka = &world.env.settings.kafka;
    let id = "0193a5c2-7f1e-7000-8000-00000000a001";
    let line = format!(
        r#"ann:{{"type":"mail_requested","id":"{id}","user_id":"ann","subject":"Welcome","body":"Hello Ann"}}"#
    );
    let mut kcat = Command::new("kcat")
        .args([
            "-P",
            "-b",
            &kafka.brokers,
            "-t",
            &kafka.events_topic,
            "-K:",
            "-X",
            "partitioner=murmur2_random",
        ])
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    kcat.stdin
        .take()
        .unwrap()
        .write_all(format!("{line}\n").as_bytes())
        .unwrap();
    assert!(kcat.wait().unwrap().success());

    // Both modes send it: two mails (each its own mode), one per worker.
    let mut modes = Vec::new();
    let until = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let list: serde_json::Value = world
            .client
            .get(format!("{}/messages", world.mailpit.api()))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let messages = list["messages"].as_array().unwrap().clone();
        if messages.len() >= 2 {
            assert_eq!(messages.len(), 2);
            for m in &messages {
                assert_eq!(m["To"][0]["Address"], "ann@example.com");
                assert_eq!(m["Subject"], "Welcome");
                modes.push(
                    world
                        .header(m["ID"].as_str().unwrap(), "X-Mailer-Mode")
                        .await
                        .unwrap(),
                );
            }
            break;
        }
        assert!(std::time::Instant::now() < until, "not delivered");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    modes.sort();
    assert_eq!(modes, ["stateful", "stateless"]);
    let pool = world.env.pool().await;
    let logged: Vec<(String, String, Option<i64>)> = sqlx::query_as(
        "SELECT mode, address, user_version FROM mail_log WHERE state = 'sent' ORDER BY mode",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(
        logged,
        vec![
            ("stateful".into(), "ann@example.com".into(), Some(1)),
            ("stateless".into(), "ann@example.com".into(), Some(1)),
        ]
    );
    stateless.stop().await;
    stateful.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn after_an_address_change_the_stateful_worker_uses_the_new_address() {
    let world = World::new("mail_change", "").await;
    world.user("bob", "bob@old.example.com").await;
    world.user("bob", "bob@new.example.com").await;
    // The change is on the topic (through the outbox) before the request.
    world
        .env
        .read_exactly(
            &world.env.settings.kafka.events_topic,
            2,
            Duration::from_secs(30),
        )
        .await;
    let id = "0193a5c2-7f1e-7000-8000-00000000b001";
    world
        .request(&[(id.into(), "bob".into(), "Your statement".into())])
        .await;
    let stateful = world.mailer(world.config(Mode::Stateful)).await;
    let delivered = world.wait_delivered(1).await;
    let mail = &delivered[&message_id(id, Mode::Stateful)];
    assert_eq!(mail.to, "bob@new.example.com");
    stateful.stop().await;
}

/// Anyone who can write to the topic can write a `user_updated`: one
/// keyed by its user with a version far ahead, and one keyed by another
/// user. Neither moves the stateful worker's address: the first is asked of
/// the users service (which says version 2), the second fails the gate
/// every consumer has (`key_mismatch`).
#[tokio::test(flavor = "multi_thread")]
async fn a_forged_address_change_leaves_the_store_and_the_mails_unchanged() {
    let world = World::new("mail_forged", "").await;
    world.user("probe", "probe@old.example.com").await;
    world.user("probe", "probe@real.example.com").await;
    let topic = world.env.settings.kafka.events_topic.clone();
    world
        .env
        .read_exactly(&topic, 2, Duration::from_secs(30))
        .await;
    let producer = shared::kafka::producer(&world.env.settings.kafka).unwrap();
    for (key, email) in [
        ("probe", "evil@evil.example"),
        ("other", "evil2@evil.example"),
    ] {
        let forged = serde_json::json!({"type": "user_updated", "user_id": "probe", "email": email, "version": 999});
        producer
            .send(
                rdkafka::producer::FutureRecord::to(&topic)
                    .key(key)
                    .payload(&forged.to_string()),
                Duration::from_secs(10),
            )
            .await
            .map_err(|(e, _)| e)
            .unwrap();
    }
    let id = "0193a5c2-7f1e-7000-8000-00000000f001";
    world
        .request(&[(id.into(), "probe".into(), "Your statement".into())])
        .await;
    let stateful = world.mailer(world.config(Mode::Stateful)).await;
    let delivered = world.wait_delivered(1).await;
    assert_eq!(
        delivered[&message_id(id, Mode::Stateful)].to,
        "probe@real.example.com"
    );
    let pool = world.env.pool().await;
    let (address, version): (String, Option<i64>) =
        sqlx::query_as("SELECT address, user_version FROM mail_log WHERE state = 'sent'")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(
        (address.as_str(), version),
        ("probe@real.example.com", Some(2))
    );
    stateful.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_requests_go_to_the_dlq_and_the_worker_goes_on() {
    // The SMTP server takes only example.com recipients.
    let world = World::new("mail_bad", r#"--smtp-allowed-recipients @example\.com$"#).await;
    world.user("ann", "ann@example.com").await;
    world.user("eve", "eve@refused.test").await;
    let producer = shared::kafka::producer(&world.env.settings.kafka).unwrap();
    let no_user = r#"{"type":"mail_requested","subject":"s","body":"b"}"#;
    producer
        .send(
            rdkafka::producer::FutureRecord::to(&world.env.settings.kafka.events_topic)
                .key("ann")
                .payload(no_user),
            Duration::from_secs(10),
        )
        .await
        .map_err(|(e, _)| e)
        .unwrap();
    let ids = [
        "0193a5c2-7f1e-7000-8000-00000000c001",
        "0193a5c2-7f1e-7000-8000-00000000c002",
        "0193a5c2-7f1e-7000-8000-00000000c003",
    ];
    world
        .request(&[
            (ids[0].into(), "nobody".into(), "to nobody".into()),
            (ids[1].into(), "eve".into(), "refused".into()),
            (ids[2].into(), "ann".into(), "fine".into()),
        ])
        .await;
    let stateless = world.mailer(world.config(Mode::Stateless)).await;
    let delivered = world.wait_delivered(1).await;
    assert_eq!(
        delivered[&message_id(ids[2], Mode::Stateless)].to,
        "ann@example.com"
    );
    let letters = world
        .env
        .read_exactly(
            &world.env.settings.kafka.dlq_topic,
            3,
            Duration::from_secs(60),
        )
        .await;
    let mut codes: Vec<String> = letters
        .iter()
        .map(|m| {
            header_str(m.headers().unwrap(), header::CODE)
                .unwrap()
                .to_owned()
        })
        .collect();
    codes.sort();
    assert_eq!(codes, ["missing_field", "smtp_refused", "unknown_user"]);
    // The refused mail's row says so, not `pending` as if interrupted.
    let pool = world.env.pool().await;
    let (state, address, reason): (String, Option<String>, Option<String>) = sqlx::query_as(
        "SELECT state, address, refused_reason FROM mail_log WHERE event_id = $1::uuid",
    )
    .bind(ids[1])
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(
        (state.as_str(), address.as_deref()),
        ("refused", Some("eve@refused.test"))
    );
    assert!(reason.is_some_and(|r| !r.is_empty()));
    stateless.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn each_users_mails_leave_in_request_order_all_users_side_by_side() {
    let world = World::new("mail_order", "").await;
    let users = ["ann", "bob", "cy", "dee"];
    for user in users {
        world.user(user, &format!("{user}@example.com")).await;
    }
    // Ten mails per user, interleaved, in one batch's reach.
    let mails: Vec<(String, String, String)> = (0..40)
        .map(|i| {
            let id = format!("0193a5c2-7f1e-7000-8000-00000000d{i:03}");
            (id, users[i % 4].to_owned(), format!("{:02}", i / 4))
        })
        .collect();
    world.request(&mails).await;
    let stateless = world.mailer(world.config(Mode::Stateless)).await;
    world.wait_delivered(40).await;
    stateless.stop().await;

    let pool = world.env.pool().await;
    for user in users {
        let subjects: Vec<String> = sqlx::query_scalar(
            "SELECT subject FROM mail_log WHERE user_id = $1 AND state = 'sent' ORDER BY sent_at",
        )
        .bind(user)
        .fetch_all(&pool)
        .await
        .unwrap();
        let expected: Vec<String> = (0..10).map(|n| format!("{n:02}")).collect();
        assert_eq!(subjects, expected, "{user}'s mails out of order");
    }
}

/// `/openapi.json` of a mail worker describes its ops routes only (it has no
/// API of its own), with their answers typed; the users service it asks
/// describes its own.
#[tokio::test(flavor = "multi_thread")]
async fn the_api_is_described_with_its_error_answers() {
    let world = World::new("mail_openapi", "").await;
    let stateless = world.mailer(world.config(Mode::Stateless)).await;
    let api =
        shared::testkit::assert_openapi(stateless.base.trim_start_matches("http://"), &[]).await;
    assert_eq!(api["info"]["title"], "kappa-jobs mailer");
    let readyz = &api["paths"]["/readyz"]["get"]["responses"];
    assert!(
        readyz["503"].is_object(),
        "not ready is documented: {readyz}"
    );
    assert!(
        api["paths"]["/healthz"]["get"]["security"].is_null(),
        "ops routes are open"
    );
    let users = world.users.as_ref().expect("users runs");
    shared::testkit::assert_openapi(
        users.base.trim_start_matches("http://"),
        &[
            "GET /users",
            "POST /users",
            "GET /users/{id}",
            "PUT /users/{id}",
        ],
    )
    .await;
    stateless.stop().await;
}
