//! A 1 MiB event travels as a token: the stored payload comes back byte for
//! byte, a tampered one is refused, an uncommitted one is swept, and one
//! whose writer was killed after producing its envelope is kept.

mod common;

use std::time::Duration;

use base64::Engine;
use rdkafka::message::Message;
use serde_json::Value;
use std::process::{Command, Stdio};

use shared::claim_check::sweep::Sweeper;
use shared::claim_check::{sha256_hex, ClaimError, ClaimStore};
use shared::event::{parse, Envelope, Event};
use shared::testkit::{KillOnDrop, TestEnv};

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

    let sweeper = Sweeper {
        store: store.clone(),
        kafka: env.settings.kafka.clone(),
        topic: env.settings.kafka.events_topic.clone(),
        grace: Duration::from_secs(3600),
    };
    // A round stopped by shutdown deletes nothing: its scan did not finish.
    let producer: rdkafka::producer::FutureProducer =
        shared::kafka::producer(&env.settings.kafka).unwrap();
    producer
        .send(
            rdkafka::producer::FutureRecord::<(), _>::to(&env.settings.kafka.events_topic)
                .payload("not an event"),
            Duration::from_secs(30),
        )
        .await
        .map_err(|(e, _)| e)
        .unwrap();
    let stopping = shared::shutdown::CancellationToken::new();
    stopping.cancel();
    let stopped = sweeper.sweep(&stopping).await.unwrap_err();
    assert!(
        format!("{stopped:#}").contains("shutting down"),
        "{stopped:#}"
    );
    assert!(
        store.fetch_typed(old.token).await.is_ok(),
        "nothing deleted"
    );

    let swept = sweeper
        .sweep(&shared::shutdown::CancellationToken::new())
        .await
        .unwrap();
    assert_eq!((swept.kept, swept.deleted), (0, 1), "{swept:?}");
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

/// The gateway binary on `env`, on a free port, with extra settings.
fn gateway(env: &TestEnv, extra: &[(&str, &str)]) -> (KillOnDrop, String) {
    let port = shared::testkit::free_port();
    let log = shared::testkit::repo_root()
        .join(".run")
        .join(format!("test-gateway-claim-{}-{port}.log", env.suffix));
    let child = Command::new(env!("CARGO_BIN_EXE_gateway"))
        .envs(env.child_env())
        .env("KAPPA__GATEWAY__ADDR", format!("127.0.0.1:{port}"))
        .envs(extra.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    (KillOnDrop(child), format!("127.0.0.1:{port}"))
}

/// A gateway killed after the broker acknowledged a claim-checked envelope
/// and before it committed the payload: the next gateway's sweeper finds
/// the reference on the topic and keeps the payload (a consumer can still
/// resolve it), and deletes the payload nothing references.
#[tokio::test(flavor = "multi_thread")]
async fn a_gateway_killed_between_ack_and_commit_loses_no_payload() {
    let env = TestEnv::new("claim_crash").await;
    let pool = env.pool().await;
    let topic = env.settings.kafka.events_topic.clone();
    let (mut first, addr) = gateway(
        &env,
        &[
            ("KAPPA__CLAIM_CHECK__THRESHOLD_BYTES", "1024"),
            ("KAPPA__CLAIM_CHECK__TEST_PAUSE_BEFORE_COMMIT_MS", "120000"),
        ],
    );
    shared::testkit::wait_ready(&addr, "the first gateway").await;
    // Its sweeper's first snapshot of the topic's end precedes the upload.
    shared::testkit::eventually(
        "a snapshot of the topic",
        Duration::from_secs(30),
        || async {
            let snapshots: i64 =
                sqlx::query_scalar("SELECT count(*) FROM claim_check_scans WHERE topic = $1")
                    .bind(&topic)
                    .fetch_one(&pool)
                    .await
                    .unwrap();
            (snapshots > 0).then_some(())
        },
    )
    .await;

    let event = big_upload(4096);
    let token = env.settings.auth.admin_token.expose().to_owned();
    let url = format!("http://{addr}/events");
    let body = event.clone();
    let request = tokio::spawn(async move {
        reqwest::Client::new()
            .post(url)
            .bearer_auth(token)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
    });
    // The envelope is on the topic (acknowledged); the gateway is in its pause.
    let envelope = env.read_exactly(&topic, 1, Duration::from_secs(30)).await;
    let Ok(Envelope::Claimed(claimed)) = parse(envelope[0].payload().unwrap()) else {
        panic!("a claim-check envelope")
    };
    let reference = claimed.claim_check.token;
    first.kill().unwrap(); // SIGKILL
    first.wait().unwrap();
    assert!(
        request.await.unwrap().is_err(),
        "the client saw the connection die"
    );
    let state: String = sqlx::query_scalar("SELECT state FROM claim_checks WHERE token = $1")
        .bind(reference)
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(state, "pending", "the crash hit the window");
    // And a payload stored but never produced (a produce that failed).
    let orphan = ClaimStore::new(pool.clone())
        .put(b"never produced", "text/plain")
        .await
        .unwrap();

    let (_second, addr) = gateway(
        &env,
        &[
            ("KAPPA__CLAIM_CHECK__GRACE_SECS", "3"),
            ("KAPPA__CLAIM_CHECK__SWEEP_INTERVAL_SECS", "1"),
            ("KAPPA__KAFKA__DELIVERY_TIMEOUT_MS", "2000"),
        ],
    );
    shared::testkit::wait_ready(&addr, "the second gateway").await;
    shared::testkit::eventually(
        "the sweep settles both",
        Duration::from_secs(60),
        || async {
            let rows: Vec<(uuid::Uuid, String)> =
                sqlx::query_as("SELECT token, state FROM claim_checks WHERE token = ANY($1)")
                    .bind(vec![reference, orphan.token])
                    .fetch_all(&pool)
                    .await
                    .unwrap();
            (rows == vec![(reference, "committed".to_owned())]).then_some(())
        },
    )
    .await;
    // A consumer resolves the envelope to the event, byte for byte.
    let store = ClaimStore::new(pool.clone());
    let (bytes, _) = store.fetch_typed(reference).await.unwrap();
    let event: Event = match parse(&bytes).unwrap() {
        Envelope::Inline(event) => event,
        Envelope::Claimed(_) => panic!("a payload, not an envelope"),
    };
    assert_eq!(event.key(), "p42");
}
