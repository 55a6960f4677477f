//! Fencing: a write that arrives too late changes nothing.
//! - A zombie: an instance paused (SIGSTOP) with a batch in hand past its
//!   session timeout; its partitions move to another instance, which
//!   commits past that batch; resumed, the zombie's commit meets stored
//!   offsets it did not expect and is dropped.
//! - A lost acknowledgement: PostgreSQL commits a batch, the confirmation
//!   never reaches the service (connection cut right after COMMIT, then the
//!   server crashed); the retry finds the offsets already advanced and
//!   applies nothing twice.
//!
//! In both, counts are exact and the state equals a clean run's.

mod common;

use std::time::{Duration, Instant};

use shared::testkit::{PgProxy, PrivatePostgres, TestEnv};
use sqlx::PgPool;

const EVENTS: usize = 10_000;

#[tokio::test(flavor = "multi_thread")]
async fn a_zombie_instance_writes_nothing() {
    let mut env = TestEnv::new("rec_zombie").await;
    let topic = env.settings.kafka.events_topic.clone();
    let url = env.settings.database.url.expose().to_owned();
    let pool = env.pool().await;
    let events = common::synthetic(EVENTS);
    let (group, half) = (&env.unique("rec-zombie"), EVENTS / 2);

    // The zombie-to-be closes a batch only 5 s after its first record.
    let mut zombie = common::Child::spawn_with(
        &env,
        &url,
        group,
        "test-rec-zombie-1",
        &[
            ("KAPPA__RECOMMENDATION__MAX_BATCH_MS", "5000"),
            ("KAPPA__RECOMMENDATION__MAX_BATCH_EVENTS", "1000000"),
        ],
    );
    common::produce(&env.settings.kafka, &events[..half]).await;
    common::wait_applied(&pool, group, &topic, half as i64, Duration::from_secs(60)).await;
    // A few more records: once it holds them (a batch in hand, its commit
    // seconds away, no transaction open), pause it.
    common::produce(&env.settings.kafka, &events[half..half + 100]).await;
    let until = Instant::now() + Duration::from_secs(30);
    while shared::testkit::metric(&zombie.metrics().await, "kappa_sink_records_in_hand", &[])
        < 100.0
    {
        assert!(
            Instant::now() < until,
            "the first instance never held the records"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    zombie.signal("-STOP");
    let seen = common::progress(&pool, group, &topic).await.0;
    common::produce(&env.settings.kafka, &events[half + 100..]).await;

    // Its session times out (6 s); a second instance gets every partition
    // and applies everything, past the zombie's batch.
    let mut live = common::spawn_child(&env, &url, group, "test-rec-zombie-2");
    assert!(seen < EVENTS as i64);
    common::wait_applied(
        &pool,
        group,
        &topic,
        EVENTS as i64,
        Duration::from_secs(120),
    )
    .await;

    // Resumed, the zombie tries to commit its batch and is fenced.
    zombie.signal("-CONT");
    zombie.wait_metric("kappa_sink_fenced_total", 1.0).await;
    common::terminate(&mut zombie);
    common::terminate(&mut live);
    assert_eq!(
        common::progress(&pool, group, &topic).await,
        (EVENTS as i64, 0),
        "nothing applied twice"
    );
    let after = recommendation::query::checksum(&pool).await.unwrap();
    let clean = common::reference_checksum(&mut env, EVENTS as i64).await;
    assert_eq!(after, clean, "the zombie changed nothing");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_commit_whose_acknowledgement_is_lost_is_not_applied_twice() {
    let mut env = TestEnv::new("rec_lost_ack").await;
    let topic = env.settings.kafka.events_topic.clone();
    let postgres = PrivatePostgres::start();
    let proxy = PgProxy::start(postgres.port).await;
    let events = common::synthetic(EVENTS);
    let group = &env.unique("rec-lost-ack");
    let mut child = common::spawn_child(
        &env,
        &proxy.url(&postgres.url()),
        group,
        "test-rec-lost-ack",
    );
    let pool = PgPool::connect(&postgres.url()).await.unwrap();
    let producing = {
        let (kafka, events) = (env.settings.kafka.clone(), events.clone());
        tokio::spawn(
            async move { common::produce_paced(&kafka, &events, Duration::from_secs(4)).await },
        )
    };
    let until = Instant::now() + Duration::from_secs(60);
    while common::progress(&pool, group, &topic).await.0 < (EVENTS / 5) as i64 {
        assert!(Instant::now() < until, "no progress");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The next COMMIT is durable but its confirmation is lost; then the
    // server crashes.
    proxy.arm();
    let until = Instant::now() + Duration::from_secs(60);
    while proxy.lost() == 0 {
        assert!(
            Instant::now() < until,
            "no commit went through the armed proxy"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    pool.close().await;
    postgres.crash();
    postgres.restart();
    producing.await.unwrap();

    let pool = PgPool::connect(&postgres.url()).await.unwrap();
    common::wait_applied(
        &pool,
        group,
        &topic,
        EVENTS as i64,
        Duration::from_secs(180),
    )
    .await;
    // The retry found its own commit: fenced, reloaded, resumed after it.
    child.wait_metric("kappa_sink_fenced_total", 1.0).await;
    common::terminate(&mut child);
    assert_eq!(
        common::progress(&pool, group, &topic).await,
        (EVENTS as i64, 0)
    );
    let after = recommendation::query::checksum(&pool).await.unwrap();
    let clean = common::reference_checksum(&mut env, EVENTS as i64).await;
    assert_eq!(after, clean, "nothing was applied twice");
}
