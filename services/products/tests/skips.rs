//! A branch worker on the one shared stream, where nearly every record is
//! someone else's (interactions): SIGKILLed while it skips a long run of
//! them, and started again under the same instance name, it loses no
//! upload and answers none twice (its results are read `read_committed`),
//! and its committed offsets reach the end of the topic. What it skipped
//! commits with its Kafka transactions, never ahead of them.

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::World;
use rdkafka::producer::FutureRecord;
use shared::event::EventBody;
use shared::testkit::eventually;

const BLOCKS: usize = 40;
const FOREIGN_PER_BLOCK: usize = 5_000;

#[tokio::test(flavor = "multi_thread")]
async fn a_branch_killed_while_skipping_foreign_records_loses_and_repeats_nothing() {
    // Batches held a second: the kill finds an upload in hand, with the
    // records skipped after it read and not yet committed.
    let world = World::new(
        "products_skip_kill",
        &[("KAPPA__PRODUCTS__MAX_BATCH_MS", "1000")],
    )
    .await;
    let metadata = world.spawn("metadata", "1").await;

    // Blocks of interactions, each followed by one upload (metadata only:
    // the metadata branch answers it), produced while the worker runs.
    let blocks_sent = Arc::new(AtomicUsize::new(0));
    let producing = {
        let (kafka, sent) = (world.env.settings.kafka.clone(), blocks_sent.clone());
        tokio::spawn(async move {
            // Per partition, the offset after the last record produced.
            let mut ends: BTreeMap<i32, i64> = BTreeMap::new();
            let producer = shared::kafka::producer(&kafka).unwrap();
            for block in 0..BLOCKS {
                let mut records: Vec<(String, String)> = (0..FOREIGN_PER_BLOCK)
                    .map(|i| {
                        let user = format!("u{}", i % 97);
                        let view = format!(
                            r#"{{"type":"interaction","user_id":"{user}","product_id":"p{i}","action":"view"}}"#
                        );
                        (user, view)
                    })
                    .collect();
                let product = format!("skip-{block}");
                records.push((
                    product.clone(),
                    format!(
                        r#"{{"type":"product_uploaded","product_id":"{product}","metadata":{{"title":"Lamp {block}","price":"9.90","currency":"EUR"}},"assets":[]}}"#
                    ),
                ));
                let sends = records.iter().map(|(key, payload)| {
                    producer.send(
                        FutureRecord::to(&kafka.events_topic)
                            .key(key)
                            .payload(payload),
                        Duration::from_secs(30),
                    )
                });
                for sent in futures::future::join_all(sends).await {
                    let delivery = sent.map_err(|(e, _)| e).unwrap();
                    let end = ends.entry(delivery.partition).or_default();
                    *end = (*end).max(delivery.offset + 1);
                }
                sent.store(block + 1, Ordering::Relaxed);
                // Paced: the stream is still coming when the kill lands.
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            ends
        })
    };

    // Killed mid-stream: an upload in hand (read, not committed), records
    // skipped after it, and more still coming.
    eventually(
        "the worker holding an upload mid-stream",
        Duration::from_secs(120),
        || async {
            let in_hand = metadata.metric("kappa_sink_records_in_hand", &[]).await;
            (in_hand > 0.0 && blocks_sent.load(Ordering::Relaxed) >= BLOCKS / 4).then_some(())
        },
    )
    .await;
    let sent_at_kill = blocks_sent.load(Ordering::Relaxed);
    assert!(sent_at_kill < BLOCKS, "the kill came after the last block");
    metadata.kill();
    let metadata = world.spawn("metadata", "1").await;
    let ends = producing.await.unwrap();

    // Past every record produced (the topic's own ends are further: the
    // worker's results, and its transactions' markers, are on it too).
    eventually(
        "every record committed",
        Duration::from_secs(120),
        || async {
            for (partition, end) in &ends {
                let label = format!("partition=\"{partition}\"");
                let committed = metadata
                    .metric("kappa_sink_committed_offset", &[&label])
                    .await;
                if committed < *end as f64 {
                    return None;
                }
            }
            Some(())
        },
    )
    .await;
    assert!(
        metadata.metric("kappa_sink_skipped_total", &[]).await > 0.0,
        "the new instance skipped records too"
    );
    let mut answers: BTreeMap<String, usize> = BTreeMap::new();
    for (_, event) in world.events(BLOCKS * (FOREIGN_PER_BLOCK + 2)).await {
        if let EventBody::AssetProcessed(result) = &event.body {
            assert_eq!(result.part, "metadata");
            *answers.entry(result.product_id.clone()).or_default() += 1;
        }
    }
    let expected: BTreeMap<String, usize> = (0..BLOCKS).map(|b| (format!("skip-{b}"), 1)).collect();
    assert_eq!(answers, expected, "each upload answered exactly once");
}
