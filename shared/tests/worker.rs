//! The shared runtime (Postgres mode) with a worker that records every event
//! it applies: typed events come through, poison of every kind goes to the
//! DLQ with its reason while the worker goes on, claim checks are resolved
//! (forgeries dead-lettered), and an event the database refuses is narrowed
//! down and dead-lettered while the rest of its batch commits.

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use rdkafka::message::Message;
use rdkafka::producer::FutureRecord;
use shared::claim_check::{sha256_hex, ClaimStore};
use shared::consume::Received;
use shared::dlq::{header, header_str};
use shared::event::{ClaimRef, ClaimedEvent, Envelope, EventType};
use shared::shutdown::CancellationToken;
use shared::testkit::{eventually, TestEnv};
use shared::worker::{self, Health, Options, Postgres, Refusals, Setup, Worker};
use sqlx::{PgConnection, PgPool};

/// Records (offset, type, key, body) of every event it applies; its table
/// refuses the key `refuse-me`.
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
            let body = match &event.envelope {
                Envelope::Inline(e) => serde_json::to_string(&e.body)?,
                Envelope::Claimed(_) => "claimed".to_owned(),
            };
            sqlx::query("INSERT INTO recorded (\"offset\", partition, type, key, body) VALUES ($1, $2, $3, $4, $5)")
                .bind(event.offset)
                .bind(event.partition)
                .bind(event.envelope.event_type().as_str())
                .bind(event.envelope.key())
                .bind(body)
                .execute(&mut *tx)
                .await?;
        }
        Ok(Refusals::none())
    }
}

/// The runtime with a [`Recorder`] on the test's topics, until dropped.
struct Running {
    _stop: shared::shutdown::DropGuard,
    pool: PgPool,
}

async fn start(env: &TestEnv) -> Running {
    let pool = env.pool().await;
    sqlx::query(
        "CREATE TABLE IF NOT EXISTS recorded (\"offset\" bigint, partition int, type text, key text CHECK (key <> 'refuse-me'), body text)",
    )
    .execute(&pool)
    .await
    .unwrap();
    let setup = Setup {
        kafka: env.settings.kafka.clone(),
        pool: pool.clone(),
        options: Options {
            group: env.unique("recorder"),
            topic: env.settings.kafka.events_topic.clone(),
            max_batch_events: 100,
            max_batch_ms: 20,
            stuck_after: Duration::from_secs(30),
            instance: "1".into(),
        },
    };
    let shutdown = CancellationToken::new();
    let health = Health::new(Duration::from_secs(30));
    tokio::spawn(worker::run(Recorder, setup, health, shutdown.clone()));
    Running {
        _stop: shutdown.drop_guard(),
        pool,
    }
}

impl Running {
    /// Waits until `count` events are recorded; returns (type, key, body) in offset order.
    async fn recorded(&self, count: i64) -> Vec<(String, String, String)> {
        let pool = self.pool.clone();
        eventually("the events to be recorded", Duration::from_secs(60), || {
            let pool = pool.clone();
            async move {
                let n: i64 = sqlx::query_scalar("SELECT count(*) FROM recorded")
                    .fetch_one(&pool)
                    .await
                    .ok()?;
                assert!(n <= count, "{n} events recorded, {count} expected");
                (n == count).then_some(())
            }
        })
        .await;
        sqlx::query_as("SELECT type, key, body FROM recorded ORDER BY partition, \"offset\"")
            .fetch_all(&self.pool)
            .await
            .unwrap()
    }
}

/// Produces `payloads` in order to partition 0, each keyed by its entity.
async fn produce(env: &TestEnv, payloads: &[String]) {
    let producer = shared::kafka::producer(&env.settings.kafka).unwrap();
    for payload in payloads {
        producer
            .send(
                FutureRecord::to(&env.settings.kafka.events_topic)
                    .key(&shared::testkit::key_of(payload))
                    .partition(0)
                    .payload(payload),
                Duration::from_secs(10),
            )
            .await
            .map_err(|(e, _)| e)
            .unwrap();
    }
}

