//! Two creator instances share the uploads' partitions; one is SIGKILLed
//! while the products' deadlines pass. Every product still ends
//! `incomplete` exactly once (one decision on the topic), and a result
//! that arrives after the decision is counted and changes nothing.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::{image, product_of, World, MP4};
use image::ImageFormat;
use serde_json::json;
use shared::event::{AssetKind, AssetProcessed, Event, EventBody};

const PRODUCTS: usize = 8;

fn lamp(id: &str) -> serde_json::Value {
    json!({"product_id": id, "seller_id": "s1", "title": "Lamp", "price": "9.5", "currency": "EUR"})
}

/// Both creators' count of results that came for nothing waiting.
async fn ignored(creators: &[&common::Child]) -> f64 {
    let mut total = 0.0;
    for creator in creators {
        total += creator
            .metric(
                "kappa_products_ignored_total",
                &["why=\"result_not_waiting\""],
            )
            .await;
    }
    total
}

#[tokio::test(flavor = "multi_thread")]
async fn two_creators_and_a_sigkill_across_the_deadlines_decide_each_product_once() {
    // No video worker: every product waits for its video until its deadline.
    let world = World::new("dag_creators", &[("KAPPA__PRODUCTS__DEADLINE_MS", "8000")]).await;
    let _image = world.spawn("image", "1").await;
    let _metadata = world.spawn("metadata", "1").await;
    let first = world.spawn("creator", "1").await;
    let second = world.spawn("creator", "2").await;
    let api = world.spawn("api", "1").await;
    shared::testkit::eventually(
        "both creators to be assigned partitions",
        Duration::from_secs(60),
        || async {
            let a = first.metric("kappa_sink_partitions_assigned", &[]).await;
            let b = second.metric("kappa_sink_partitions_assigned", &[]).await;
            (a >= 1.0 && b >= 1.0 && a + b >= f64::from(shared::testkit::PARTITIONS)).then_some(())
        },
    )
    .await;

    // Uploads a second apart: their deadlines pass one after another.
    let png = image(64, 48, ImageFormat::Png);
    for i in 0..PRODUCTS {
        world
            .upload(
                &lamp(&format!("c{i}")),
                &[(png.clone(), "image/png")],
                Some(MP4),
            )
            .await;
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    // The first deadlines have passed (one product decided), the last not
    // yet: the first creator dies among them.
    shared::testkit::eventually(
        "a first product decided at its deadline",
        Duration::from_secs(60),
        || async {
            for i in 0..PRODUCTS {
                let (_, p) = world.get(&api, &format!("/products/c{i}")).await;
                if p["status"] == "incomplete" {
                    return Some(());
                }
            }
            None
        },
    )
    .await;
    first.kill();
    let first_again = world.spawn("creator", "1").await;

    for i in 0..PRODUCTS {
        let product = world
            .decided(&api, &format!("c{i}"), Duration::from_secs(120))
            .await;
        assert_eq!(product["status"], "incomplete", "{product}");
    }

    // A video result after the decision: counted, not applied.
    let before = ignored(&[&second, &first_again]).await;
    let late = Event::new(EventBody::AssetProcessed(AssetProcessed {
        product_id: "c0".into(),
        part: "video".into(),
        kind: AssetKind::Video,
        result: json!({"duration_secs": 1.0}),
    }));
    let producer = shared::kafka::producer(&world.env.settings.kafka).unwrap();
    producer
        .send(
            rdkafka::producer::FutureRecord::to(&world.env.settings.kafka.events_topic)
                .key("c0")
                .payload(&late.to_json()),
            Duration::from_secs(10),
        )
        .await
        .map_err(|(e, _)| e)
        .unwrap();
    shared::testkit::eventually(
        "the late result to be counted",
        Duration::from_secs(60),
        || async {
            let now = ignored(&[&second, &first_again]).await;
            (now >= before + 1.0).then_some(())
        },
    )
    .await;
    let (_, c0) = world.get(&api, "/products/c0").await;
    assert_eq!(c0["status"], "incomplete", "{c0}");

    // One decision per product on the topic, the late result beside them.
    let events = world.events(PRODUCTS * 4 + 1).await;
    let mut decisions: HashMap<String, Vec<String>> = HashMap::new();
    for (_, event) in &events {
        if let EventBody::ProductCreated(_) | EventBody::ProductFailed(_) = &event.body {
            let status = match &event.body {
                EventBody::ProductFailed(f) => f.status.clone(),
                _ => "active".to_owned(),
            };
            decisions
                .entry(product_of(event).unwrap().to_owned())
                .or_default()
                .push(status);
        }
    }
    assert_eq!(decisions.len(), PRODUCTS, "{decisions:?}");
    assert!(
        decisions.values().all(|d| d == &["incomplete"]),
        "one decision per product: {decisions:?}"
    );
}
