//! The claim-check store (PostgreSQL, crashed with `pg_ctl -m immediate`)
//! is down when the image branch goes to read what its uploads refer to:
//! the files themselves (the branch's own fetch), and envelopes that were
//! too large for the topic (the runtime's resolve, before the branch sees
//! them). Neither is judged missing by a store that did not answer: the
//! batch waits, and once the store is back every part is processed exactly
//! once, nothing failed and nothing dead-lettered.

mod common;

use std::time::Duration;

use common::{image, World};
use image::ImageFormat;
use serde_json::{json, Value};
use shared::config::Secret;
use shared::event::EventBody;
use shared::testkit::PrivatePostgres;

/// Products per round, two images each.
const PRODUCTS: usize = 6;

fn product(round: &str, i: usize, description: &str) -> Value {
    json!({
        "product_id": format!("{round}{i}"),
        "seller_id": "s1",
        "title": "Lamp",
        "description": description,
        "price": "9.5",
        "currency": "EUR",
    })
}

/// The image branch's count of parts with `outcome`.
async fn parts(worker: &common::Child, outcome: &str) -> f64 {
    worker
        .metric(
            "kappa_products_parts_total",
            &["kind=\"image\"", &format!("outcome=\"{outcome}\"")],
        )
        .await
}

/// One round: uploads wait on the topic while the worker is paused, the
/// store crashes, the worker resumes into it; `met` names the worker's
/// counter that shows it met the outage.
async fn round(
    world: &World,
    postgres: &PrivatePostgres,
    worker: &common::Child,
    name: &str,
    description: &str,
    met: &str,
) {
    let before = worker.metric(met, &[]).await;
    let processed = parts(worker, "processed").await;
    worker.signal("STOP");
    for i in 0..PRODUCTS {
        // Images differ: each is its own payload in the store.
        let images: Vec<(Vec<u8>, &str)> = (0..2)
            .map(|k| {
                let side = 200 + u32::try_from(i * 2 + k).unwrap();
                (image(side, side, ImageFormat::Png), "image/png")
            })
            .collect();
        world
            .upload(&product(name, i, description), &images, None)
            .await;
    }
    postgres.crash();
    worker.signal("CONT");
    shared::testkit::eventually(
        &format!("the image worker ({name}) to meet the store's outage ({met})"),
        Duration::from_secs(60),
        || async { (worker.metric(met, &[]).await > before).then_some(()) },
    )
    .await;
    assert_eq!(
        parts(worker, "processed").await,
        processed,
        "{name}: no file can be processed while the store is down"
    );
    postgres.restart();
    let all = processed + (2 * PRODUCTS) as f64;
    shared::testkit::eventually(
        &format!("{name}: every image processed once the store is back"),
        Duration::from_secs(90),
        || async { (parts(worker, "processed").await >= all).then_some(()) },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_store_down_while_payloads_are_resolved_delays_and_loses_nothing() {
    let postgres = PrivatePostgres::start();
    let world = World::configured("dag_store_down", &[], |settings| {
        settings.database.url = Secret::new(postgres.url());
        // Envelopes over 1 KiB go to the store: a long description makes one.
        settings.claim_check.threshold_bytes = 1024;
    })
    .await;
    let worker = world.spawn("image", "1").await;
    // A first batch reads the partitions' recent event ids (from the
    // database too): done before the outages, so what meets them is the
    // reading of payloads.
    world
        .upload(
            &product("warm", 0, "short"),
            &[(image(64, 64, ImageFormat::Png), "image/png")],
            None,
        )
        .await;
    shared::testkit::eventually(
        "the first upload processed",
        Duration::from_secs(60),
        || async { (parts(&worker, "processed").await >= 1.0).then_some(()) },
    )
    .await;

    // The branch's own fetch of each file.
    round(
        &world,
        &postgres,
        &worker,
        "file",
        "short",
        "kappa_sink_commit_failures_total",
    )
    .await;
    // The runtime's resolve of envelopes kept in the store.
    round(
        &world,
        &postgres,
        &worker,
        "envelope",
        &"a long description ".repeat(100),
        "kappa_sink_claim_check_failures_total",
    )
    .await;

    let events = world.events(3 * 2 * PRODUCTS + 2).await;
    for round in ["file", "envelope"] {
        for i in 0..PRODUCTS {
            let id = format!("{round}{i}");
            let mut processed: Vec<&str> = events
                .iter()
                .filter_map(|(_, e)| match &e.body {
                    EventBody::AssetProcessed(a) if a.product_id == id => Some(a.part.as_str()),
                    _ => None,
                })
                .collect();
            processed.sort_unstable();
            assert_eq!(
                processed,
                ["image-1", "image-2"],
                "{id}: each image processed exactly once"
            );
        }
    }
    let failed: Vec<_> = events
        .iter()
        .filter(|(_, e)| matches!(e.body, EventBody::AssetFailed(_)))
        .collect();
    assert!(failed.is_empty(), "no part failed: {failed:?}");
    let dlq = &world.env.settings.kafka.dlq_topic;
    assert_eq!(world.env.count(dlq).await, 0, "nothing dead-lettered");
    assert!(
        parts(&worker, "failed").await == 0.0,
        "the branch refused no file"
    );
}
