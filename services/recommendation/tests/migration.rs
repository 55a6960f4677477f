//! A running suite upgrades in place: a model stored as JSON lists (the
//! schema up to migration 0014, written as that version wrote it) converts
//! to the service's bytes (0015), loads as the same model, stores the same
//! bytes the service writes itself, and answers the same recommendations.
//! Entries that never loaded (not a product with a number) are dropped.

use std::collections::BTreeMap;

use chrono::{DateTime, TimeDelta, Utc};
use recommendation::model::{PartitionModel, Stored};
use recommendation::query::{self, AsOf, PopularCache};
use recommendation::store;
use shared::db::MIGRATOR;
use shared::event::{Action, Interaction};
use shared::testkit::TestEnv;
use sqlx::migrate::Migrator;
use sqlx::PgPool;

const PARTITIONS: i32 = 3;
const HALF_LIFE_SECS: f64 = 7.0 * 86_400.0;

/// A small deterministic generator (xorshift), so a failure reproduces.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

/// Each partition's model, folded from 6,000 interactions of 200 users
/// with 80 products over 30 days (neighbour lists pruned at 40 included).
fn models() -> BTreeMap<i32, PartitionModel> {
    let mut rng = Rng(0x2545_f491_4f6c_dd1d);
    let start: DateTime<Utc> = "2026-11-01T00:00:00Z".parse().unwrap();
    let mut models: BTreeMap<i32, PartitionModel> = (0..PARTITIONS)
        .map(|p| (p, PartitionModel::default()))
        .collect();
    for i in 0..6_000 {
        let user = rng.below(200);
        let action = [
            Action::View,
            Action::Click,
            Action::AddToCart,
            Action::Purchase,
        ][rng.below(4) as usize];
        let interaction = Interaction {
            user_id: format!("u{user}"),
            product_id: format!("p{}", rng.below(80)),
            action,
            price_cents: (action == Action::Purchase).then_some(100),
        };
        let at = start + TimeDelta::seconds(i * 430);
        models
            .get_mut(&((user % PARTITIONS as u64) as i32))
            .unwrap()
            .apply(&interaction, at, HALF_LIFE_SECS)
            .unwrap();
    }
    models
}

/// Writes `model` as the JSON-list version did (lists as JSON text,
/// neighbours best first); `extra` entries are appended to the first user's
/// recent list and the first product's neighbours, as a hand or an older
/// version might have left them.
async fn save_as_json(pool: &PgPool, partition: i32, model: &PartitionModel, extra: &str) {
    let mut users: Vec<_> = model.users.iter().collect();
    users.sort_by(|a, b| a.0.cmp(b.0));
    for (n, (user, state)) in users.into_iter().enumerate() {
        let mut recent = json(&state.recent);
        if n == 0 {
            recent = format!("{},{extra}]", &recent[..recent.len() - 1]);
        }
        sqlx::query(
            "INSERT INTO rec_users (partition, user_id, recent, purchased) VALUES ($1, $2, $3::jsonb, $4::jsonb)",
        )
        .bind(partition)
        .bind(user)
        .bind(recent)
        .bind(json(&state.purchased))
        .execute(pool)
        .await
        .unwrap();
    }
    let mut items: Vec<_> = model.cooc.iter().collect();
    items.sort_by(|a, b| a.0.cmp(b.0));
    for (n, (item, neighbors)) in items.into_iter().enumerate() {
        let mut ranked: Vec<(String, f64)> = neighbors.scores.clone().into_iter().collect();
        recommendation::model::rank(&mut ranked);
        let mut list = json(&ranked);
        if n == 0 {
            list = format!("{},{extra}]", &list[..list.len() - 1]);
        }
        sqlx::query("INSERT INTO rec_cooc (partition, item, neighbors) VALUES ($1, $2, $3::jsonb)")
            .bind(partition)
            .bind(item)
            .bind(list)
            .execute(pool)
            .await
            .unwrap();
    }
    for (item, popularity) in &model.popularity {
        sqlx::query("INSERT INTO rec_popularity (partition, item, score) VALUES ($1, $2, $3)")
            .bind(partition)
            .bind(item)
            .bind(popularity.score)
            .execute(pool)
            .await
            .unwrap();
    }
}

/// serde_json's text of a list, as the JSON-list version wrote it.
fn json<T: serde::Serialize>(list: &T) -> String {
    serde_json::to_string(list).unwrap()
}

/// A folder with the migrations up to 0014 (the JSON-list schema): the
/// same files, so the upgrade finds them applied with their checksums.
fn old_migrations(suffix: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("kappa-migrations-{suffix}"));
    std::fs::create_dir_all(&dir).unwrap();
    let all = shared::testkit::repo_root().join("migrations");
    for file in std::fs::read_dir(all).unwrap() {
        let path = file.unwrap().path();
        let name = path.file_name().unwrap().to_str().unwrap().to_owned();
        if name.as_str() < "0015" {
            std::fs::copy(&path, dir.join(name)).unwrap();
        }
    }
    dir
}

