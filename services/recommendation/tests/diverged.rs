//! A batch updates the rows it knows in place; a row gone from under the
//! running service (deleted by hand) does not let a batch commit that would
//! miss it: the batch fails, the partition is read again from what is
//! stored, and the next attempt writes the row anew. Nothing is lost or
//! applied twice.

mod common;

use std::time::Duration;

use shared::testkit::TestEnv;

const T: &str = "2026-11-20T10:00:00Z";

#[tokio::test(flavor = "multi_thread")]
async fn a_row_deleted_under_the_service_is_written_anew_not_missed() {
    let env = TestEnv::new("rec_diverged").await;
    let group = env.unique("rec-diverged");
    let topic = &env.settings.kafka.events_topic;
    let e = |u: &str, p: &str| (u.to_owned(), common::interaction(u, p, "view", T));
    common::produce(&env.settings.kafka, &[e("u1", "A"), e("u1", "B")]).await;
    let url = env.settings.database.url.expose().to_owned();
    let service = common::InProcess::start(&env, &url, &group).await;
    let pool = env.pool().await;
    common::wait_applied(&pool, &group, topic, 2, Duration::from_secs(60)).await;

    // The service knows u1's row and A's neighbours; both vanish.
    sqlx::query("DELETE FROM rec_users WHERE user_id = 'u1'")
        .execute(&pool)
        .await
        .unwrap();
    sqlx::query("DELETE FROM rec_cooc WHERE item = 'A'")
        .execute(&pool)
        .await
        .unwrap();
    common::produce(&env.settings.kafka, &[e("u1", "C")]).await;
    common::wait_applied(&pool, &group, topic, 3, Duration::from_secs(60)).await;

    // The failed attempt was counted; the retry read the partition again
    // (u1's history is what is stored: nothing), so u1's row holds C alone
    // and C has no neighbour; B's row, untouched, still pairs it with A.
    let metrics = shared::testkit::metrics_text(&service.addr.to_string()).await;
    let failures = shared::testkit::metric(
        &metrics,
        "kappa_sink_commit_failures_total",
        &[&format!("consumer=\"{group}\"")],
    );
    assert!(failures >= 1.0, "{metrics}");
    let recent: Vec<u8> = sqlx::query_scalar("SELECT recent FROM rec_users WHERE user_id = 'u1'")
        .fetch_one(&pool)
        .await
        .unwrap();
    let products: Vec<&str> = recommendation::codec::scores(&recent)
        .map(|e| e.unwrap().0)
        .collect();
    assert_eq!(products, ["C"]);
    let items: Vec<String> = sqlx::query_scalar("SELECT item FROM rec_cooc ORDER BY item")
        .fetch_all(&pool)
        .await
        .unwrap();
    assert_eq!(items, ["B"]);
    service.stop().await;
}
