//! The service's answers over HTTP set against the independent reference
//! (`reference.rs`), built from the records as the topic holds them.

use std::collections::HashSet;
use std::time::Duration;

use chrono::{DateTime, NaiveDate, Utc};
use rdkafka::Message;
use serde_json::Value;
use shared::testkit::TestEnv;

use super::reference::{Day, Interaction, Item, Reference, Source};

/// Relative tolerance of a score: the service adds base-2 logarithms, the
/// reference plain numbers, so the last few bits differ.
const TOLERANCE: f64 = 1e-9;

/// The reference over the `count` records of the events topic, with the
/// partition, offset and timestamp each got.
pub async fn from_topic(env: &TestEnv, count: usize) -> Reference {
    let topic = &env.settings.kafka.events_topic;
    let records = env
        .read_exactly(topic, count, Duration::from_secs(60))
        .await;
    let events = records
        .iter()
        .filter_map(|m| {
            let at = m
                .timestamp()
                .to_millis()
                .and_then(DateTime::from_timestamp_millis);
            Interaction::parse(m.partition(), m.offset(), at, m.payload()?)
        })
        .collect();
    Reference::new(events)
}

/// The service's query API.
pub struct Api {
    client: reqwest::Client,
    base: String,
    token: String,
}

impl Api {
    pub fn new(addr: std::net::SocketAddr, token: &str) -> Api {
        Api {
            client: reqwest::Client::new(),
            base: format!("http://{addr}"),
            token: token.to_owned(),
        }
    }

    async fn get(&self, path: &str) -> Value {
        let response = self
            .client
            .get(format!("{}{path}", self.base))
            .bearer_auth(&self.token)
            .send()
            .await
            .unwrap();
        assert!(response.status().is_success(), "{path}: {response:?}");
        response.json().await.unwrap()
    }

    /// `/products/{id}/similar` and the answer's `last_event_at`.
    pub async fn similar(&self, product: &str, limit: usize) -> (Vec<Item>, Option<DateTime<Utc>>) {
        let answer = self
            .get(&format!("/products/{product}/similar?limit={limit}"))
            .await;
        let last = answer["as_of"]["last_event_at"]
            .as_str()
            .map(|t| t.parse().unwrap());
        (items(&answer), last)
    }

    /// `/users/{id}/recommendations`: the items and `fallback`.
    pub async fn for_user(&self, user: &str, limit: usize) -> (Vec<Item>, bool) {
        let answer = self
            .get(&format!("/users/{user}/recommendations?limit={limit}"))
            .await;
        (items(&answer), answer["fallback"].as_bool().unwrap())
    }

    /// `/stats/daily`.
    pub async fn daily(&self) -> Vec<(NaiveDate, Day)> {
        let answer = self.get("/stats/daily").await;
        let count = |d: &Value, k: &str| d[k].as_i64().unwrap();
        answer["days"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| {
                let day = Day {
                    views: count(d, "views"),
                    clicks: count(d, "clicks"),
                    add_to_cart: count(d, "add_to_cart"),
                    purchases: count(d, "purchases"),
                    revenue_cents: count(d, "revenue_cents"),
                };
                (d["day"].as_str().unwrap().parse().unwrap(), day)
            })
            .collect()
    }
}

fn items(answer: &Value) -> Vec<Item> {
    answer["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| Item {
            product: i["product_id"].as_str().unwrap().to_owned(),
            score: i["score"].as_f64().unwrap(),
            source: match i["source"].as_str().unwrap() {
                "similar" => Source::Similar,
                "popular" => Source::Popular,
                other => panic!("unknown source {other}"),
            },
        })
        .collect()
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= TOLERANCE * a.abs().max(b.abs())
}

fn show(items: &[Item]) -> String {
    let one = |i: &Item| format!("{}:{:.6e}:{:?}", i.product, i.score, i.source);
    items.iter().map(one).collect::<Vec<_>>().join(" ")
}

/// `got` is `full`'s first `limit` items: the same products in the same
/// order, with the same sources and scores within the tolerance. Two
/// products may only trade places when their reference scores are equal
/// within the tolerance (sums taken in another order can break such a tie
/// the other way).
pub fn assert_ranking(what: &str, got: &[Item], full: &[Item], limit: usize) {
    let want = &full[..limit.min(full.len())];
    let lists = format!("\n got: {}\nwant: {}", show(got), show(want));
    assert_eq!(got.len(), want.len(), "{what}: lengths differ{lists}");
    let mut seen = HashSet::new();
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!(
            seen.insert(&g.product),
            "{what}: {} twice{lists}",
            g.product
        );
        assert_eq!(g.source, w.source, "{what}: source of #{i}{lists}");
        assert!(close(g.score, w.score), "{what}: score of #{i}{lists}");
        if g.product != w.product {
            let twin = full
                .iter()
                .find(|x| x.product == g.product && x.source == g.source);
            assert!(
                twin.is_some_and(|t| close(t.score, w.score)),
                "{what}: #{i} is {} where the reference has {}, not a tie{lists}",
                g.product,
                w.product
            );
        }
    }
}

/// What a comparison went through (so a test can tell it was not vacuous).
#[derive(Debug, Default)]
pub struct Coverage {
    pub products: usize,
    pub users: usize,
    pub fallbacks: usize,
    pub excluded: usize,
}

/// Every product's similar list (`limit` each) and the daily counts.
pub async fn assert_products(api: &Api, reference: &Reference, limit: usize) -> Coverage {
    let products = reference.products();
    for product in &products {
        let (got, last) = api.similar(product, limit).await;
        assert_eq!(last, reference.newest(), "the newest event's time");
        assert_ranking(
            &format!("similar to {product}"),
            &got,
            &reference.similar(product),
            limit,
        );
    }
    assert!(
        api.similar("no-such-product", limit).await.0.is_empty(),
        "an unknown product has no similar products"
    );
    assert_eq!(api.daily().await, reference.daily(), "/stats/daily");
    Coverage {
        products: products.len(),
        ..Coverage::default()
    }
}

/// `users`' recommendations (`limit` each), and `fallback`.
pub async fn assert_users(
    api: &Api,
    reference: &Reference,
    users: &[String],
    limit: usize,
) -> Coverage {
    let mut coverage = Coverage::default();
    for user in users {
        let (got, fallback) = api.for_user(user, limit).await;
        let (full, excluded) = reference.for_user(user);
        assert_ranking(&format!("recommendations of {user}"), &got, &full, limit);
        let thin = full.iter().filter(|i| i.source == Source::Similar).count() < limit;
        assert_eq!(fallback, thin, "fallback of {user}");
        coverage.users += 1;
        coverage.fallbacks += usize::from(fallback);
        coverage.excluded += excluded;
    }
    coverage
}
