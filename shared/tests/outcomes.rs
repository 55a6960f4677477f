//! What a batch costs, in both modes of the runtime: a refusal is an
//! outcome of its event (dead-lettered in the batch's own commit, the rest
//! applied once, nothing bisected), and a record that is not the worker's
//! (a type it does not read, an event it does not want) costs a read, no
//! commit of its own. Counted through the worker's own counters and the
//! runtime's metrics; nothing here is timed.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};
use shared::consume::Received;
use shared::dlq::{header, header_str};
use shared::event::{Action, Envelope, Event, EventBody, EventType};
use shared::shutdown::CancellationToken;
use shared::testkit::{eventually, metric, TestEnv};
use shared::worker::{
    self, Health, KafkaTransactions, Options, Output, Outputs, Postgres, Refusals, Refused, Setup,
    Worker,
};
use sqlx::{PgConnection, PgPool};

/// Interactions only, purchases only; a product whose id ends in an odd
/// digit is refused (by rule, before anything is written). Counts the
/// events `apply` was handed.
struct Buyer {
    seen: Arc<AtomicUsize>,
}

impl Buyer {
    /// The purchases of `events` it applies; the odd ones refused.
    fn sort<'e>(&self, events: &'e [Received], refusals: &mut Refusals) -> Vec<&'e str> {
        self.seen.fetch_add(events.len(), Ordering::Relaxed);
        let mut kept = Vec::new();
        for received in events {
            let Envelope::Inline(Event {
                body: EventBody::Interaction(purchase),
                ..
            }) = &received.envelope
            else {
                panic!("only purchases reach the worker: {received:?}");
            };
            assert_eq!(
                purchase.action,
                Action::Purchase,
                "a view reached the worker"
            );
            let odd = purchase
                .product_id
                .ends_with(|c: char| c.to_digit(10).is_some_and(|d| d % 2 == 1));
            if odd {
                let reason = format!("{} is odd", purchase.product_id);
                refusals.refuse(received, Refused::new("odd_product", reason));
            } else {
                kept.push(purchase.product_id.as_str());
            }
        }
        kept
    }
}

fn wants(event: &Event) -> bool {
    matches!(&event.body, EventBody::Interaction(i) if i.action == Action::Purchase)
}

/// Postgres mode: records each product it keeps.
struct PgBuyer(Buyer);

impl Worker for PgBuyer {
    type Mode = Postgres;
    const READS: &'static [EventType] = &[EventType::Interaction];

    fn wants(event: &Event) -> bool {
        wants(event)
    }

    async fn apply(
        &mut self,
        tx: &mut PgConnection,
        events: &[Received],
    ) -> anyhow::Result<Refusals> {
        let mut refusals = Refusals::none();
        let kept = self.0.sort(events, &mut refusals);
        sqlx::query("INSERT INTO kept (product) SELECT * FROM UNNEST($1::text[])")
            .bind(&kept)
            .execute(&mut *tx)
            .await?;
        Ok(refusals)
    }
}

/// Kafka mode: copies each product it keeps to `output`.
struct KafkaBuyer(Buyer, String);

impl Worker for KafkaBuyer {
    type Mode = KafkaTransactions;
    const READS: &'static [EventType] = &[EventType::Interaction];

    fn wants(event: &Event) -> bool {
        wants(event)
    }

    async fn apply(&mut self, out: &mut Outputs, events: &[Received]) -> anyhow::Result<Refusals> {
        let mut refusals = Refusals::none();
        for product in self.0.sort(events, &mut refusals) {
            out.push(Output {
                topic: self.1.clone(),
                payload: product.as_bytes().to_vec(),
                ..Output::default()
            });
        }
        Ok(refusals)
    }
}

