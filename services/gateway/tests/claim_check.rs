//! A 1 MiB event travels as a token: the stored payload comes back byte for
//! byte, a tampered one is refused, an uncommitted one is swept.

mod common;

use std::time::Duration;

use base64::Engine;
use rdkafka::message::Message;
use serde_json::Value;
use shared::claim_check::{sha256_hex, ClaimError, ClaimStore};
use shared::event::{parse, Envelope, Event};

fn big_upload(bytes: usize) -> String {
    let data = base64::engine::general_purpose::STANDARD.encode(vec![7u8; bytes]);
    format!(
        r#"{{"type":"product_uploaded","id":"0193a5c2-7f1e-7000-8000-0000000000cc","product_id":"p42","seller_id":"s1","metadata":{{"title":"Lamp","description":"{data}"}},"assets":[]}}"#
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn large_event_travels_as_a_token() {
    let app = common::spawn_app("claim_check", |_, _| {}).await;
    let line = big_upload(768 * 1024); // ~1 MiB once base64-encoded
    assert!(line.len() > 1_000_000);
    let response = app.post_ndjson(line.clone()).await;
    assert_eq!(response.status(), 202);
    let answer: Value = response.json().await.unwrap();
    let token = answer["events"][0]["claim_check"]
        .as_str()
        .expect("a token")
        .to_owned();

    // The topic message is small and carries the token, type and key.
    let topic = app.env.settings.kafka.events_topic.clone();
    let m = app
        .env
        .read_exactly(&topic, 1, Duration::from_secs(30))
        .await
        .remove(0);
    let payload = m.payload().unwrap();
    assert!(payload.len() < 1024, "envelope is {} bytes", payload.len());
    assert_eq!(m.key(), Some(&b"p42"[..]));
    let Envelope::Claimed(claimed) = parse(payload).unwrap() else {
        panic!("expected a claim check")
    };
    assert_eq!(claimed.claim_check.token.to_string(), token);

    // Resolving returns the posted event; the HTTP route returns the exact stored bytes.
    let posted = Event::parse(line.as_bytes()).unwrap();
    let store = ClaimStore::new(app.env.pool().await);
    let (stored, _) = store.fetch_typed(claimed.claim_check.token).await.unwrap();
    assert_eq!(ClaimStore::open(&claimed, &stored).unwrap(), posted);
    let fetched = app.get_authed(&format!("/claims/{token}")).await;
    assert_eq!(fetched.status(), 200);
    let bytes = fetched.bytes().await.unwrap();
    assert_eq!(
        &bytes[..],
        line.as_bytes(),
        "byte-identical to what was posted"
    );
    assert_eq!(sha256_hex(&bytes), claimed.claim_check.sha256);

    // Tampering with the stored bytes is detected, over HTTP and in the store.
    let pool = app.env.pool().await;
    sqlx::query("UPDATE claim_checks SET payload = overlay(payload placing '\\x00'::bytea from 100) WHERE token = $1")
        .bind(claimed.claim_check.token)
        .execute(&pool)
        .await
        .unwrap();
    let tampered = app.get_authed(&format!("/claims/{token}")).await;
    assert_eq!(tampered.status(), 500);
    let body: Value = tampered.json().await.unwrap();
    assert_eq!(body["error"], "claim_check_corrupt");
    let err = store
        .fetch_typed(claimed.claim_check.token)
        .await
        .unwrap_err();
    assert!(matches!(err, ClaimError::Corrupt { .. }), "{err}");

    // A missing payload is a 404 and a clear store error.
    sqlx::query("DELETE FROM claim_checks")
        .execute(&pool)
        .await
        .unwrap();
    let missing = app.get_authed(&format!("/claims/{token}")).await;
    assert_eq!(missing.status(), 404);
    assert_eq!(
        store
            .fetch_typed(claimed.claim_check.token)
            .await
            .unwrap_err()
            .code(),
        "claim_check_missing"
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn uncommitted_payloads_are_swept_after_the_grace_period() {
    let env = shared::testkit::TestEnv::new("claim_sweep").await;
    let pool = env.pool().await;
    let store = ClaimStore::new(pool.clone());
    let kept = store.put(b"committed", "text/plain").await.unwrap();
    store.commit(&[kept.token]).await.unwrap();
    let young = store.put(b"pending, young", "text/plain").await.unwrap();
    let old = store.put(b"pending, old", "text/plain").await.unwrap();
    sqlx::query(
        "UPDATE claim_checks SET created_at = now() - interval '2 hours' WHERE token = ANY($1)",
    )
    .bind(vec![kept.token, old.token])
    .execute(&pool)
    .await
    .unwrap();

    assert_eq!(store.sweep(Duration::from_secs(3600)).await.unwrap(), 1);
    assert!(matches!(
        store.fetch_typed(old.token).await,
        Err(ClaimError::NotFound(_))
    ));
    assert_eq!(
        store.fetch_typed(young.token).await.unwrap().0,
        b"pending, young"
    );
    assert_eq!(store.fetch_typed(kept.token).await.unwrap().0, b"committed");
}
