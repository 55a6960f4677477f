//! The popular fill-in reads each partition's best rows and stops early
//! (the threshold algorithm): its answer must be the one a sum over every
//! row gives. Rows written straight into a test database, shaped to
//! mislead an early stop: products that are a little popular in every
//! partition (never near any partition's top, yet first in total), spikes in
//! one partition only, products with equal rows (a tie, broken by id), and
//! partitions with fewer rows than any read's depth.

use std::collections::BTreeMap;

use recommendation::query::{self, AsOf};
use shared::testkit::TestEnv;

/// Partitions of many rows; one more holds a single row.
const PARTITIONS: i32 = 6;

/// A small deterministic generator (xorshift), so a failure reproduces.
struct Rng(u64);

impl Rng {
    fn unit(&mut self) -> f64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Every (item, partition, log2 score) row.
fn rows() -> Vec<(String, i32, f64)> {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut rows = Vec::new();
    // The bulk: 2,000 products, each in some partitions, scored 0 to 20.
    for item in 0..2_000 {
        for partition in 0..PARTITIONS {
            if rng.unit() < 0.6 {
                rows.push((format!("p{item:04}"), partition, rng.unit() * 20.0));
            }
        }
    }
    // Everywhere a little: some 30 rows below each partition's top, but
    // in every partition, so first in total (19.5 + log2 6).
    for item in 0..5_i32 {
        for partition in 0..PARTITIONS {
            rows.push((
                format!("everywhere{item}"),
                partition,
                19.5 + f64::from(item) * 0.01,
            ));
        }
    }
    // Spikes: first in their one partition, behind in total.
    for item in 0..5_i32 {
        rows.push((
            format!("spike{item}"),
            item % PARTITIONS,
            21.0 + f64::from(item) * 0.1,
        ));
    }
    // A partition of one row: read to its end at once.
    rows.push(("lonely".to_owned(), PARTITIONS, 5.0));
    // Ties: the same rows under two ids.
    for id in ["tie-b", "tie-a"] {
        for partition in 0..PARTITIONS {
            rows.push((id.to_owned(), partition, 18.5));
        }
    }
    rows
}

/// The answer by definition: every row of a product added up (log2 of the
/// sum of 2^score), best first, ties by id.
fn by_definition(rows: &[(String, i32, f64)], limit: usize) -> Vec<(String, f64)> {
    let mut scores: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
    for (item, _, score) in rows {
        scores.entry(item).or_default().push(*score);
    }
    let mut totals: Vec<(String, f64)> = scores
        .into_iter()
        .map(|(item, s)| {
            let top = s.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            let sum: f64 = s.iter().map(|x| (x - top).exp2()).sum();
            (item.to_owned(), top + sum.log2())
        })
        .collect();
    totals.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    totals.truncate(limit);
    totals
}

#[tokio::test(flavor = "multi_thread")]
async fn the_early_stop_answers_like_the_sum_of_every_row() {
    let env = TestEnv::new("rec_popular").await;
    let pool = env.pool().await;
    let rows = rows();
    let (items, partitions, scores): (Vec<String>, Vec<i32>, Vec<f64>) =
        rows.iter()
            .cloned()
            .fold(Default::default(), |mut v, (i, p, s)| {
                v.0.push(i);
                v.1.push(p);
                v.2.push(s);
                v
            });
    sqlx::query(
        "INSERT INTO rec_popularity (item, partition, score)
         SELECT * FROM UNNEST($1::text[], $2::int4[], $3::float8[])",
    )
    .bind(&items)
    .bind(&partitions)
    .bind(&scores)
    .execute(&pool)
    .await
    .unwrap();
    // No event time yet: scores are reported as 2^log-score.
    let as_of = AsOf {
        last_event_at: None,
        next_offsets: (0..=PARTITIONS).map(|p| (p.to_string(), 1)).collect(),
    };
    let mut conn = pool.acquire().await.unwrap();
    // Each limit read afresh, then through one cache kept across them (at
    // one position: a kept list longer or shorter than asked).
    let kept = query::PopularCache::default();
    for limit in [1, 3, 10, 12, 40, 100, 2_500, 150, 7] {
        let fresh = query::PopularCache::default();
        for (how, cache) in [("afresh", &fresh), ("kept", &kept)] {
            let got = query::popular(&mut conn, cache, limit, &as_of, 86_400.0)
                .await
                .unwrap();
            let expected = by_definition(&rows, limit);
            let ids: Vec<&str> = expected.iter().map(|(i, _)| i.as_str()).collect();
            let got_ids: Vec<&str> = got.iter().map(|s| s.product_id.as_str()).collect();
            assert_eq!(got_ids, ids, "{how}, limit {limit}");
            for (scored, (id, log_score)) in got.iter().zip(&expected) {
                let want = log_score.exp2();
                assert!(
                    (scored.score - want).abs() <= want * 1e-9,
                    "{how}, {id}: {} against {want}",
                    scored.score
                );
            }
        }
    }
    // A commit moves the position: the kept list is not the answer any more.
    sqlx::query("INSERT INTO rec_popularity (item, partition, score) VALUES ('newcomer', 0, 40)")
        .execute(&pool)
        .await
        .unwrap();
    let moved = AsOf {
        last_event_at: None,
        next_offsets: (0..=PARTITIONS).map(|p| (p.to_string(), 2)).collect(),
    };
    let first = query::popular(&mut conn, &kept, 1, &moved, 86_400.0)
        .await
        .unwrap();
    assert_eq!(first[0].product_id, "newcomer");
    // The shapes above were meant to matter: the bulk alone would not
    // put the products popular everywhere first.
    let top = by_definition(&rows, 5);
    assert!(
        top.iter().all(|(id, _)| id.starts_with("everywhere")),
        "{top:?}"
    );
}
