//! Partition agreement: the gateway, loadgen, `kcat -X
//! partitioner=murmur2_random` and Kafka's own console producer put the same
//! key on the same partition. Per-partition state (the recommendation
//! model) depends on it: a user's events typed in with any of these tools
//! must meet in one partition.

mod common;

use std::collections::BTreeMap;
use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use rdkafka::message::Message;
use serde_json::Value;

const KEYS: usize = 60;

fn event(tool: &str, key: &str) -> String {
    format!(r#"{{"type":"interaction","user_id":"{key}","product_id":"{tool}","action":"view"}}"#)
}

/// Runs `program` with `args`, writing `input` to its stdin.
fn pipe(program: &str, args: &[&str], input: &str) {
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("running {program}: {e}"));
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let status = shared::testkit::wait_child(&mut child, Duration::from_secs(60), program);
    assert!(status.success(), "{program} failed: {status}");
}

#[tokio::test(flavor = "multi_thread")]
async fn every_producer_puts_a_key_on_the_same_partition() {
    let app = common::spawn_app("partitions", |_, _| {}).await;
    let kafka = app.env.settings.kafka.clone();
    let topic = kafka.events_topic.clone();
    let keys: Vec<String> = (0..KEYS)
        .map(|i| format!("user-{i}-{}", i * 7919))
        .collect();

    let body: String = keys.iter().map(|k| event("gateway", k) + "\n").collect();
    assert_eq!(app.post_ndjson(body).await.status(), 202);

    let lines: Vec<loadgen::sink::Line> = keys
        .iter()
        .map(|k| loadgen::sink::Line {
            key: Some(k.clone()),
            payload: event("loadgen", k).into_bytes(),
            ts: None,
        })
        .collect();
    loadgen::sink::to_kafka(&kafka, &topic, lines.into_iter(), 0)
        .await
        .unwrap();

    let keyed = |tool: &str| -> String {
        keys.iter()
            .map(|k| format!("{k}:{}\n", event(tool, k)))
            .collect()
    };
    let input = keyed("kcat");
    tokio::task::block_in_place(|| {
        pipe(
            "kcat",
            &[
                "-P",
                "-b",
                &kafka.brokers,
                "-t",
                &topic,
                "-K:",
                "-X",
                "partitioner=murmur2_random",
            ],
            &input,
        )
    });
    let cli = shared::testkit::repo_root().join("scripts/kafka-cli.sh");
    let input = keyed("console");
    tokio::task::block_in_place(|| {
        pipe(
            cli.to_str().unwrap(),
            &[
                "console-producer",
                "--bootstrap-server",
                &kafka.brokers,
                "--topic",
                &topic,
                "--property",
                "parse.key=true",
                "--property",
                "key.separator=:",
            ],
            &input,
        )
    });

    let messages = app
        .env
        .read_exactly(&topic, 4 * KEYS, Duration::from_secs(60))
        .await;
    // key -> tool -> partition
    let mut placed: BTreeMap<String, BTreeMap<String, i32>> = BTreeMap::new();
    for m in &messages {
        let key = std::str::from_utf8(m.key().expect("keyed"))
            .unwrap()
            .to_owned();
        let body: Value = serde_json::from_slice(m.payload().unwrap()).unwrap();
        assert_eq!(body["user_id"], key.as_str(), "the key is the entity");
        let tool = body["product_id"].as_str().unwrap().to_owned();
        placed.entry(key).or_default().insert(tool, m.partition());
    }
    assert_eq!(placed.len(), KEYS);
    let mut used = std::collections::BTreeSet::new();
    for (key, tools) in &placed {
        assert_eq!(tools.len(), 4, "{key}: {tools:?}");
        let gateway = tools["gateway"];
        used.insert(gateway);
        for (tool, partition) in tools {
            assert_eq!(*partition, gateway, "{tool} put {key} elsewhere: {tools:?}");
        }
    }
    assert!(used.len() > 3, "keys spread over partitions: {used:?}");
    app.stop().await;
}
