//! Event ids are idempotent in both modes of the runtime.
//! - Kafka transactions: a worker that copies events to another topic
//!   copies an id once, also when the repeat arrives after a new instance
//!   took over (nothing in memory: its window is read from the topic up to
//!   the group's committed offset). An event dead-lettered (its claim check
//!   missing) and sent again with its id is copied.
//! - Postgres: an event the database refuses does not make its repeat in
//!   the same batch a repeat: both are tried, both dead-lettered, as they
//!   would be in two batches or across a restart.

use std::time::Duration;

use rdkafka::message::Message;
use rdkafka::producer::FutureRecord;
use shared::claim_check::sha256_hex;
use shared::consume::Received;
use shared::event::{ClaimRef, ClaimedEvent, EventType};
use shared::shutdown::CancellationToken;
use shared::testkit::{eventually, metric, TestEnv, PARTITIONS};
use shared::worker::{
    self, Health, KafkaTransactions, Options, Output, Outputs, Postgres, Refusals, Setup, Worker,
};
use sqlx::PgConnection;
use uuid::Uuid;

/// Copies every event's payload to `output`.
struct Copier {
    output: String,
}

impl Worker for Copier {
    type Mode = KafkaTransactions;

    const READS: &'static [EventType] = &EventType::ALL;

    async fn apply(&mut self, out: &mut Outputs, events: &[Received]) -> anyhow::Result<Refusals> {
        for event in events {
            let shared::event::Envelope::Inline(inline) = &event.envelope else {
                anyhow::bail!("a claim check reached the worker unresolved");
            };
            out.push(Output {
                topic: self.output.clone(),
                key: Some(event.envelope.key().as_bytes().to_vec()),
                payload: inline.to_json(),
                ..Output::default()
            });
        }
        Ok(Refusals::none())
    }
}

/// Runs a copier until the returned token is cancelled; the handle ends
/// once it stopped.
fn start(
    env: &TestEnv,
    pool: &sqlx::PgPool,
    output: &str,
) -> (CancellationToken, tokio::task::JoinHandle<()>) {
    let setup = Setup {
        kafka: env.settings.kafka.clone(),
        pool: pool.clone(),
        options: Options {
            group: env.unique("dup-copier"),
            topic: env.settings.kafka.events_topic.clone(),
            max_batch_events: 100,
            max_batch_ms: 20,
            stuck_after: Duration::from_secs(30),
            instance: "1".into(),
        },
    };
    let shutdown = CancellationToken::new();
    let copier = Copier {
        output: output.to_owned(),
    };
    let health = Health::new(Duration::from_secs(30));
    let task = tokio::spawn({
        let shutdown = shutdown.clone();
        async move { worker::run(copier, setup, health, shutdown).await.unwrap() }
    });
    (shutdown, task)
}

async fn produce(env: &TestEnv, payloads: &[&str]) {
    let producer = shared::kafka::producer(&env.settings.kafka).unwrap();
    for payload in payloads {
        producer
            .send(
                FutureRecord::to(&env.settings.kafka.events_topic)
                    .key("u1")
                    .payload(*payload),
                Duration::from_secs(10),
            )
            .await
            .map_err(|(e, _)| e)
            .unwrap();
    }
}

