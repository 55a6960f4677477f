//! A user's answer is read outside any transaction: two statements, each
//! of which also reads the committed position, and a popular fill-in kept
//! for that position. When a commit falls between the statements, or the
//! fill-in is not kept for the position, the answer is read again, at last
//! in one snapshot. A product's similar products are one statement. Whatever
//! the timing, an answer must be the state its `as_of` names. A writer
//! commits state k at offset k as fast as it can, each commit changing a
//! known user's answer, a new user's fill-in and a product's similar
//! products, while all three are asked for.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use recommendation::codec::put_scores;
use recommendation::query::{self, PopularCache, Source};
use shared::testkit::{within, TestEnv};
use sqlx::PgPool;

const CONSUMER: &str = "unlocked";
const TOPIC: &str = "events";
const ANSWERS: usize = 1_500;

/// A scored list of one product.
fn list(product: &str) -> Vec<u8> {
    let mut stored = Vec::new();
    put_scores(&mut stored, [(product, 0.0)]);
    stored
}

/// State k: the anchor's one neighbour and the one popular product are
/// both `n<k>`, committed with the offset k.
async fn commit(pool: &PgPool, k: i64) {
    let product = format!("n{k}");
    let mut tx = pool.begin().await.unwrap();
    sqlx::query("UPDATE rec_cooc SET neighbors = $1 WHERE item = 'anchor'")
        .bind(list(&product))
        .execute(&mut *tx)
        .await
        .unwrap();
    sqlx::query("UPDATE rec_popularity SET item = $1")
        .bind(&product)
        .execute(&mut *tx)
        .await
        .unwrap();
    sqlx::query("UPDATE consumer_offsets SET next_offset = $1 WHERE consumer = $2")
        .bind(k)
        .bind(CONSUMER)
        .execute(&mut *tx)
        .await
        .unwrap();
    tx.commit().await.unwrap();
}

/// Reads `user`'s answers while the writer commits; each must name the
/// product of the state its position is. Returns the positions seen.
async fn answers(pool: PgPool, cache: Arc<PopularCache>, user: &str, source: Source) -> Vec<i64> {
    let mut seen = Vec::with_capacity(ANSWERS);
    for _ in 0..ANSWERS {
        let (items, fallback, as_of) =
            query::answer_for_user(&pool, &cache, (CONSUMER, TOPIC), user, 1, 86_400.0)
                .await
                .unwrap();
        let k = as_of.next_offsets["0"];
        let products: Vec<&str> = items.iter().map(|s| s.product_id.as_str()).collect();
        assert_eq!(products, [format!("n{k}")], "{user}'s answer at offset {k}");
        assert_eq!(items[0].source, source, "{user}");
        assert_eq!(fallback, source == Source::Popular, "{user}");
        seen.push(k);
    }
    seen
}

/// A product's similar products while the writer commits, as [`answers`].
async fn similar(pool: PgPool) -> Vec<i64> {
    let mut seen = Vec::with_capacity(ANSWERS);
    for _ in 0..ANSWERS {
        let (items, as_of) = query::answer_similar(&pool, (CONSUMER, TOPIC), "anchor", 1, 86_400.0)
            .await
            .unwrap();
        let k = as_of.next_offsets["0"];
        let products: Vec<&str> = items.iter().map(|s| s.product_id.as_str()).collect();
        assert_eq!(
            products,
            [format!("n{k}")],
            "similar to anchor at offset {k}"
        );
        seen.push(k);
    }
    seen
}

#[tokio::test(flavor = "multi_thread")]
async fn an_answer_read_while_batches_commit_is_the_state_its_position_names() {
    let env = TestEnv::new("rec_unlocked").await;
    let pool = env.pool().await;
    let readers = shared::db::readers(&env.settings.database, 4)
        .await
        .unwrap();
    // The readers' connections plan generically, and keep the settings
    // every pooled connection has.
    let mut conn = readers.acquire().await.unwrap();
    let mode: String = sqlx::query_scalar("SHOW plan_cache_mode")
        .fetch_one(&mut *conn)
        .await
        .unwrap();
    assert_eq!(mode, "force_generic_plan");
    let idle: String = sqlx::query_scalar(
        "SELECT setting FROM pg_settings WHERE name = 'idle_in_transaction_session_timeout'",
    )
    .fetch_one(&mut *conn)
    .await
    .unwrap();
    let configured = env.settings.database.idle_in_transaction_timeout_ms;
    assert_eq!(idle, configured.to_string());
    drop(conn);

    for sql in [
        "INSERT INTO consumer_offsets (consumer, topic, partition, next_offset) VALUES ('unlocked', 'events', 0, 1)",
        "INSERT INTO rec_partitions (partition, last_event_at) VALUES (0, '2026-12-01T00:00:00Z')",
        "INSERT INTO rec_popularity (item, partition, score) VALUES ('n1', 0, 0)",
    ] {
        sqlx::query(sql).execute(&pool).await.unwrap();
    }
    sqlx::query(
        "INSERT INTO rec_users (user_id, partition, recent, purchased) VALUES ('known', 0, $1, '')",
    )
    .bind(list("anchor"))
    .execute(&pool)
    .await
    .unwrap();
    sqlx::query("INSERT INTO rec_cooc (item, partition, neighbors) VALUES ('anchor', 0, $1)")
        .bind(list("n1"))
        .execute(&pool)
        .await
        .unwrap();

    let stop = Arc::new(AtomicBool::new(false));
    let writer = tokio::spawn({
        let (pool, stop) = (pool.clone(), stop.clone());
        async move {
            let mut k = 1;
            while !stop.load(Ordering::Relaxed) {
                k += 1;
                commit(&pool, k).await;
            }
            k
        }
    });
    let cache = Arc::new(PopularCache::default());
    let known = tokio::spawn(answers(
        readers.clone(),
        cache.clone(),
        "known",
        Source::Similar,
    ));
    let new = tokio::spawn(answers(
        readers.clone(),
        cache,
        "never-seen",
        Source::Popular,
    ));
    let similar = tokio::spawn(similar(readers.clone()));
    let (known, new, similar) = within(Duration::from_secs(120), "the answers", async {
        (
            known.await.unwrap(),
            new.await.unwrap(),
            similar.await.unwrap(),
        )
    })
    .await;
    stop.store(true, Ordering::Relaxed);
    let commits = writer.await.unwrap();

    // The answers were read across many commits, not before or after them.
    for (user, seen) in [
        ("known", &known),
        ("never-seen", &new),
        ("anchor", &similar),
    ] {
        let mut positions = seen.clone();
        positions.dedup();
        assert!(
            positions.len() >= 50,
            "{user}: answers saw only {} positions of {commits} commits",
            positions.len()
        );
        assert!(
            seen.windows(2).all(|w| w[0] <= w[1]),
            "{user}: a position went back"
        );
    }
}