/// Runs `worker` on the test's topic until the token is cancelled.
fn start<W>(
    env: &TestEnv,
    pool: &PgPool,
    worker: W,
    group: &str,
    (max_events, max_ms): (usize, u64),
) -> CancellationToken
where
    W: Worker,
    W::Mode: worker::Start<W>,
{
    let setup = Setup {
        kafka: env.settings.kafka.clone(),
        pool: pool.clone(),
        options: Options {
            group: group.to_owned(),
            topic: env.settings.kafka.events_topic.clone(),
            max_batch_events: max_events,
            max_batch_ms: max_ms,
            stuck_after: Duration::from_secs(60),
            instance: "1".into(),
        },
    };
    let shutdown = CancellationToken::new();
    tokio::spawn(worker::run(
        worker,
        setup,
        Health::new(Duration::from_secs(60)),
        shutdown.clone(),
    ));
    shutdown
}

fn interaction(user: &str, product: &str, action: &str) -> String {
    let price = if action == "purchase" {
        r#","price_cents":100"#
    } else {
        ""
    };
    format!(
        r#"{{"type":"interaction","user_id":"{user}","product_id":"{product}","action":"{action}"{price}}}"#
    )
}

/// Produces `payloads` to partition 0 of the events topic, in order.
async fn produce(env: &TestEnv, payloads: &[String]) {
    let producer: FutureProducer = shared::kafka::producer(&env.settings.kafka).unwrap();
    let keys: Vec<String> = payloads
        .iter()
        .map(|p| shared::testkit::key_of(p))
        .collect();
    let sends = payloads.iter().zip(&keys).map(|(payload, key)| {
        producer.send(
            FutureRecord::to(&env.settings.kafka.events_topic)
                .key(key)
                .partition(0)
                .payload(payload),
            Duration::from_secs(30),
        )
    });
    for sent in futures::future::join_all(sends).await {
        sent.map_err(|(e, _)| e).unwrap();
    }
}

/// This consumer's value of a runtime metric.
fn sink_metric(name: &str, group: &str) -> f64 {
    let text = shared::catalogue::handle().render();
    metric(&text, name, &[&format!("consumer=\"{group}\"")])
}

/// (code, reason, payload) of the dead letters, once there are `count`.
async fn dead_letters(env: &TestEnv, count: usize) -> Vec<(String, String, Vec<u8>)> {
    env.read_exactly(
        &env.settings.kafka.dlq_topic,
        count,
        Duration::from_secs(60),
    )
    .await
    .into_iter()
    .map(|m| {
        let h = m.headers().unwrap();
        (
            header_str(h, header::CODE).unwrap().to_owned(),
            header_str(h, header::REASON).unwrap().to_owned(),
            m.payload().unwrap_or_default().to_vec(),
        )
    })
    .collect()
}

/// 1,000 purchases, every other one refused, and 1,000 views around them:
/// the refused go to the DLQ byte for byte with the worker's reason, the
/// rest are kept; the worker saw each purchase once; one commit.
fn mixed() -> (Vec<String>, Vec<String>) {
    let mut records = Vec::new();
    let mut refused = Vec::new();
    for i in 0..1000 {
        records.push(interaction("u1", &format!("v{i}"), "view"));
        let purchase = interaction("u1", &format!("p{i}"), "purchase");
        if i % 2 == 1 {
            refused.push(purchase.clone());
        }
        records.push(purchase);
    }
    (records, refused)
}

#[tokio::test(flavor = "multi_thread")]
async fn refusals_are_dead_lettered_in_the_batch_commit_postgres_mode() {
    let env = TestEnv::new("outcome_pg_refusals").await;
    let pool = env.pool().await;
    sqlx::query("CREATE TABLE kept (product text)")
        .execute(&pool)
        .await
        .unwrap();
    let (records, refused) = mixed();
    produce(&env, &records).await;
    let seen = Arc::new(AtomicUsize::new(0));
    let group = env.unique("pg-buyer");
    let worker = PgBuyer(Buyer { seen: seen.clone() });
    // Everything is on the topic: the batch closes by its count.
    let _stop = start(&env, &pool, worker, &group, (1000, 30_000)).drop_guard();

    let letters = dead_letters(&env, 500).await;
    eventually("the purchases kept", Duration::from_secs(60), || async {
        let (n,): (i64,) = sqlx::query_as("SELECT count(*) FROM kept")
            .fetch_one(&pool)
            .await
            .ok()?;
        (n == 500).then_some(())
    })
    .await;
    assert_refusals(&letters, &refused);
    assert_eq!(
        seen.load(Ordering::Relaxed),
        1000,
        "each purchase handed over once"
    );
    eventually("the commit counted", Duration::from_secs(10), || async {
        (sink_metric("kappa_sink_events_applied_total", &group) == 500.0).then_some(())
    })
    .await;
    assert_eq!(sink_metric("kappa_sink_refused_total", &group), 500.0);
    assert_eq!(sink_metric("kappa_sink_dead_lettered_total", &group), 500.0);
    assert_eq!(
        sink_metric("kappa_sink_commit_seconds_count", &group),
        1.0,
        "one commit for the batch: nothing bisected"
    );
    assert_eq!(sink_metric("kappa_sink_skipped_total", &group), 1000.0);
}

