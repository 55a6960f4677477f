//! No single event stops the worker: each input that once stalled it
//! (found on the running suite) is dead-lettered with its reason while the
//! events around it apply, counts stay exact, and no state holds a number
//! that is not finite. A claim-checked interaction is resolved and applied.
//! A worker that cannot commit says so on /readyz, and its lag keeps counting.

mod common;

use std::time::{Duration, Instant};

use rdkafka::message::Message;
use shared::claim_check::ClaimStore;
use shared::dlq::{header, header_str};
use shared::event::{ClaimedEvent, EventType};
use shared::testkit::{PrivatePostgres, TestEnv};

#[tokio::test(flavor = "multi_thread")]
async fn poison_events_are_dead_lettered_and_the_rest_applies() {
    let env = TestEnv::new("rec_poison").await;
    let t = "2026-11-20T00:00:00Z";
    let long = "p".repeat(3000);
    let poison: Vec<(&str, String)> = vec![
        ("invalid_field", r#"{"type":"interaction","user_id":"u\u0000x","product_id":"p","action":"view"}"#.to_owned()),
        ("invalid_field", common::interaction("u1", &long, "view", t)),
        ("invalid_field", r#"{"type":"interaction","user_id":"u1","product_id":"p","action":"purchase","price_cents":9223372036854775000}"#.to_owned()),
        ("invalid_field", r#"{"type":"interaction","user_id":"u1","product_id":"p","action":"purchase","price_cents":18446744073709551615}"#.to_owned()),
        ("ts_in_future", common::interaction("u1", "p", "view", "2046-01-01T00:00:00Z")),
        ("ts_in_future", common::interaction("u1", "p", "view", "9999-12-31T00:00:00Z")),
        ("duplicate_field", r#"{"type":"page_access","type":"interaction","user_id":"u1","product_id":"p","action":"view"}"#.to_owned()),
        // u2's event keyed as u1's (typed into kcat with the wrong key).
        ("key_mismatch", common::interaction("u2", "p", "view", t)),
    ];
    // A claim-checked interaction (as the gateway stores one over 256 KiB).
    let store = ClaimStore::new(env.pool().await);
    let big = common::interaction("u1", "from-the-store", "view", t);
    let claim = store.put(big.as_bytes(), "application/json").await.unwrap();
    store.commit(&[claim.token]).await.unwrap();
    let claimed = ClaimedEvent {
        event_type: EventType::Interaction,
        id: None,
        ts: None,
        key: "u1".into(),
        claim_check: claim,
    };
    let mut events = Vec::new();
    for (i, (_, record)) in poison.iter().enumerate() {
        events.push((
            "u1".to_owned(),
            common::interaction("u1", &format!("good-{i}"), "view", t),
        ));
        events.push(("u1".to_owned(), record.clone()));
    }
    events.push((
        "u1".to_owned(),
        String::from_utf8(claimed.to_json()).unwrap(),
    ));
    events.push((
        "u1".to_owned(),
        common::interaction("u1", "last", "purchase", t),
    ));
    common::produce(&env.settings.kafka, &events).await;

    let url = env.settings.database.url.expose().to_owned();
    let group = env.unique("rec-poison");
    let service = common::InProcess::start(&env, &url, &group).await;
    let pool = env.pool().await;
    let topic = &env.settings.kafka.events_topic;
    let good = poison.len() as i64 + 2;
    common::wait_applied(&pool, &group, topic, good, Duration::from_secs(60)).await;
    assert_eq!(
        common::progress(&pool, &group, topic).await,
        (good, poison.len() as i64),
        "every good event applied, every poison one dead-lettered"
    );
    let letters = env
        .read_exactly(
            &env.settings.kafka.dlq_topic,
            poison.len(),
            Duration::from_secs(30),
        )
        .await;
    let mut codes: Vec<(i64, String)> = letters
        .iter()
        .map(|m| {
            let h = m.headers().unwrap();
            (
                header_str(h, header::OFFSET).unwrap().parse().unwrap(),
                header_str(h, header::CODE).unwrap().to_owned(),
            )
        })
        .collect();
    codes.sort();
    let expected: Vec<String> = poison.iter().map(|(c, _)| c.to_string()).collect();
    assert_eq!(
        codes.into_iter().map(|(_, c)| c).collect::<Vec<_>>(),
        expected
    );

    // The claim-checked interaction counts like any other: it pairs with the last one.
    let similar: serde_json::Value = reqwest::get(service.url("/products/from-the-store/similar"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(similar.to_string().contains("\"last\""), "{similar}");
    // Nothing that is not a finite number reached the state: every stored
    // scored list reads back whole, every score finite.
    let lists: Vec<Vec<u8>> =
        sqlx::query_scalar("SELECT neighbors FROM rec_cooc UNION ALL SELECT recent FROM rec_users")
            .fetch_all(&pool)
            .await
            .unwrap();
    assert!(!lists.is_empty());
    for list in &lists {
        for entry in recommendation::codec::scores(list) {
            let (product, score) = entry.unwrap();
            assert!(score.is_finite(), "{product}: {score}");
        }
    }
    let daily: serde_json::Value = reqwest::get(service.url("/stats/daily"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(daily["days"][0]["revenue_cents"], 1250, "{daily}");
    service.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_worker_that_cannot_commit_is_not_ready_and_its_lag_grows() {
    let env = TestEnv::new("rec_stuck").await;
    let postgres = PrivatePostgres::start();
    let group = env.unique("rec-stuck");
    let child = common::Child::spawn_with(
        &env,
        &postgres.url(),
        &group,
        "test-rec-stuck",
        &[("KAPPA__RECOMMENDATION__STUCK_AFTER_MS", "2000")],
    );
    let ready = || async {
        reqwest::get(format!("http://127.0.0.1:{}/readyz", child.port))
            .await
            .ok()
            .map(|r| r.status().as_u16())
    };
    let until = Instant::now() + Duration::from_secs(60);
    while ready().await != Some(200) {
        assert!(Instant::now() < until, "the service never became ready");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Events in hand, not an assignment pending: wait for the partitions.
    child
        .wait_metric("kappa_sink_partitions_assigned", 1.0)
        .await;
    postgres.crash();
    common::produce(&env.settings.kafka, &common::synthetic(500)).await;
    // Held without a commit for longer than stuck_after: not ready, and why.
    let until = Instant::now() + Duration::from_secs(60);
    let body = loop {
        let response = reqwest::get(format!("http://127.0.0.1:{}/readyz", child.port))
            .await
            .unwrap();
        if response.status() == 503 {
            let body: serde_json::Value = response.json().await.unwrap();
            if body["checks"]["worker"] != "ok" {
                break body;
            }
        }
        assert!(Instant::now() < until, "still ready while stuck");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(
        body["checks"]["worker"]
            .as_str()
            .unwrap()
            .contains("without a commit"),
        "{body}"
    );
    child.wait_metric("kappa_sink_consumer_lag", 100.0).await;
    postgres.restart();
    child
        .wait_metric("kappa_sink_events_applied_total", 500.0)
        .await;
    let until = Instant::now() + Duration::from_secs(60);
    while ready().await != Some(200) {
        assert!(
            Instant::now() < until,
            "not ready again after the database came back"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    drop(child);
}
