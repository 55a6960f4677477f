//! `POST /products`: files go to the claim-check store one by one, content
//! addressed; the event on the topic is small and names each file; a bad
//! upload gets its 4xx and nothing reaches the topic or the store.

mod common;

use std::time::Duration;

use rdkafka::message::Message;
use reqwest::multipart::{Form, Part};
use serde_json::{json, Value};
use shared::claim_check::{sha256_hex, ClaimStore};
use shared::event::{Event, EventBody};

fn file(bytes: &[u8], name: &str, content_type: &str) -> Part {
    Part::bytes(bytes.to_vec())
        .file_name(name.to_owned())
        .mime_str(content_type)
        .unwrap()
}

fn metadata(value: Value) -> Part {
    Part::text(value.to_string())
        .mime_str("application/json")
        .unwrap()
}

async fn upload(app: &common::TestApp, form: Form) -> (u16, Value) {
    let response = app
        .client
        .post(app.url("/products"))
        .bearer_auth(app.token())
        .multipart(form)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.expect("answers are JSON"))
}

#[tokio::test(flavor = "multi_thread")]
async fn an_upload_is_one_small_event_naming_each_stored_file() {
    let app = common::spawn_app("upload", |_, _| {}).await;
    let image = vec![0x89u8; 300 * 1024];
    let other = vec![0xffu8; 1024];
    let video = vec![0x42u8; 200 * 1024];
    let form = Form::new()
        .part(
            "metadata",
            metadata(json!({"product_id": "lamp-1", "seller_id": "s1", "title": "Lamp", "price": "19.90", "currency": "EUR"})),
        )
        .part("image", file(&image, "a.png", "image/png"))
        .part("image", file(&other, "b.jpg", "image/jpeg"))
        // The same bytes again: one stored payload.
        .part("image", file(&image, "c.png", "image/png"))
        .part("video", file(&video, "v.mp4", "video/mp4"));
    let (status, answer) = upload(&app, form).await;
    assert_eq!(status, 202, "{answer}");
    assert_eq!(answer["product_id"], "lamp-1");
    let parts: Vec<&str> = answer["parts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["part"].as_str().unwrap())
        .collect();
    assert_eq!(
        parts,
        ["metadata", "image-1", "image-2", "image-3", "video"]
    );

    let topic = app.env.settings.kafka.events_topic.clone();
    let message = app
        .env
        .read_exactly(&topic, 1, Duration::from_secs(30))
        .await
        .remove(0);
    assert_eq!(message.key(), Some(&b"lamp-1"[..]));
    assert_eq!(
        message.partition() as i64,
        answer["partition"].as_i64().unwrap()
    );
    assert_eq!(message.offset(), answer["offset"].as_i64().unwrap());
    let payload = message.payload().unwrap();
    assert!(
        payload.len() < 2048,
        "the event stays small: {} bytes",
        payload.len()
    );
    let event = Event::parse(payload).unwrap();
    let EventBody::ProductUploaded(uploaded) = event.body else {
        panic!("not a product_uploaded: {event:?}");
    };
    assert_eq!(uploaded.seller_id.as_deref(), Some("s1"));
    // Ids are the envelope's; the rest of the metadata travels as sent.
    assert_eq!(
        uploaded.metadata,
        json!({"title": "Lamp", "price": "19.90", "currency": "EUR"})
    );
    let pool = app.env.pool().await;
    let store = ClaimStore::new(pool.clone());
    let sent = [&image, &other, &image, &video];
    for (asset, bytes) in uploaded.assets.iter().zip(sent) {
        assert_eq!(asset.sha256, sha256_hex(bytes), "{}", asset.part);
        assert_eq!(asset.size, bytes.len() as u64);
        let (stored, _) = store.fetch_typed(asset.token).await.unwrap();
        assert_eq!(&stored, bytes, "{} comes back byte for byte", asset.part);
    }
    assert_eq!(uploaded.assets[0].token, uploaded.assets[2].token);
    assert_eq!(uploaded.assets[3].content_type, "video/mp4");
    let (rows, committed): (i64, i64) = sqlx::query_as(
        "SELECT count(*), count(*) FILTER (WHERE state = 'committed') FROM claim_checks WHERE token = ANY($1)",
    )
    .bind(uploaded.assets.iter().map(|a| a.token).collect::<Vec<_>>())
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(
        (rows, committed),
        (3, 3),
        "three distinct files, each committed once"
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_uploads_get_their_4xx_and_nothing_is_produced() {
    let app = common::spawn_app("upload_bad", |_, http| {
        http.max_upload_file_bytes = 64 * 1024
    })
    .await;
    let png = || file(b"\x89PNG fake", "a.png", "image/png");
    let meta = || metadata(json!({"title": "Lamp"}));
    let pool = app.env.pool().await;
    let (before,): (i64,) = sqlx::query_as("SELECT count(*) FROM claim_checks")
        .fetch_one(&pool)
        .await
        .unwrap();
    let cases: Vec<(Form, u16, &str)> = vec![
        (Form::new().part("image", png()), 400, "no metadata part"),
        (
            Form::new()
                .part("metadata", Part::text("{not json"))
                .part("image", png()),
            400,
            "not JSON",
        ),
        (
            Form::new()
                .part("metadata", Part::text("[1]"))
                .part("image", png()),
            400,
            "JSON object",
        ),
        (
            Form::new()
                .part("metadata", meta())
                .part("image", png())
                .part("audio", png()),
            400,
            "unknown part `audio`",
        ),
        (
            Form::new().part("metadata", meta()),
            400,
            "at least one image",
        ),
        (
            Form::new()
                .part("metadata", meta())
                .part("image", png())
                .part("video", file(b"a", "a.mp4", "video/mp4"))
                .part("video", file(b"b", "b.mp4", "video/mp4")),
            400,
            "at most one video",
        ),
        (
            Form::new()
                .part(
                    "metadata",
                    metadata(json!({"title": "Lamp", "product_id": 7})),
                )
                .part("image", png()),
            400,
            "product_id must be a string",
        ),
        (
            Form::new()
                .part(
                    "metadata",
                    metadata(json!({"title": "Lamp", "product_id": "a\u{0}b"})),
                )
                .part("image", png()),
            400,
            "control character",
        ),
        (
            Form::new().part("metadata", meta()).part(
                "image",
                file(&vec![1u8; 64 * 1024 + 1], "big.png", "image/png"),
            ),
            413,
            "larger than 65536 bytes",
        ),
        (
            Form::new()
                .part("metadata", meta())
                .part("image", file(b"GIF89a", "a.gif", "image/gif")),
            415,
            "image/gif",
        ),
        (
            Form::new()
                .part("metadata", meta())
                .part("image", png())
                .part("video", file(b"x", "a.avi", "video/x-msvideo")),
            415,
            "video/mp4, video/webm",
        ),
    ];
    for (form, status, needle) in cases {
        let (got, body) = upload(&app, form).await;
        assert_eq!(got, status, "{needle}: {body}");
        let message = body["message"].as_str().unwrap_or_default();
        assert!(message.contains(needle), "{needle}: {body}");
        assert!(body["error"].is_string(), "{body}");
    }
    // Without the token: 401, before the body is read.
    let response = app
        .client
        .post(app.url("/products"))
        .multipart(Form::new().part("metadata", meta()).part("image", png()))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    // Not multipart at all.
    let response = app
        .client
        .post(app.url("/products"))
        .bearer_auth(app.token())
        .json(&json!({"title": "Lamp"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);

    let topic = app.env.settings.kafka.events_topic.clone();
    assert_eq!(app.env.count(&topic).await, 0, "nothing reached the topic");
    let (after,): (i64,) = sqlx::query_as("SELECT count(*) FROM claim_checks")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(after, before, "nothing reached the claim-check store");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn long_or_control_character_file_names_are_refused_by_name_and_nothing_is_produced() {
    let app = common::spawn_app("upload_names", |_, _| {}).await;
    let pool = app.env.pool().await;
    let (before,): (i64,) = sqlx::query_as("SELECT count(*) FROM claim_checks")
        .fetch_one(&pool)
        .await
        .unwrap();
    let meta = || metadata(json!({"title": "Lamp"}));
    let long = format!("{}.png", "a".repeat(100_000));
    // Sent as written (no RFC 5987 `filename*` encoding, which the gateway's
    // multipart parser does not read): the control characters arrive raw.
    let raw = |part: &str, name: &str, content_type: &str| {
        Form::new()
            .percent_encode_noop()
            .part("metadata", meta())
            .part(part.to_owned(), file(b"\x89PNG fake", name, content_type))
    };
    let cases: Vec<(Form, &str, &str)> = vec![
        (
            Form::new()
                .part("metadata", meta())
                .part("image", file(b"\x89PNG fake", &long, "image/png")),
            "image",
            "is 100004 bytes long; at most 255 bytes",
        ),
        (
            Form::new()
                .part("metadata", meta())
                .part("image", file(b"\x89PNG fake", "a.png", "image/png"))
                .part("video", file(b"x", &long, "video/mp4")),
            "video",
            "is 100004 bytes long; at most 255 bytes",
        ),
        (
            raw("image", "a\tb.png", "image/png"),
            "image",
            "control character U+0009",
        ),
        (
            raw("image", "a\u{85}b.png", "image/png"),
            "image",
            "control character U+0085",
        ),
    ];
    for (form, part, needle) in cases {
        let (status, body) = upload(&app, form).await;
        assert_eq!(status, 400, "{needle}: {body}");
        assert_eq!(body["error"], "bad_upload", "{body}");
        assert_eq!(body["field"], "filename", "{body}");
        assert_eq!(body["part"], part, "{body}");
        let message = body["message"].as_str().unwrap_or_default();
        assert!(message.contains(needle), "{needle}: {body}");
        assert!(message.len() < 200, "the answer does not echo the name");
    }

    let topic = app.env.settings.kafka.events_topic.clone();
    assert_eq!(app.env.count(&topic).await, 0, "nothing reached the topic");
    let (after,): (i64,) = sqlx::query_as("SELECT count(*) FROM claim_checks")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(after, before, "nothing reached the claim-check store");
    app.stop().await;
}
