//! Two instances share the partitions, and either one answers every query
//! identically: answers combine all partitions' committed state.

mod common;

use std::time::Duration;

use serde_json::Value;
use shared::testkit::TestEnv;

#[tokio::test(flavor = "multi_thread")]
async fn two_instances_answer_every_query_identically() {
    let env = TestEnv::new("rec_two_answers").await;
    let events = common::synthetic(5_000);
    common::produce(&env.settings.kafka, &events).await;
    let url = env.settings.database.url.expose().to_owned();
    let a = common::InProcess::start(&env, &url, &env.unique("rec-two")).await;
    let b = common::InProcess::start(&env, &url, &env.unique("rec-two")).await;
    let pool = env.pool().await;
    let topic = &env.settings.kafka.events_topic;
    common::wait_applied(
        &pool,
        &env.unique("rec-two"),
        topic,
        5_000,
        Duration::from_secs(120),
    )
    .await;
    let owners: i64 = sqlx::query_scalar(
        "SELECT count(DISTINCT partition) FROM consumer_offsets WHERE consumer = $1",
    )
    .bind(env.unique("rec-two"))
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(owners, shared::testkit::PARTITIONS as i64);

    let client = reqwest::Client::new();
    let token = env.settings.auth.admin_token.expose().to_owned();
    let get = |base: &common::InProcess, path: String| {
        let request = client.get(base.url(&path)).bearer_auth(&token);
        async move {
            let response = request.send().await.unwrap();
            assert_eq!(response.status(), 200, "{path}");
            response.json::<Value>().await.unwrap()
        }
    };
    let mut paths: Vec<String> = (0..300)
        .step_by(7)
        .map(|u| format!("/users/u{u}/recommendations?limit=10"))
        .collect();
    paths.extend(
        (0..120)
            .step_by(5)
            .map(|p| format!("/products/p{p}/similar?limit=10")),
    );
    paths.extend([
        "/stats".to_owned(),
        "/stats/daily".to_owned(),
        "/users/nobody/recommendations".to_owned(),
    ]);
    let mut nonempty = 0;
    for path in &paths {
        let (from_a, from_b) = (get(&a, path.clone()).await, get(&b, path.clone()).await);
        assert_eq!(from_a, from_b, "{path}");
        nonempty += from_a["items"].as_array().is_some_and(|i| !i.is_empty()) as usize;
    }
    assert!(nonempty > paths.len() / 2, "the answers hold data");
    a.stop().await;
    b.stop().await;
}