/// (code, reason, payload) of every dead letter, in order.
async fn dead_letters(env: &TestEnv, count: usize) -> Vec<(String, String, Vec<u8>)> {
    let mut letters: Vec<_> = env
        .read_exactly(
            &env.settings.kafka.dlq_topic,
            count,
            Duration::from_secs(30),
        )
        .await
        .into_iter()
        .map(|m| {
            let h = m.headers().unwrap();
            let offset: i64 = header_str(h, header::OFFSET).unwrap().parse().unwrap();
            (
                offset,
                header_str(h, header::CODE).unwrap().to_owned(),
                header_str(h, header::REASON).unwrap().to_owned(),
                m.payload().unwrap_or_default().to_vec(),
            )
        })
        .collect();
    letters.sort();
    letters.into_iter().map(|(_, c, r, p)| (c, r, p)).collect()
}

fn view(user: &str, product: &str) -> String {
    format!(
        r#"{{"type":"interaction","user_id":"{user}","product_id":"{product}","action":"view"}}"#
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn kcat_typed_events_come_through_and_poison_goes_to_the_dlq() {
    let env = TestEnv::new("worker_kcat").await;
    let kafka = &env.settings.kafka;
    let typed = r#"{"type":"interaction","user_id":"u1","product_id":"p7","action":"view","ts":"2026-11-20T10:00:00Z"}"#;
    let poison = r#"{"type":"interaction","user_id":"u1","action":"view"}"#;
    let after = r#"{"type":"interaction","user_id":"u1","product_id":"p8","action":"purchase","price_cents":1250}"#;
    let mut kcat = Command::new("kcat")
        .args([
            "-P",
            "-b",
            &kafka.brokers,
            "-t",
            &kafka.events_topic,
            "-k",
            "u1",
            "-p",
            "0",
        ])
        .stdin(Stdio::piped())
        .spawn()
        .expect("kcat is installed (scripts/up.sh installs it)");
    kcat.stdin
        .take()
        .unwrap()
        .write_all(format!("{typed}\n{poison}\n{after}\n").as_bytes())
        .unwrap();
    assert!(kcat.wait().unwrap().success());

    let running = start(&env).await;
    let recorded = running.recorded(2).await;
    assert_eq!(
        recorded[0].2,
        r#"{"type":"interaction","user_id":"u1","product_id":"p7","action":"view"}"#
    );
    assert!(recorded[1].2.contains(r#""price_cents":1250"#));
    let dead = env
        .read_exactly(&kafka.dlq_topic, 1, Duration::from_secs(30))
        .await
        .remove(0);
    assert_eq!(
        dead.payload(),
        Some(poison.as_bytes()),
        "copied byte for byte"
    );
    assert_eq!(dead.key(), Some(&b"u1"[..]));
    let h = dead.headers().expect("origin headers");
    assert_eq!(header_str(h, header::CODE), Some("missing_field"));
    assert_eq!(
        header_str(h, header::REASON),
        Some("missing field `product_id`")
    );
    assert_eq!(
        header_str(h, header::TOPIC),
        Some(kafka.events_topic.as_str())
    );
    assert_eq!(header_str(h, header::PARTITION), Some("0"));
    assert_eq!(header_str(h, header::OFFSET), Some("1"));
    let original = env
        .read_exactly(&kafka.events_topic, 3, Duration::from_secs(30))
        .await
        .into_iter()
        .find(|m| m.offset() == 1)
        .unwrap();
    let millis = original.timestamp().to_millis().unwrap().to_string();
    assert_eq!(header_str(h, header::TIMESTAMP), Some(millis.as_str()));
}

#[tokio::test(flavor = "multi_thread")]
async fn poison_of_every_kind_is_dead_lettered_and_the_worker_goes_on() {
    let env = TestEnv::new("worker_poison").await;
    let long = "x".repeat(3000);
    let poison = [
        (r#"{"type":"interaction","user_id":"u\u0000x","product_id":"p","action":"view"}"#.to_owned(), "invalid_field", "user_id"),
        (r#"{"type":"interaction","user_id":"u\u202Ex","product_id":"p","action":"view"}"#.to_owned(), "invalid_field", "`user_id`: contains the bidirectional"),
        (view(&long, "p"), "invalid_field", "at most 256 bytes"),
        (view("u1", &long), "invalid_field", "product_id"),
        (r#"{"type":"interaction","user_id":"u1","product_id":"p","action":"purchase","price_cents":18446744073709551615}"#.to_owned(), "invalid_field", "price_cents"),
        (r#"{"type":"interaction","user_id":"u1","product_id":"p","action":"view","ts":"9999-01-01T00:00:00Z"}"#.to_owned(), "ts_in_future", "ts"),
        (r#"{"type":"interaction","user_id":"u1","product_id":"p","action":"view","ts":"1960-01-01T00:00:00Z"}"#.to_owned(), "ts_too_old", "1970"),
        (r#"{"type":"page_access","type":"interaction","user_id":"u1","product_id":"p","action":"view"}"#.to_owned(), "duplicate_field", "type"),
        (r#"{"type":"mail_requested","user_id":"u1","subject":"a\u0000b","body":"c"}"#.to_owned(), "invalid_field", "subject"),
    ];
    // Each poison record between two good ones, all on one partition.
    let mut payloads = Vec::new();
    for (i, (record, _, _)) in poison.iter().enumerate() {
        payloads.push(view("u1", &format!("before-{i}")));
        payloads.push(record.clone());
    }
    payloads.push(view("u1", "last"));
    produce(&env, &payloads).await;

    let running = start(&env).await;
    let recorded = running.recorded(poison.len() as i64 + 1).await;
    assert!(
        recorded.last().unwrap().2.contains("\"last\""),
        "it went on to the end"
    );
    let letters = dead_letters(&env, poison.len()).await;
    for ((record, code, mention), (got_code, reason, payload)) in poison.iter().zip(letters) {
        assert_eq!(&got_code, code, "{record}: {reason}");
        assert!(reason.contains(mention), "{record}: {reason}");
        assert_eq!(payload, record.as_bytes());
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn what_the_database_refuses_is_dead_lettered_and_the_rest_commits() {
    let env = TestEnv::new("worker_refused").await;
    let mut payloads: Vec<String> = (0..60).map(|i| view(&format!("k{i}"), "p")).collect();
    payloads[37] = view("refuse-me", "p");
    // One partition, so the refused event sits in the middle of a batch.
    produce(&env, &payloads).await;

    let running = start(&env).await;
    let recorded = running.recorded(59).await;
    assert!(recorded.iter().all(|(_, key, _)| key != "refuse-me"));
    let letters = dead_letters(&env, 1).await;
    let (code, reason, payload) = &letters[0];
    assert_eq!(code, "refused");
    assert!(
        reason.contains("recorded_key_check"),
        "the database's reason: {reason}"
    );
    assert_eq!(
        payload,
        payloads[37].as_bytes(),
        "the record itself, byte for byte"
    );
    let (applied, dead): (i64, i64) =
        sqlx::query_as("SELECT sum(applied)::int8, sum(dead_lettered)::int8 FROM consumer_offsets")
            .fetch_one(&running.pool)
            .await
            .unwrap();
    assert_eq!((applied, dead), (59, 1));
}

#[tokio::test(flavor = "multi_thread")]
async fn claim_checks_are_resolved_and_forgeries_dead_lettered() {
    let env = TestEnv::new("worker_claims").await;
    let store = ClaimStore::new(env.pool().await);
    let body = view("u1", "from-the-store").into_bytes();
    let stored = store.put(&body, "application/json").await.unwrap();
    store.commit(&[stored.token]).await.unwrap();
    let envelope = |claim_check: ClaimRef| {
        String::from_utf8(
            ClaimedEvent {
                event_type: EventType::Interaction,
                id: None,
                ts: None,
                key: "u1".into(),
                claim_check,
            }
            .to_json(),
        )
        .unwrap()
    };
    let genuine = envelope(stored.clone());
    let missing = envelope(ClaimRef {
        token: uuid::Uuid::now_v7(),
        ..stored.clone()
    });
    let mismatch = envelope(ClaimRef {
        sha256: sha256_hex(b"something else"),
        ..stored.clone()
    });
    produce(
        &env,
        &[
            genuine,
            missing.clone(),
            mismatch.clone(),
            view("u1", "after"),
        ],
    )
    .await;

    let running = start(&env).await;
    let recorded = running.recorded(2).await;
    assert!(
        recorded[0].2.contains("from-the-store"),
        "resolved: {recorded:?}"
    );
    assert!(recorded[1].2.contains("after"));
    let letters = dead_letters(&env, 2).await;
    assert_eq!(letters[0].0, "claim_check_missing");
    assert_eq!(letters[0].2, missing.as_bytes());
    assert_eq!(letters[1].0, "claim_check_mismatch");
    assert_eq!(letters[1].2, mismatch.as_bytes());
}
