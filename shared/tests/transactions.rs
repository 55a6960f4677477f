//! The runtime's Kafka-transaction mode, on the real broker, with the
//! `copy_worker` example as the worker: every input's copy is on the output
//! topic exactly once (read with `read_committed`) after SIGKILLs, after an
//! aborted transaction, across two instances and a rebalance, and when a
//! paused instance comes back after its partitions moved (a zombie).

use std::collections::{BTreeMap, BTreeSet};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use futures::future::join_all;
use rdkafka::consumer::BaseConsumer;
use rdkafka::message::{Headers, Message};
use rdkafka::producer::FutureRecord;
use shared::config::KafkaConfig;
use shared::testkit::{
    free_port, metric, metrics_text, KillOnDrop, PrivateBroker, TestEnv, PARTITIONS,
};

/// A copy_worker process and its metrics port.
struct Copier {
    process: KillOnDrop,
    port: u16,
    log: std::path::PathBuf,
}

impl Copier {
    fn start(env: &TestEnv, output: &str, instance: &str, extra: &[(&str, &str)]) -> Copier {
        let port = free_port();
        let kafka = &env.settings.kafka;
        let log = shared::testkit::repo_root()
            .join(".run")
            .join(format!("test-copier-{}-{instance}.log", env.suffix));
        let process = Command::new(env!("CARGO_BIN_EXE_copy_worker"))
            .env("KAPPA__KAFKA__BROKERS", &kafka.brokers)
            .env("KAPPA__KAFKA__EVENTS_TOPIC", &kafka.events_topic)
            .env("KAPPA__KAFKA__DLQ_TOPIC", &kafka.dlq_topic)
            .env("KAPPA__KAFKA__CONSUMER__SESSION_TIMEOUT_MS", "6000")
            .env("KAPPA__DATABASE__URL", env.settings.database.url.expose())
            .env("KAPPA__AUTH__ADMIN_TOKEN", "test")
            .env("KAPPA__LOG__LEVEL", "info")
            .env("COPY_OUTPUT", output)
            .env("COPY_GROUP", env.unique("copier"))
            .env("COPY_INSTANCE", instance)
            .env("COPY_ADDR", format!("127.0.0.1:{port}"))
            .envs(extra.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("the copy_worker binary (built with the tests)");
        Copier {
            process: KillOnDrop(process),
            port,
            log,
        }
    }

    async fn counter(&self, name: &str) -> f64 {
        metric(
            &metrics_text(&format!("127.0.0.1:{}", self.port)).await,
            name,
            &[],
        )
    }

    async fn wait_counter(&self, name: &str, at_least: f64) {
        let until = Instant::now() + Duration::from_secs(90);
        while self.counter(name).await < at_least {
            if Instant::now() > until {
                let tail = shared::testkit::log_tail(&self.log, 20);
                panic!("{name} never reached {at_least}\n{tail}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn signal(&self, signal: &str) {
        Command::new("kill")
            .args([signal, &self.process.id().to_string()])
            .status()
            .unwrap();
    }

    fn kill(mut self) {
        self.process.kill().unwrap();
        self.process.wait().unwrap();
    }
}

/// A topic for the copies, deleted with the test's topics.
async fn output_topic(env: &mut TestEnv) -> String {
    let topic = format!("{}-copies", env.settings.kafka.events_topic);
    shared::kafka::ensure_topic(&env.settings.kafka, &topic, PARTITIONS, -1)
        .await
        .unwrap();
    env.topics.push(topic.clone());
    topic
}

/// `n` events over 50 keys, in `slices` paced slices over `over`.
async fn produce(kafka: &KafkaConfig, range: std::ops::Range<usize>, over: Duration) {
    let producer = shared::kafka::producer(kafka).unwrap();
    let items: Vec<(String, String)> = range
        .map(|i| {
            let key = format!("k{}", i % 50);
            let payload = format!(
                r#"{{"type":"interaction","user_id":"{key}","product_id":"n{i}","action":"view"}}"#
            );
            (key, payload)
        })
        .collect();
    let slices = 10;
    for chunk in items.chunks(items.len().div_ceil(slices).max(1)) {
        let sends = chunk.iter().map(|(k, p)| {
            producer.send(
                FutureRecord::to(&kafka.events_topic).key(k).payload(p),
                Duration::from_secs(30),
            )
        });
        for sent in join_all(sends).await {
            sent.map_err(|(e, _)| e).unwrap();
        }
        tokio::time::sleep(over / slices as u32).await;
    }
}

/// Reads exactly `n` committed copies and checks that they cover every
/// input once: the origin headers are `n` distinct positions of the input.
async fn assert_copied_once(env: &TestEnv, output: &str, n: usize) {
    let copies = env.read_exactly(output, n, Duration::from_secs(120)).await;
    let mut origins = BTreeSet::new();
    let mut products = BTreeSet::new();
    for copy in &copies {
        let origin = copy
            .headers()
            .and_then(|h| h.iter().find(|h| h.key == "origin").and_then(|h| h.value))
            .map(|v| String::from_utf8(v.to_vec()).unwrap())
            .expect("an origin header");
        assert!(origins.insert(origin.clone()), "{origin} copied twice");
        let body: serde_json::Value = serde_json::from_slice(copy.payload().unwrap()).unwrap();
        products.insert(body["product_id"].as_str().unwrap().to_owned());
    }
    let expected: BTreeSet<String> = (0..n).map(|i| format!("n{i}")).collect();
    assert_eq!(products, expected, "every input, once");
}

/// Every record on `topic`, aborted ones included (`read_uncommitted`).
fn all_records(env: &TestEnv, topic: &str) -> usize {
    let consumer: BaseConsumer = shared::kafka::client_config(&env.settings.kafka)
        .set("group.id", env.unique("uncommitted"))
        .set("isolation.level", "read_uncommitted")
        .set("enable.partition.eof", "true")
        .create()
        .unwrap();
    shared::consume::assign_from_start(&consumer, topic, PARTITIONS).unwrap();
    let (mut count, mut ended) = (0, BTreeMap::new());
    let until = Instant::now() + Duration::from_secs(30);
    while ended.len() < PARTITIONS as usize && Instant::now() < until {
        match consumer.poll(Duration::from_millis(200)) {
            Some(Ok(_)) => count += 1,
            Some(Err(rdkafka::error::KafkaError::PartitionEOF(p))) => {
                ended.insert(p, ());
            }
            _ => {}
        }
    }
    count
}

#[tokio::test(flavor = "multi_thread")]
async fn three_sigkills_copy_every_input_once() {
    let mut env = TestEnv::new("txn_kill").await;
    let output = output_topic(&mut env).await;
    const N: usize = 20_000;
    let producing = {
        let kafka = env.settings.kafka.clone();
        tokio::spawn(async move { produce(&kafka, 0..N, Duration::from_secs(6)).await })
    };
    let mut copier = Copier::start(&env, &output, "1", &[]);
    for round in 1..=3 {
        copier
            .wait_counter("kappa_sink_events_applied_total", (round * N / 8) as f64)
            .await;
        copier.kill();
        // The same instance name: the restart aborts what the killed one left open.
        copier = Copier::start(&env, &output, "1", &[]);
    }
    producing.await.unwrap();
    assert_copied_once(&env, &output, N).await;
    // Where the group resumes, as the last instance reports it: the end of
    // every partition (the input has no transaction markers: N offsets).
    copier
        .wait_counter("kappa_sink_committed_offset", N as f64)
        .await;
    assert_eq!(
        copier.counter("kappa_sink_committed_offset").await,
        N as f64
    );
    drop(copier);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_aborted_transaction_is_invisible() {
    let mut env = TestEnv::new("txn_abort").await;
    let output = output_topic(&mut env).await;
    produce(&env.settings.kafka, 0..500, Duration::ZERO).await;
    let copier = Copier::start(
        &env,
        &output,
        "1",
        &[
            ("COPY_FAIL_ONCE", "k7"),
            ("KAPPA__KAFKA__DELIVERY_TIMEOUT_MS", "3000"),
        ],
    );
    copier
        .wait_counter("kappa_sink_commit_failures_total", 1.0)
        .await;
    assert_copied_once(&env, &output, 500).await;
    // The aborted attempt's copies are in the log, and invisible to readers.
    let logged = tokio::task::block_in_place(|| all_records(&env, &output));
    assert!(logged > 500, "the aborted copies are in the log: {logged}");
    drop(copier);
}

#[tokio::test(flavor = "multi_thread")]
async fn two_instances_and_a_rebalance_copy_every_input_once() {
    let mut env = TestEnv::new("txn_rebalance").await;
    let output = output_topic(&mut env).await;
    let first = Copier::start(&env, &output, "1", &[]);
    let second = Copier::start(&env, &output, "2", &[]);
    // Both in the group before the events: on a slow machine the second
    // could otherwise join after the first had copied everything.
    first
        .wait_counter("kappa_sink_partitions_assigned", 1.0)
        .await;
    second
        .wait_counter("kappa_sink_partitions_assigned", 1.0)
        .await;
    produce(&env.settings.kafka, 0..5_000, Duration::from_secs(3)).await;
    second
        .wait_counter("kappa_sink_events_applied_total", 1.0)
        .await;
    // One leaves (killed), another joins, while events keep coming: rounds
    // of 1,000, at least 5,000, and one more once the newcomer holds
    // partitions.
    second.kill();
    let third = Copier::start(&env, &output, "3", &[]);
    let mut produced = 5_000;
    loop {
        let joined = third.counter("kappa_sink_partitions_assigned").await > 0.0;
        let round = produced..produced + 1_000;
        produce(&env.settings.kafka, round, Duration::from_millis(600)).await;
        produced += 1_000;
        if joined && produced >= 10_000 {
            break;
        }
        assert!(produced < 100_000, "the newcomer never got partitions");
    }
    assert_copied_once(&env, &output, produced).await;
    assert!(
        third.counter("kappa_sink_events_applied_total").await > 0.0,
        "the newcomer copied"
    );
    drop((first, third));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_zombie_instance_is_fenced() {
    let mut env = TestEnv::new("txn_zombie").await;
    let output = output_topic(&mut env).await;
    // Batches of up to 5 s: the zombie-to-be holds one when it is paused.
    let zombie = Copier::start(&env, &output, "1", &[("COPY_BATCH_MS", "5000")]);
    produce(&env.settings.kafka, 0..1_000, Duration::ZERO).await;
    zombie
        .wait_counter("kappa_sink_events_applied_total", 1_000.0)
        .await;
    produce(&env.settings.kafka, 1_000..1_100, Duration::ZERO).await;
    zombie
        .wait_counter("kappa_sink_records_in_hand", 100.0)
        .await;
    zombie.signal("-STOP");
    produce(&env.settings.kafka, 1_100..3_000, Duration::ZERO).await;
    // Its session times out; the other instance takes every partition and
    // copies everything, past the zombie's batch.
    let live = Copier::start(&env, &output, "2", &[]);
    assert_copied_once(&env, &output, 3_000).await;
    zombie.signal("-CONT");
    zombie.wait_counter("kappa_sink_fenced_total", 1.0).await;
    assert_copied_once(&env, &output, 3_000).await;
    drop((zombie, live));
}

/// A worker started while its broker is down waits for it, saying so on
/// `/readyz`, instead of exiting when initialising its transactions times
/// out (30 s); it copies once the broker is back.
#[tokio::test(flavor = "multi_thread")]
async fn a_worker_started_while_its_broker_is_down_waits_for_it() {
    let broker = PrivateBroker::start();
    let mut env = TestEnv::with_brokers("txn_broker_down", &broker.bootstrap()).await;
    let output = output_topic(&mut env).await;
    broker.kill();
    let mut copier = Copier::start(&env, &output, "1", &[]);
    tokio::time::sleep(Duration::from_secs(40)).await;
    assert!(
        copier.process.0.try_wait().unwrap().is_none(),
        "the worker exited while its broker was down"
    );
    let ready = reqwest::get(format!("http://127.0.0.1:{}/readyz", copier.port))
        .await
        .unwrap();
    assert_eq!(ready.status(), 503);
    let body = ready.text().await.unwrap();
    assert!(body.contains("not started"), "{body}");
    broker.restart();
    produce(&env.settings.kafka, 0..500, Duration::ZERO).await;
    assert_copied_once(&env, &output, 500).await;
    drop(copier);
}