fn view(id: Option<Uuid>, product: &str) -> String {
    let id = id.map(|id| format!(r#""id":"{id}","#)).unwrap_or_default();
    format!(
        r#"{{"type":"interaction",{id}"user_id":"u1","product_id":"{product}","action":"view"}}"#
    )
}

/// The products of the copies on `output`, once exactly `count` are there.
async fn copies(env: &TestEnv, output: &str, count: usize) -> Vec<String> {
    env.read_exactly(output, count, Duration::from_secs(60))
        .await
        .iter()
        .map(|m| {
            let event = shared::event::Event::parse(m.payload().unwrap()).unwrap();
            match event.body {
                shared::event::EventBody::Interaction(i) => i.product_id,
                other => panic!("copied {other:?}"),
            }
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_repeated_id_is_copied_once_across_instances() {
    let mut env = TestEnv::new("kafka_dup").await;
    let output = format!("{}-copies", env.settings.kafka.events_topic);
    shared::kafka::ensure_topic(&env.settings.kafka, &output, PARTITIONS, -1)
        .await
        .unwrap();
    env.topics.push(output.clone());
    let pool = env.pool().await;
    let first = view(Some(Uuid::now_v7()), "p1");
    // A claim-checked view whose payload is not in the store: dead-lettered.
    let lost = Uuid::now_v7();
    let body = view(Some(lost), "from-the-store");
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

    let (stop, running) = start(&env, &pool, &output);
    produce(&env, &[&first, &envelope, &view(None, "p2"), &first]).await;
    let mut copied = copies(&env, &output, 2).await;
    copied.sort();
    assert_eq!(copied, ["p1", "p2"]);
    env.read_exactly(&env.settings.kafka.dlq_topic, 1, Duration::from_secs(30))
        .await;
    stop.cancel();
    running.await.unwrap();

    // Another instance: the first event again, the lost one again inline.
    let (stop, running) = start(&env, &pool, &output);
    produce(&env, &[&first, &body, &view(None, "p3")]).await;
    let mut copied = copies(&env, &output, 4).await;
    copied.sort();
    assert_eq!(copied, ["from-the-store", "p1", "p2", "p3"]);
    let consumer = format!("consumer=\"{}\"", env.unique("dup-copier"));
    eventually("both repeats counted", Duration::from_secs(10), || async {
        let skipped = metric(
            &shared::catalogue::handle().render(),
            "kappa_sink_duplicates_skipped_total",
            &[&consumer],
        );
        assert!(skipped <= 2.0, "{skipped} repeats");
        (skipped == 2.0).then_some(())
    })
    .await;
    stop.cancel();
    running.await.unwrap();
}

/// Records each event's product; its table refuses the product `refuse-me`.
struct Recorder;

impl Worker for Recorder {
    type Mode = Postgres;

    const READS: &'static [EventType] = &EventType::ALL;

    async fn apply(
        &mut self,
        tx: &mut PgConnection,
        events: &[Received],
    ) -> anyhow::Result<Refusals> {
        for event in events {
            let shared::event::Envelope::Inline(inline) = &event.envelope else {
                continue;
            };
            if let shared::event::EventBody::Interaction(i) = &inline.body {
                sqlx::query("INSERT INTO recorded (product) VALUES ($1)")
                    .bind(&i.product_id)
                    .execute(&mut *tx)
                    .await?;
            }
        }
        Ok(Refusals::none())
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_repeat_of_a_refused_event_is_tried_too() {
    let env = TestEnv::new("pg_dup_refused").await;
    let pool = env.pool().await;
    sqlx::query("CREATE TABLE recorded (product text CHECK (product <> 'refuse-me'))")
        .execute(&pool)
        .await
        .unwrap();
    let refused = view(Some(Uuid::now_v7()), "refuse-me");
    let kept = view(Some(Uuid::now_v7()), "p1");
    // One batch: the refused event, another, the refused one again, the
    // other one again.
    produce(&env, &[&refused, &kept, &refused, &kept]).await;
    let group = env.unique("dup-recorder");
    let setup = Setup {
        kafka: env.settings.kafka.clone(),
        pool: pool.clone(),
        options: Options {
            group: group.clone(),
            topic: env.settings.kafka.events_topic.clone(),
            max_batch_events: 100,
            max_batch_ms: 500,
            stuck_after: Duration::from_secs(30),
            instance: "1".into(),
        },
    };
    let shutdown = CancellationToken::new();
    let _stop = shutdown.clone().drop_guard();
    tokio::spawn(worker::run(
        Recorder,
        setup,
        Health::new(Duration::from_secs(30)),
        shutdown,
    ));
    let topic = &env.settings.kafka.events_topic;
    let progress = eventually(
        "every record committed",
        Duration::from_secs(60),
        || async {
            let rows = shared::worker::offsets::progress(&pool, &group, topic)
                .await
                .ok()?;
            (rows.iter().map(|r| r.1).sum::<i64>() == 4).then(|| {
                (
                    rows.iter().map(|r| r.2).sum::<i64>(),
                    rows.iter().map(|r| r.3).sum::<i64>(),
                )
            })
        },
    )
    .await;
    assert_eq!(
        progress,
        (1, 2),
        "p1 applied once, both refused copies dead-lettered"
    );
    env.read_exactly(&env.settings.kafka.dlq_topic, 2, Duration::from_secs(30))
        .await;
    let recorded: Vec<String> = sqlx::query_scalar("SELECT product FROM recorded")
        .fetch_all(&pool)
        .await
        .unwrap();
    assert_eq!(recorded, ["p1"]);
}
