//! The product DAG end to end, on the real broker and database, with real
//! images and a real video: uploads through the gateway, the three branches
//! and the creator as child processes, answers from the products API.

mod common;

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use common::{image, product_of, World, MP4};
use image::ImageFormat;
use serde_json::json;
use shared::event::EventBody;

fn lamp(id: &str) -> serde_json::Value {
    json!({"product_id": id, "seller_id": "s1", "title": " Desk  lamp ", "price": "19.9",
           "currency": "eur", "categories": ["Home", "Lighting"]})
}

#[tokio::test(flavor = "multi_thread")]
async fn a_product_with_images_and_a_video_becomes_active_once() {
    let world = World::new("dag_happy", &[]).await;
    let roles = world.spawn_all().await;
    let api = &roles["api"];
    let png = image(640, 480, ImageFormat::Png);
    let jpeg = image(300, 200, ImageFormat::Jpeg);
    let answer = world
        .upload(
            &lamp("lamp-1"),
            &[(png, "image/png"), (jpeg, "image/jpeg")],
            Some(MP4),
        )
        .await;
    assert_eq!(answer["product_id"], "lamp-1");

    let product = world.decided(api, "lamp-1", Duration::from_secs(60)).await;
    assert_eq!(product["status"], "active", "{product}");
    assert_eq!(product["normalized"]["title"], "Desk lamp");
    assert_eq!(product["normalized"]["price_minor"], 1990);
    assert_eq!(product["normalized"]["currency"], "EUR");
    let parts = product["parts"].as_array().unwrap();
    let part = |name: &str| parts.iter().find(|p| p["part"] == name).unwrap().clone();
    assert_eq!(parts.len(), 4, "{product}");
    let first = part("image-1");
    assert_eq!(
        (
            first["state"].as_str(),
            &first["result"]["width"],
            &first["result"]["height"]
        ),
        (Some("processed"), &json!(640), &json!(480))
    );
    assert_eq!(first["result"]["format"], "png");
    assert_eq!(part("image-2")["result"]["format"], "jpeg");
    assert_eq!(product["video"]["duration_ms"], 1000);
    assert_eq!(
        (&product["video"]["width"], &product["video"]["height"]),
        (&json!(160), &json!(120))
    );
    assert_eq!(product["video"]["codec"], "avc1");

    // The thumbnail: a real JPEG within 256 px, cacheable by its sha256.
    let url = format!(
        "{}{}",
        api.base(),
        product["thumbnail_url"].as_str().unwrap()
    );
    let response = world
        .client
        .get(&url)
        .bearer_auth(world.token())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "image/jpeg");
    let etag = response.headers()["etag"].to_str().unwrap().to_owned();
    assert_eq!(
        etag,
        format!(
            "\"{}\"",
            first["result"]["thumbnail"]["sha256"].as_str().unwrap()
        )
    );
    let thumb = image::load_from_memory(&response.bytes().await.unwrap()).unwrap();
    assert_eq!((thumb.width(), thumb.height()), (256, 192));
    let again = world
        .client
        .get(&url)
        .bearer_auth(world.token())
        .header("if-none-match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 304);

    // Listed, nothing pending; unknown ids are a JSON 404.
    let (_, listed) = world.get(api, "/products?status=active").await;
    assert_eq!(listed["products"][0]["id"], "lamp-1", "{listed}");
    let (_, pending) = world.get(api, "/pending-joins").await;
    assert_eq!(pending["pending"], 0, "{pending}");
    let (status, missing) = world.get(api, "/products/nope").await;
    assert_eq!(status, 404);
    assert_eq!(missing["error"], "not_found");
    let (status, bogus) = world.get(api, "/products?status=bogus").await;
    assert_eq!(
        (status, &bogus["field"]),
        (400, &json!("status")),
        "{bogus}"
    );

    // The same result delivered again (a redrive), a contrary result for a
    // decided part, and the upload again: nothing changes. The result and
    // the upload carry their ids again: repeats, skipped by every worker's
    // runtime (the branches do not answer the upload again); the contrary
    // result is new, and the join ignores it.
    let events = world.events(6).await;
    let result = events
        .iter()
        .find(|(t, e)| {
            t == "asset_processed"
                && matches!(&e.body, EventBody::AssetProcessed(r) if r.part == "image-1")
        })
        .unwrap()
        .1
        .clone();
    let mut contrary = result.clone();
    if let EventBody::AssetProcessed(r) = &contrary.body {
        contrary.body = EventBody::AssetFailed(shared::event::AssetFailed {
            product_id: r.product_id.clone(),
            part: r.part.clone(),
            kind: r.kind,
            reason: "late and wrong".into(),
        });
        contrary.id = Some(uuid::Uuid::now_v7());
    }
    let upload = events
        .iter()
        .find(|(t, _)| t == "product_uploaded")
        .unwrap()
        .1
        .clone();
    let producer = shared::kafka::producer(&world.env.settings.kafka).unwrap();
    for event in [&result, &contrary, &upload] {
        let payload = event.to_json();
        let record = rdkafka::producer::FutureRecord::to(&world.env.settings.kafka.events_topic)
            .key(event.key())
            .payload(&payload);
        producer
            .send(record, Duration::from_secs(10))
            .await
            .unwrap();
    }
    let creator = &roles["creator"];
    shared::testkit::eventually(
        "the creator skipped the repeats and ignored the contrary result",
        Duration::from_secs(30),
        || async {
            let ignored = creator.metric("kappa_products_ignored_total", &[]).await;
            let repeats = creator
                .metric("kappa_sink_duplicates_skipped_total", &[])
                .await;
            (ignored >= 1.0 && repeats >= 2.0).then_some(())
        },
    )
    .await;
    let after = world.decided(api, "lamp-1", Duration::from_secs(5)).await;
    assert_eq!(after["status"], "active");
    assert_eq!(
        after["parts"], product["parts"],
        "the parts are as they were"
    );
    let events = world.events(9).await;
    let created: Vec<_> = events
        .iter()
        .filter(|(t, _)| t == "product_created")
        .collect();
    assert_eq!(created.len(), 1, "one product_created");
    let results = events
        .iter()
        .filter(|(t, _)| t.starts_with("asset_"))
        .count();
    assert_eq!(
        results,
        4 + 2,
        "one result per part and the two sent again; none for the upload's repeat"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_corrupt_image_rejects_and_a_missing_branch_is_incomplete_at_the_deadline() {
    // The deadline leaves a loaded machine time to show the join waiting
    // (both other parts in) before it decides; the test waits it out.
    let world = World::new("dag_failures", &[("KAPPA__PRODUCTS__DEADLINE_MS", "15000")]).await;
    // No video worker: a product with a video waits for it in vain.
    let image_worker = world.spawn("image", "1").await;
    let _metadata = world.spawn("metadata", "1").await;
    let creator = world.spawn("creator", "1").await;
    let api = world.spawn("api", "1").await;

    let png = image(64, 64, ImageFormat::Png);
    world
        .upload(
            &lamp("broken"),
            &[
                (png.clone(), "image/png"),
                (b"\x89PNG but no image".to_vec(), "image/png"),
            ],
            None,
        )
        .await;
    let broken = world.decided(&api, "broken", Duration::from_secs(30)).await;
    assert_eq!(broken["status"], "rejected", "{broken}");
    let reason = broken["reason"].as_str().unwrap();
    assert!(reason.starts_with("image-2: "), "{reason}");
    let bad = broken["parts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["part"] == "image-2")
        .unwrap();
    assert_eq!(bad["state"], "failed");

    // Bad metadata is a rejection naming each field.
    world
        .upload(
            &json!({"product_id": "nameless", "price": "1.234", "currency": "EUR"}),
            &[(png.clone(), "image/png")],
            None,
        )
        .await;
    let nameless = world
        .decided(&api, "nameless", Duration::from_secs(30))
        .await;
    assert_eq!(nameless["status"], "rejected");
    let reason = nameless["reason"].as_str().unwrap();
    assert!(
        reason.contains("title: is required") && reason.contains("price:"),
        "{reason}"
    );

    world
        .upload(&lamp("silent"), &[(png, "image/png")], Some(MP4))
        .await;
    // Before its deadline it waits, visibly.
    let pending = shared::testkit::eventually(
        "the join to show as pending",
        Duration::from_secs(20),
        || async {
            let (_, pending) = world.get(&api, "/pending-joins").await;
            let join = pending["joins"]
                .as_array()?
                .iter()
                .find(|j| j["product_id"] == "silent")?
                .clone();
            (join["seen"].as_array()?.len() == 2).then_some(join)
        },
    )
    .await;
    assert_eq!(pending["missing"], json!(["video"]));
    assert_eq!(pending["seen"], json!(["image-1", "metadata"]));
    // While it waits, a contrary result for a part already in changes nothing.
    let contrary = shared::event::Event::new(EventBody::AssetFailed(shared::event::AssetFailed {
        product_id: "silent".into(),
        part: "image-1".into(),
        kind: shared::event::AssetKind::Image,
        reason: "a second opinion".into(),
    }));
    let producer = shared::kafka::producer(&world.env.settings.kafka).unwrap();
    let payload = contrary.to_json();
    producer
        .send(
            rdkafka::producer::FutureRecord::to(&world.env.settings.kafka.events_topic)
                .key("silent")
                .payload(&payload),
            Duration::from_secs(10),
        )
        .await
        .unwrap();
    shared::testkit::eventually(
        "the creator to ignore the contrary result",
        Duration::from_secs(20),
        || async {
            (creator.metric("kappa_products_ignored_total", &[]).await >= 1.0).then_some(())
        },
    )
    .await;
    let (_, waiting) = world.get(&api, "/products/silent").await;
    let first = waiting["parts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["part"] == "image-1")
        .unwrap()
        .clone();
    assert_eq!(first["state"], "processed", "{waiting}");
    let silent = world.decided(&api, "silent", Duration::from_secs(30)).await;
    assert_eq!(silent["status"], "incomplete", "{silent}");
    assert!(
        silent["reason"].as_str().unwrap().ends_with(": video"),
        "{silent}"
    );

    let events = world.events(3 + 6 + 1).await;
    let failed: HashMap<&str, (&str, Vec<String>)> = events
        .iter()
        .filter_map(|(_, e)| match &e.body {
            EventBody::ProductFailed(f) => Some((
                f.product_id.as_str(),
                (f.status.as_str(), f.missing.clone()),
            )),
            _ => None,
        })
        .collect();
    assert_eq!(failed.len(), 3, "{failed:?}");
    assert_eq!(failed["broken"].0, "rejected");
    assert_eq!(failed["silent"], ("incomplete", vec!["video".to_owned()]));
    // The refused image is the branch's own answer, with its reason.
    assert!(
        image_worker
            .metric("kappa_products_parts_total", &["outcome=\"failed\""])
            .await
            >= 1.0
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn sigkills_of_the_creator_and_an_image_worker_decide_every_product_once() {
    let world = World::new("dag_crash", &[("KAPPA__PRODUCTS__MAX_BATCH_EVENTS", "5")]).await;
    let first_image = world.spawn("image", "1").await;
    let second_image = world.spawn("image", "2").await;
    let _video = world.spawn("video", "1").await;
    let _metadata = world.spawn("metadata", "1").await;
    let creator = world.spawn("creator", "1").await;
    let api = world.spawn("api", "1").await;

    // Both image workers own partitions before the uploads start.
    shared::testkit::eventually(
        "both image workers to be assigned partitions",
        Duration::from_secs(60),
        || async {
            let a = first_image
                .metric("kappa_sink_partitions_assigned", &[])
                .await;
            let b = second_image
                .metric("kappa_sink_partitions_assigned", &[])
                .await;
            (a >= 1.0 && b >= 1.0 && a + b >= f64::from(shared::testkit::PARTITIONS)).then_some(())
        },
    )
    .await;
    const PRODUCTS: usize = 40;
    let jpeg = image(1200, 900, ImageFormat::Jpeg);
    let upload_some = |range: std::ops::Range<usize>| {
        let (world, jpeg) = (&world, &jpeg);
        async move {
            for i in range {
                let images = [
                    (jpeg.clone(), "image/jpeg"),
                    (image(80 + i as u32, 60, ImageFormat::Png), "image/png"),
                ];
                world
                    .upload(&lamp(&format!("p{i:03}")), &images, Some(MP4))
                    .await;
            }
        }
    };
    upload_some(0..PRODUCTS / 2).await;
    // Both image workers take part.
    shared::testkit::eventually(
        "both image workers to process parts",
        Duration::from_secs(60),
        || async {
            let a = first_image.metric("kappa_products_parts_total", &[]).await;
            let b = second_image.metric("kappa_products_parts_total", &[]).await;
            (a > 0.0 && b > 0.0).then_some(())
        },
    )
    .await;
    // Mid-stream: the creator with products half buffered, one image worker mid-batch.
    first_image.kill();
    creator.kill();
    upload_some(PRODUCTS / 2..PRODUCTS).await;
    let _creator = world.spawn("creator", "1").await;
    let _first_image = world.spawn("image", "1").await;

    for i in 0..PRODUCTS {
        let product = world
            .decided(&api, &format!("p{i:03}"), Duration::from_secs(120))
            .await;
        assert_eq!(product["status"], "active", "{product}");
    }
    // Exactly one result per part, one decision per product, on the topic
    // as readers (read_committed) see it.
    let events = world.events(PRODUCTS * 6).await;
    let mut results: HashMap<(String, String), usize> = HashMap::new();
    let mut decisions: HashMap<String, HashSet<uuid::Uuid>> = HashMap::new();
    for (_, event) in &events {
        match &event.body {
            EventBody::AssetProcessed(r) => {
                *results
                    .entry((r.product_id.clone(), r.part.clone()))
                    .or_default() += 1
            }
            EventBody::AssetFailed(r) => panic!("a part failed: {r:?}"),
            EventBody::ProductCreated(_) | EventBody::ProductFailed(_) => {
                decisions
                    .entry(product_of(event).unwrap().to_owned())
                    .or_default()
                    .insert(event.id.unwrap());
            }
            _ => {}
        }
    }
    assert_eq!(results.len(), PRODUCTS * 4, "every part has a result");
    let twice: Vec<_> = results.iter().filter(|(_, n)| **n != 1).collect();
    assert!(
        twice.is_empty(),
        "results emitted more than once: {twice:?}"
    );
    assert_eq!(decisions.len(), PRODUCTS);
    assert!(
        decisions.values().all(|ids| ids.len() == 1),
        "one decision per product"
    );
    let (rows,): (i64,) = sqlx::query_as("SELECT count(*) FROM products_outbox")
        .fetch_one(&world.env.pool().await)
        .await
        .unwrap();
    assert_eq!(rows, PRODUCTS as i64, "one outbox row per product");
}

/// `/openapi.json` of the API role describes its routes (the thumbnail as
/// JPEG bytes with 304, typed products) with the shared error answers; a
/// worker role describes only its ops routes.
#[tokio::test(flavor = "multi_thread")]
async fn the_api_is_described_with_its_error_answers() {
    let world = World::new("dag_openapi", &[]).await;
    let api = world.spawn("api", "1").await;
    let metadata = world.spawn("metadata", "1").await;
    let described = shared::testkit::assert_openapi(
        &format!("127.0.0.1:{}", api.port),
        &[
            "GET /products",
            "GET /products/stats",
            "GET /products/{id}",
            "GET /products/{id}/thumbnail",
            "GET /pending-joins",
        ],
    )
    .await;
    let thumbnail = &described["paths"]["/products/{id}/thumbnail"]["get"]["responses"];
    let jpeg = &thumbnail["200"]["content"]["image/jpeg"]["schema"]["$ref"];
    let bytes = jpeg
        .as_str()
        .and_then(|r| described.pointer(r.trim_start_matches('#')));
    assert_eq!(
        bytes.map(|b| &b["format"]),
        Some(&json!("binary")),
        "{thumbnail}"
    );
    assert!(thumbnail["200"]["headers"]["ETag"].is_object());
    assert!(thumbnail["304"].is_object(), "304 documented");
    let schemas = &described["components"]["schemas"];
    assert_eq!(
        schemas["ProductStatus"]["enum"],
        json!(["pending", "active", "rejected", "incomplete"])
    );
    assert_eq!(
        schemas["AssetKind"]["enum"],
        json!(["image", "video", "metadata"])
    );
    assert_eq!(
        schemas["Product"]["properties"]["status"]["$ref"],
        "#/components/schemas/ProductStatus"
    );
    let list = &described["paths"]["/products"]["get"];
    let status = list["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "status")
        .expect("status is described");
    assert_eq!(status["in"], "query");
    // What a fuzzer sends: a NUL in an id or cursor is no 5xx.
    let (code, _) = world.get(&api, "/products/a%00b").await;
    assert_eq!(code, 404);
    let (code, _) = world.get(&api, "/products?after=%00").await;
    assert_eq!(code, 400);
    let (code, stats) = world.get(&api, "/products/stats").await;
    assert_eq!(
        (code, &stats["by_status"]["active"]),
        (200, &json!(0)),
        "{stats}"
    );

    // A worker role serves no API of its own.
    shared::testkit::assert_openapi(&format!("127.0.0.1:{}", metadata.port), &[]).await;
}
