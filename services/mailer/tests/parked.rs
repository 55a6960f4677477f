//! The stateful worker never holds a partition for a user it does not know
//! yet: a request whose user is not in its store (once the store has read
//! past it) is parked, and the requests behind it go on. The parked request
//! is sent when the user appears (its `user_updated` arrives), in order
//! with that user's later ones; if the user never appears, it is
//! dead-lettered `unknown_user` once its wait is over.

mod common;

use std::time::Duration;

use common::World;
use mailer::Mode;
use rdkafka::message::Message;
use rdkafka::producer::FutureRecord;
use serde_json::json;
use shared::dlq::{header, header_str};
use shared::testkit::{eventually, metric, metrics_text};

/// Produces mail requests (id, user, subject) to partition 0, in order.
async fn requests(world: &World, mails: &[(&str, &str, &str)]) {
    let producer = shared::kafka::producer(&world.env.settings.kafka).unwrap();
    for (id, user, subject) in mails {
        let payload = json!({"type": "mail_requested", "id": id, "user_id": user, "subject": subject, "body": "hello"}).to_string();
        producer
            .send(
                FutureRecord::to(&world.env.settings.kafka.events_topic)
                    .key(*user)
                    .partition(0)
                    .payload(&payload),
                Duration::from_secs(30),
            )
            .await
            .map_err(|(e, _)| e)
            .unwrap();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_request_for_a_user_not_known_yet_is_parked_and_the_partition_goes_on() {
    let world = World::new("mail_parked", "").await;
    world.user("ann", "ann@example.com").await;
    let mut config = world.config(Mode::Stateful);
    config.wait_for_user_ms = 120_000;
    let mailer = world.mailer(config).await;
    let pool = world.env.pool().await;
    let parked = || async {
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM mail_parked")
            .fetch_one(&pool)
            .await
            .unwrap()
    };

    // lee does not exist yet; ann's request is behind lee's, in the same partition.
    requests(
        &world,
        &[
            (
                "0193a5c2-7f1e-7000-8000-00000000e001",
                "lee",
                "first to lee",
            ),
            ("0193a5c2-7f1e-7000-8000-00000000e002", "ann", "to ann"),
            (
                "0193a5c2-7f1e-7000-8000-00000000e003",
                "lee",
                "second to lee",
            ),
        ],
    )
    .await;
    // ann's mail leaves while lee's two wait, parked.
    let delivered = world.wait_delivered(1).await;
    assert_eq!(delivered.values().next().unwrap().to, "ann@example.com");
    eventually("lee's requests parked", Duration::from_secs(30), || async {
        (parked().await == 2).then_some(())
    })
    .await;
    assert_eq!(world.delivered().await.len(), 1, "nothing sent to lee yet");

    // lee signs up: both parked mails leave, in their order.
    world.user("lee", "lee@example.com").await;
    let delivered = world.wait_delivered(3).await;
    let to_lee: Vec<&common::Delivered> = delivered
        .values()
        .filter(|d| d.to == "lee@example.com")
        .collect();
    assert_eq!(to_lee.len(), 2);
    eventually("nothing parked", Duration::from_secs(30), || async {
        (parked().await == 0).then_some(())
    })
    .await;
    let sent: Vec<String> = sqlx::query_scalar(
        "SELECT subject FROM mail_log WHERE mode = 'stateful' AND state = 'sent' AND user_id = 'lee' ORDER BY sent_at",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(sent, ["first to lee", "second to lee"]);
    mailer.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_parked_request_whose_user_never_comes_is_dead_lettered() {
    let world = World::new("mail_parked_gone", "").await;
    let mut config = world.config(Mode::Stateful);
    config.wait_for_user_ms = 10_000;
    let group = format!("consumer=\"{}\"", config.group);
    let mailer = world.mailer(config).await;
    // Reading already: the request is decided well within its wait.
    let addr = mailer.base.trim_start_matches("http://").to_owned();
    eventually(
        "the worker assigned its partitions",
        Duration::from_secs(60),
        || async {
            let text = metrics_text(&addr).await;
            (metric(&text, "kappa_sink_partitions_assigned", &[&group]) > 0.0).then_some(())
        },
    )
    .await;
    let id = "0193a5c2-7f1e-7000-8000-00000000f001";
    requests(&world, &[(id, "ghost", "to nobody")]).await;
    // Parked first (read within its wait), then given up.
    let pool = world.env.pool().await;
    eventually("the request parked", Duration::from_secs(30), || async {
        let parked: i64 = sqlx::query_scalar("SELECT count(*) FROM mail_parked")
            .fetch_one(&pool)
            .await
            .ok()?;
        (parked == 1).then_some(())
    })
    .await;
    let letters = world
        .env
        .read_exactly(
            &world.env.settings.kafka.dlq_topic,
            1,
            Duration::from_secs(60),
        )
        .await;
    let h = letters[0].headers().unwrap();
    assert_eq!(header_str(h, header::CODE), Some("unknown_user"));
    assert_eq!(
        header_str(h, header::REASON).unwrap(),
        "user ghost did not appear in the address store within 10s of the request's arrival"
    );
    assert_eq!(header_str(h, header::PARTITION), Some("0"));
    assert!(String::from_utf8_lossy(letters[0].payload().unwrap()).contains(id));
    assert!(world.delivered().await.is_empty());
    mailer.stop().await;
}