#[tokio::test(flavor = "multi_thread")]
async fn refusals_are_dead_lettered_in_the_batch_commit_kafka_mode() {
    let env = TestEnv::new("outcome_kafka_refusals").await;
    let pool = env.pool().await;
    let output = env.unique("kept");
    shared::kafka::ensure_topic(
        &env.settings.kafka,
        &output,
        shared::testkit::PARTITIONS,
        -1,
    )
    .await
    .unwrap();
    let (records, refused) = mixed();
    produce(&env, &records).await;
    let seen = Arc::new(AtomicUsize::new(0));
    let group = env.unique("kafka-buyer");
    let worker = KafkaBuyer(Buyer { seen: seen.clone() }, output.clone());
    let _stop = start(&env, &pool, worker, &group, (1000, 30_000)).drop_guard();

    let letters = dead_letters(&env, 500).await;
    let kept = env
        .read_exactly(&output, 500, Duration::from_secs(60))
        .await;
    assert!(kept
        .iter()
        .all(|m| m.payload().is_some_and(|p| p.ends_with(b"0")
            || p.ends_with(b"2")
            || p.ends_with(b"4")
            || p.ends_with(b"6")
            || p.ends_with(b"8"))));
    assert_refusals(&letters, &refused);
    assert_eq!(
        seen.load(Ordering::Relaxed),
        1000,
        "each purchase handed over once"
    );
    assert_eq!(sink_metric("kappa_sink_refused_total", &group), 500.0);
    assert_eq!(
        sink_metric("kappa_sink_commit_seconds_count", &group),
        1.0,
        "one transaction for the batch: nothing bisected"
    );
}

