//! Exactness under failure: after SIGKILLs of the service, an instance
//! killed mid-stream while another joins, PostgreSQL crashed (`-m immediate`)
//! and the broker killed (SIGKILL), the counts are exact and the model's state
//! is bit-for-bit the state of a clean run over the same events.

mod common;

use std::time::Duration;

use shared::testkit::{PrivateBroker, PrivatePostgres, TestEnv};
use sqlx::PgPool;

const EVENTS: usize = 20_000;

async fn wait_some_progress(pool: &PgPool, group: &str, topic: &str, at_least: i64) {
    let until = std::time::Instant::now() + Duration::from_secs(60);
    while common::progress(pool, group, topic).await.0 < at_least {
        assert!(
            std::time::Instant::now() < until,
            "no progress to {at_least}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn three_sigkills_mid_stream_change_nothing() {
    let mut env = TestEnv::new("rec_kill").await;
    let topic = env.settings.kafka.events_topic.clone();
    let url = env.settings.database.url.expose().to_owned();
    let pool = env.pool().await;
    let events = common::synthetic(EVENTS);
    let producing = {
        let (kafka, events) = (env.settings.kafka.clone(), events.clone());
        tokio::spawn(
            async move { common::produce_paced(&kafka, &events, Duration::from_secs(6)).await },
        )
    };
    let mut child = common::spawn_child(&env, &url, &env.unique("rec-kill"), "test-rec-kill");
    for round in 1..=3 {
        wait_some_progress(
            &pool,
            &env.unique("rec-kill"),
            &topic,
            (round * EVENTS / 5) as i64,
        )
        .await;
        common::kill9(&mut child);
        child = common::spawn_child(&env, &url, &env.unique("rec-kill"), "test-rec-kill");
    }
    producing.await.unwrap();
    common::wait_applied(
        &pool,
        &env.unique("rec-kill"),
        &topic,
        EVENTS as i64,
        Duration::from_secs(180),
    )
    .await;
    common::terminate(&mut child);
    assert_eq!(
        common::progress(&pool, &env.unique("rec-kill"), &topic).await,
        (EVENTS as i64, 0)
    );

    let crashed = recommendation::query::checksum(&pool).await.unwrap();
    let clean = common::reference_checksum(&mut env, EVENTS as i64).await;
    assert_eq!(
        crashed, clean,
        "state after three SIGKILLs equals a clean run's"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_instance_killed_mid_stream_loses_and_duplicates_nothing() {
    let mut env = TestEnv::new("rec_rebalance").await;
    let topic = env.settings.kafka.events_topic.clone();
    let url = env.settings.database.url.expose().to_owned();
    let pool = env.pool().await;
    let events = common::synthetic(EVENTS);
    let mut first = common::spawn_child(
        &env,
        &url,
        &env.unique("rec-rebalance"),
        "test-rec-rebalance-1",
    );
    let mut second = common::spawn_child(
        &env,
        &url,
        &env.unique("rec-rebalance"),
        "test-rec-rebalance-2",
    );
    let producing = {
        let (kafka, events) = (env.settings.kafka.clone(), events.clone());
        tokio::spawn(async move {
            common::produce_paced(&kafka, &events, Duration::from_secs(10)).await
        })
    };
    wait_some_progress(
        &pool,
        &env.unique("rec-rebalance"),
        &topic,
        (EVENTS / 5) as i64,
    )
    .await;
    // One instance dies while the stream goes on, and a third joins: its
    // partitions move once its session times out.
    common::kill9(&mut second);
    let mut third = common::spawn_child(
        &env,
        &url,
        &env.unique("rec-rebalance"),
        "test-rec-rebalance-3",
    );
    let producing_until_now = common::progress(&pool, &env.unique("rec-rebalance"), &topic)
        .await
        .0;
    assert!(producing_until_now < EVENTS as i64, "killed mid-stream");
    producing.await.unwrap();
    common::wait_applied(
        &pool,
        &env.unique("rec-rebalance"),
        &topic,
        EVENTS as i64,
        Duration::from_secs(180),
    )
    .await;
    // The newcomer got partitions and applied events of its own.
    let by_third = shared::testkit::metric(
        &third.metrics().await,
        "kappa_sink_events_applied_total",
        &[],
    );
    assert!(by_third > 0.0, "the third instance applied nothing");
    common::terminate(&mut first);
    common::terminate(&mut third);

    let shared_work = recommendation::query::checksum(&pool).await.unwrap();
    let clean = common::reference_checksum(&mut env, EVENTS as i64).await;
    assert_eq!(
        shared_work, clean,
        "state after a kill and a rebalance equals a clean run's"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_database_outage_pauses_then_resumes_exactly() {
    let mut env = TestEnv::new("rec_pg_down").await;
    let topic = env.settings.kafka.events_topic.clone();
    let postgres = PrivatePostgres::start();
    let url = postgres.url();
    let events = common::synthetic(EVENTS);
    let mut child = common::spawn_child(&env, &url, &env.unique("rec-pg-down"), "test-rec-pg-down");
    let pool = PgPool::connect(&url).await.unwrap();
    common::produce_paced(
        &env.settings.kafka,
        &events[..EVENTS / 2],
        Duration::from_secs(2),
    )
    .await;
    wait_some_progress(
        &pool,
        &env.unique("rec-pg-down"),
        &topic,
        (EVENTS / 4) as i64,
    )
    .await;
    pool.close().await;

    postgres.crash();
    common::produce_paced(
        &env.settings.kafka,
        &events[EVENTS / 2..],
        Duration::from_secs(2),
    )
    .await;
    // The service saw the outage: its commits fail (and are retried).
    child
        .wait_metric("kappa_sink_commit_failures_total", 2.0)
        .await;
    postgres.restart();

    let pool = PgPool::connect(&url).await.unwrap();
    common::wait_applied(
        &pool,
        &env.unique("rec-pg-down"),
        &topic,
        EVENTS as i64,
        Duration::from_secs(180),
    )
    .await;
    common::terminate(&mut child);
    let recovered = recommendation::query::checksum(&pool).await.unwrap();
    let clean = common::reference_checksum(&mut env, EVENTS as i64).await;
    assert_eq!(
        recovered, clean,
        "state after a database outage equals a clean run's"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_broker_crash_pauses_then_resumes_exactly() {
    let broker = PrivateBroker::start();
    let mut env = TestEnv::with_brokers("rec_broker_down", &broker.bootstrap()).await;
    let topic = env.settings.kafka.events_topic.clone();
    let url = env.settings.database.url.expose().to_owned();
    let pool = env.pool().await;
    let events = common::synthetic(EVENTS);
    let mut child = common::spawn_child(
        &env,
        &url,
        &env.unique("rec-broker-down"),
        "test-rec-broker-down",
    );
    common::produce_paced(
        &env.settings.kafka,
        &events[..EVENTS / 2],
        Duration::from_secs(2),
    )
    .await;
    wait_some_progress(
        &pool,
        &env.unique("rec-broker-down"),
        &topic,
        (EVENTS / 4) as i64,
    )
    .await;

    broker.kill();
    // The service saw the broker go: its client reports transport errors.
    child
        .wait_metric("kappa_kafka_client_errors_total", 1.0)
        .await;
    broker.restart();
    common::produce_paced(
        &env.settings.kafka,
        &events[EVENTS / 2..],
        Duration::from_secs(2),
    )
    .await;
    common::wait_applied(
        &pool,
        &env.unique("rec-broker-down"),
        &topic,
        EVENTS as i64,
        Duration::from_secs(180),
    )
    .await;
    common::terminate(&mut child);
    let recovered = recommendation::query::checksum(&pool).await.unwrap();
    let clean = common::reference_checksum(&mut env, EVENTS as i64).await;
    assert_eq!(
        recovered, clean,
        "state after a broker crash equals a clean run's"
    );
    drop(env);
    drop(broker);
}