/// Every stored list, in a canonical order.
async fn lists(pool: &PgPool) -> Vec<(String, i32, Vec<u8>, Vec<u8>)> {
    sqlx::query_as(
        "SELECT user_id, partition, recent, purchased FROM rec_users
         UNION ALL SELECT item, partition, neighbors, ''::bytea FROM rec_cooc
         ORDER BY 1, 2, 3",
    )
    .fetch_all(pool)
    .await
    .unwrap()
}

/// Every user's and every product's answers at one stream position.
async fn answers(pool: &PgPool) -> Vec<String> {
    let as_of = AsOf {
        last_event_at: Some("2026-12-01T00:00:00Z".parse().unwrap()),
        next_offsets: BTreeMap::new(),
    };
    let cache = PopularCache::default();
    let mut conn = pool.acquire().await.unwrap();
    let mut out = Vec::new();
    for user in (0..200)
        .map(|u| format!("u{u}"))
        .chain(["never-seen".to_owned()])
    {
        let answer = query::for_user(&mut conn, &cache, &user, 10, &as_of, HALF_LIFE_SECS)
            .await
            .unwrap();
        out.push(format!("{user}: {answer:?}"));
    }
    for item in (0..80).map(|p| format!("p{p}")) {
        let answer = query::similar(&mut conn, &item, 10, &as_of, HALF_LIFE_SECS)
            .await
            .unwrap();
        out.push(format!("{item}: {answer:?}"));
    }
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn lists_stored_as_json_migrate_to_bytes_and_answer_the_same() {
    let mut env = TestEnv::new("rec_migrate").await;
    let mut models = models();
    models.values_mut().for_each(PartitionModel::clean);

    // The old schema, with the model written as the old version wrote it,
    // plus entries that never loaded: a score that is not a number, a bare
    // number, a product without a score, a number past float8's range.
    let old = PgPool::connect(env.settings.database.url.expose())
        .await
        .unwrap();
    let folder = old_migrations(&env.suffix);
    let before = Migrator::new(folder.as_path()).await.unwrap();
    before.run(&old).await.unwrap();
    std::fs::remove_dir_all(&folder).unwrap();
    let malformed = r#"["x", "1.5"], 42, ["y"], ["z", 1e400]"#;
    for (&partition, model) in &models {
        save_as_json(&old, partition, model, malformed).await;
    }
    let mut purchased_json: Vec<(String, String)> = sqlx::query_as(
        "SELECT user_id, purchased::text FROM rec_users WHERE purchased <> '[]' ORDER BY 1 LIMIT 1",
    )
    .fetch_all(&old)
    .await
    .unwrap();
    assert_eq!(purchased_json.len(), 1, "some user purchased");
    let (buyer, _) = purchased_json.pop().unwrap();

    // The upgrade: the service's own start-up applies what is new.
    MIGRATOR.run(&old).await.unwrap();

    // The same model, written by this version from the start.
    let fresh_url = env.another_database().await;
    let fresh = PgPool::connect(&fresh_url).await.unwrap();
    MIGRATOR.run(&fresh).await.unwrap();
    let mut written = std::collections::HashMap::new();
    for (&partition, model) in &models {
        let mut new = PartitionModel::default();
        for (user, state) in &model.users {
            let mut state = state.clone();
            state.stored = Stored::New;
            new.users.insert(user.clone(), state);
        }
        for (item, neighbors) in &model.cooc {
            let mut neighbors = neighbors.clone();
            neighbors.stored = Stored::New;
            new.cooc.insert(item.clone(), neighbors);
        }
        for (item, popularity) in &model.popularity {
            let mut popularity = *popularity;
            popularity.stored = Stored::New;
            new.popularity.insert(item.clone(), popularity);
        }
        written.insert(partition, new);
    }
    let mut tx = fresh.begin().await.unwrap();
    store::save(&mut tx, &written).await.unwrap();
    tx.commit().await.unwrap();

    // The malformed entries are gone, everything else is byte for byte
    // what this version writes...
    let migrated = lists(&old).await;
    assert!(migrated.len() > 200, "{}", migrated.len());
    assert_eq!(migrated, lists(&fresh).await);
    let purchases: Vec<u8> =
        sqlx::query_scalar("SELECT purchased FROM rec_users WHERE user_id = $1")
            .bind(&buyer)
            .fetch_one(&old)
            .await
            .unwrap();
    assert!(!purchases.is_empty(), "{buyer}'s purchases kept");
    // ...each partition loads as the model that was stored...
    for (&partition, model) in &models {
        let loaded = store::load(&old, partition).await.unwrap();
        assert_eq!(loaded.users, model.users, "partition {partition}");
        assert_eq!(loaded.cooc, model.cooc, "partition {partition}");
        assert_eq!(loaded.popularity, model.popularity, "partition {partition}");
    }
    // ...and every answer is the same.
    let answered = answers(&old).await;
    let expected = answers(&fresh).await;
    assert_eq!(answered.len(), expected.len());
    for (migrated, written) in answered.iter().zip(&expected) {
        assert_eq!(migrated, written);
    }
    assert!(
        answered.iter().any(|a| a.contains("Similar")),
        "answers from co-occurrence: {answered:?}"
    );
}
