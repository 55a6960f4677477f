//! A job and its map tasks are one write: a coordinator killed (SIGKILL)
//! after the job's transaction committed and before its tasks reached the
//! broker leaves them in the outbox, and the next coordinator publishes
//! them; the job finishes with exact counts, each task published once.

mod common;

use std::time::Duration;

use common::{independent_count, loadgen_lines, World};
use serde_json::json;

#[tokio::test(flavor = "multi_thread")]
async fn a_coordinator_killed_between_a_jobs_commit_and_its_publish_loses_no_task() {
    let world = World::new("pc_outbox").await;
    let lines = loadgen_lines(2_000, 11);
    world.produce(&lines).await;
    let _map = world.spawn("map", "1").await;
    let _reduce = world.spawn("reduce", "1").await;

    // This coordinator holds the committed job's tasks for a minute before
    // publishing them: the crash window, made wide.
    let pausing = world
        .spawn_with(
            "coordinator",
            "1",
            &[("KAPPA__PAGECOUNT__TEST_PAUSE_BEFORE_PUBLISH_MS", "60000")],
        )
        .await;
    let id = world.job(&pausing, json!({"chunk_lines": 250})).await;
    shared::testkit::eventually(
        "the relay to hold the job's tasks",
        Duration::from_secs(30),
        || async { (!world.log_lines("pausing before publishing").is_empty()).then_some(()) },
    )
    .await;
    pausing.kill();
    let pool = world.env.pool().await;
    let (state, tasks, unsent): (String, i32, i64) = sqlx::query_as(
        "SELECT j.state, j.chunks_total,
                (SELECT count(*) FROM pagecount_outbox o WHERE o.job_id = j.id AND o.sent_at IS NULL)
         FROM pagecount_jobs j WHERE j.id = $1",
    )
    .bind(id)
    .fetch_one(&pool)
    .await
    .unwrap();
    assert!(tasks > 1, "{tasks} tasks");
    assert_eq!(
        (state.as_str(), unsent),
        ("running", i64::from(tasks)),
        "the job is committed with its tasks, none sent"
    );
    assert_eq!(
        world.env.count(&world.tasks_topic).await,
        0,
        "no task reached the broker before the crash"
    );

    let coordinator = world.spawn("coordinator", "2").await;
    let job = world
        .finished(&coordinator, id, Duration::from_secs(120))
        .await;
    assert_eq!(job["state"], "succeeded", "{job}");
    assert_eq!(job["lines"]["read"], lines.len() as u64, "{job}");
    assert_eq!(job["chunks"]["done"], tasks, "{job}");
    assert_eq!(
        world.pages(&coordinator, id).await,
        independent_count(&lines)
    );
    assert_eq!(
        world.env.count(&world.tasks_topic).await,
        i64::from(tasks),
        "each task published once"
    );
}