/// Each refused purchase is in the DLQ once, byte for byte, with its reason.
fn assert_refusals(letters: &[(String, String, Vec<u8>)], refused: &[String]) {
    let mut payloads: Vec<&[u8]> = letters.iter().map(|(_, _, p)| p.as_slice()).collect();
    payloads.sort();
    let mut expected: Vec<&[u8]> = refused.iter().map(|p| p.as_bytes()).collect();
    expected.sort();
    assert_eq!(payloads, expected);
    for (code, reason, payload) in letters {
        assert_eq!(code, "odd_product");
        let event = Event::parse(payload).unwrap();
        let EventBody::Interaction(purchase) = event.body else {
            panic!("{event:?}")
        };
        assert_eq!(reason, &format!("{} is odd", purchase.product_id));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn records_that_are_not_the_workers_cost_no_commit_of_their_own() {
    let env = TestEnv::new("outcome_skips").await;
    let pool = env.pool().await;
    sqlx::query("CREATE TABLE kept (product text)")
        .execute(&pool)
        .await
        .unwrap();
    // 20 runs of 500 records that are not the worker's (page accesses: a
    // type it does not read; views: events of its type it does not want),
    // each followed by one purchase it keeps.
    let mut records = Vec::new();
    for run in 0..20 {
        for i in 0..250 {
            records.push(format!(r#"{{"type":"page_access","page":"/r{run}/{i}"}}"#));
            records.push(interaction("u1", &format!("v{i}"), "view"));
        }
        records.push(interaction("u1", &format!("p{run}0"), "purchase"));
    }
    let seen = Arc::new(AtomicUsize::new(0));
    let group = env.unique("skipper");
    let worker = PgBuyer(Buyer { seen: seen.clone() });
    // Batches of 100 records: each run of 500 would have cost 5 commits.
    let _stop = start(&env, &pool, worker, &group, (100, 50)).drop_guard();
    produce(&env, &records).await;

    let total = records.len() as f64;
    eventually(
        "every record committed",
        Duration::from_secs(60),
        || async {
            let at = sink_metric("kappa_sink_committed_offset", &group);
            (at == total).then_some(())
        },
    )
    .await;
    let (kept,): (i64,) = sqlx::query_as("SELECT count(*) FROM kept")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(kept, 20);
    assert_eq!(
        seen.load(Ordering::Relaxed),
        20,
        "only purchases handed over"
    );
    assert_eq!(sink_metric("kappa_sink_skipped_total", &group), 10_000.0);
    // At most one commit per purchase (a batch closes 50 ms after its
    // first), plus one for records skipped while no purchase came; never
    // one per 100 records.
    let commits = sink_metric("kappa_sink_commit_seconds_count", &group);
    assert!(
        (1.0..=21.0).contains(&commits),
        "{commits} commits for 10,020 records"
    );
}

/// A redrive's copy of an event without an id carries where the event was
/// first written (`redrive.origin.*`); every consumer gives it the id
/// derived from there, so two copies of one record are one event (the
/// second a repeat), while records without an id written by a producer
/// are never repeats of each other.
#[tokio::test(flavor = "multi_thread")]
async fn copies_of_one_record_without_an_id_are_one_event() {
    use rdkafka::message::{Header, OwnedHeaders};
    let env = TestEnv::new("outcome_copies").await;
    let pool = env.pool().await;
    sqlx::query("CREATE TABLE kept (product text)")
        .execute(&pool)
        .await
        .unwrap();
    let producer: FutureProducer = shared::kafka::producer(&env.settings.kafka).unwrap();
    let send = |payload: String, copy_of: Option<i64>| {
        let mut headers = OwnedHeaders::new();
        if let Some(offset) = copy_of {
            for (key, value) in [
                (shared::dlq::redrive::COUNT, "1".to_owned()),
                (shared::dlq::redrive::ORIGIN_TOPIC, "events".to_owned()),
                (shared::dlq::redrive::ORIGIN_PARTITION, "0".to_owned()),
                (shared::dlq::redrive::ORIGIN_OFFSET, offset.to_string()),
            ] {
                headers = headers.insert(Header {
                    key,
                    value: Some(&value),
                });
            }
        }
        let producer = producer.clone();
        let topic = env.settings.kafka.events_topic.clone();
        async move {
            producer
                .send(
                    FutureRecord::to(&topic)
                        .key("u1")
                        .partition(0)
                        .payload(&payload)
                        .headers(headers),
                    Duration::from_secs(30),
                )
                .await
                .map_err(|(e, _)| e)
                .unwrap();
        }
    };
    // Two copies of the record at events/0/41, then the same purchase
    // twice from a producer that sets no id.
    send(interaction("u1", "p2", "purchase"), Some(41)).await;
    send(interaction("u1", "p2", "purchase"), Some(41)).await;
    send(interaction("u1", "p4", "purchase"), None).await;
    send(interaction("u1", "p4", "purchase"), None).await;

    let seen = Arc::new(AtomicUsize::new(0));
    let group = env.unique("copies");
    let _stop = start(&env, &pool, PgBuyer(Buyer { seen }), &group, (100, 50)).drop_guard();
    eventually(
        "every record committed",
        Duration::from_secs(60),
        || async { (sink_metric("kappa_sink_committed_offset", &group) == 4.0).then_some(()) },
    )
    .await;
    let kept: Vec<(String, i64)> =
        sqlx::query_as("SELECT product, count(*) FROM kept GROUP BY product ORDER BY product")
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(kept, [("p2".to_owned(), 1), ("p4".to_owned(), 2)]);
    assert_eq!(
        sink_metric("kappa_sink_duplicates_skipped_total", &group),
        1.0
    );
}
