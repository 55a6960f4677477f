//! SIGTERM ends the service within its bound even when it cannot finish
//! cleanly: with the database down (commits failing) and with the broker
//! down. What it had not committed is applied once by the next start.

mod common;

use std::time::{Duration, Instant};

use shared::testkit::{PrivateBroker, PrivatePostgres, TestEnv};
use sqlx::PgPool;

/// Sends SIGTERM and waits (at most `bound`) for the process to exit.
fn terminate_within(child: &mut common::Child, bound: Duration) -> Duration {
    let started = Instant::now();
    child.signal("-TERM");
    loop {
        if child.process.try_wait().unwrap().is_some() {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < bound,
            "still running {bound:?} after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

const GRACE: (&str, &str) = ("KAPPA__SHUTDOWN__GRACE_MS", "3000");

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_during_a_database_outage_ends_within_the_bound() {
    let mut env = TestEnv::new("rec_term_pg").await;
    let postgres = PrivatePostgres::start();
    let group = env.unique("rec-term-pg");
    let topic = env.settings.kafka.events_topic.clone();
    let events = common::synthetic(2_000);
    let mut child =
        common::Child::spawn_with(&env, &postgres.url(), &group, "test-rec-term-pg", &[GRACE]);
    common::produce(&env.settings.kafka, &events[..1_000]).await;
    let pool = PgPool::connect(&postgres.url()).await.unwrap();
    common::wait_applied(&pool, &group, &topic, 1_000, Duration::from_secs(60)).await;
    pool.close().await;
    postgres.crash();
    common::produce(&env.settings.kafka, &events[1_000..]).await;
    child
        .wait_metric("kappa_sink_commit_failures_total", 1.0)
        .await;
    let took =
        tokio::task::block_in_place(|| terminate_within(&mut child, Duration::from_secs(30)));
    eprintln!("stopped {took:?} after SIGTERM");

    // What it held is applied, once, by the next start.
    postgres.restart();
    let pool = PgPool::connect(&postgres.url()).await.unwrap();
    let mut again = common::spawn_child(&env, &postgres.url(), &group, "test-rec-term-pg-2");
    common::wait_applied(&pool, &group, &topic, 2_000, Duration::from_secs(60)).await;
    common::terminate(&mut again);
    let after = recommendation::query::checksum(&pool).await.unwrap();
    let clean = common::reference_checksum(&mut env, 2_000).await;
    assert_eq!(after, clean);
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_during_a_broker_outage_ends_within_the_bound() {
    let broker = PrivateBroker::start();
    let mut env = TestEnv::with_brokers("rec_term_kafka", &broker.bootstrap()).await;
    let group = env.unique("rec-term-kafka");
    let url = env.settings.database.url.expose().to_owned();
    let mut child = common::Child::spawn_with(&env, &url, &group, "test-rec-term-kafka", &[GRACE]);
    common::produce(&env.settings.kafka, &common::synthetic(1_000)).await;
    let pool = env.pool().await;
    let topic = env.settings.kafka.events_topic.clone();
    common::wait_applied(&pool, &group, &topic, 1_000, Duration::from_secs(60)).await;
    broker.kill();
    child
        .wait_metric("kappa_kafka_client_errors_total", 1.0)
        .await;
    let took =
        tokio::task::block_in_place(|| terminate_within(&mut child, Duration::from_secs(30)));
    eprintln!("stopped {took:?} after SIGTERM");
    assert_eq!(common::progress(&pool, &group, &topic).await, (1_000, 0));
    // The private broker goes with its topics: nothing to delete there.
    env.topics.clear();
    drop(env);
    drop(broker);
}
