//! Shopping sessions walking the funnel view -> click -> add_to_cart ->
//! purchase; a user's first session starts with its sign-up (a first
//! `user_updated`), and occasional sessions with a profile change.

use std::collections::VecDeque;

use chrono::{DateTime, TimeDelta, Utc};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use shared::event::{Action, Event, EventBody, Interaction, UserUpdated};

use crate::catalog::{product_id, user_id, Catalog};

/// Funnel probabilities: each step given the previous one.
const P_CLICK: f64 = 0.35;
const P_CART: f64 = 0.30;
const P_PURCHASE: f64 = 0.50;
/// Share of a session's products from the user's home cluster.
const P_HOME: f64 = 0.8;
/// Sessions that start with a profile update.
const P_USER_UPDATE: f64 = 0.01;

/// Timestamps: evenly spaced from `start`, or the wall clock.
#[derive(Clone, Copy)]
pub struct Clock {
    pub start: DateTime<Utc>,
    pub step_ms: f64,
    pub realtime: bool,
}

impl Clock {
    pub fn at(&self, index: u64) -> DateTime<Utc> {
        if self.realtime {
            return Utc::now();
        }
        self.start + TimeDelta::milliseconds((index as f64 * self.step_ms) as i64)
    }
}

/// An endless, deterministic stream of events.
pub struct Sessions {
    rng: ChaCha8Rng,
    catalog: Catalog,
    clock: Clock,
    emitted: u64,
    pending: VecDeque<EventBody>,
    /// Per user seen so far, its profile version (a user signs up, with a
    /// first `user_updated`, at its first session).
    versions: std::collections::HashMap<usize, u64>,
}

impl Sessions {
    pub fn new(seed: u64, catalog: Catalog, clock: Clock) -> Self {
        Self {
            rng: ChaCha8Rng::seed_from_u64(seed),
            catalog,
            clock,
            emitted: 0,
            pending: VecDeque::new(),
            versions: std::collections::HashMap::new(),
        }
    }

    fn session(&mut self) {
        let user = self.catalog.user_activity.sample(&mut self.rng);
        let uid = user_id(user);
        let signup = !self.versions.contains_key(&user);
        if signup || self.rng.gen_bool(P_USER_UPDATE) {
            let version = self.versions.entry(user).or_insert(0);
            *version += 1;
            let email = match *version {
                1 => format!("{uid}@example.com"),
                v => format!("{uid}+{v}@example.com"),
            };
            self.pending.push_back(EventBody::UserUpdated(UserUpdated {
                user_id: uid.clone(),
                email,
                name: Some(format!("User {user}")),
                version: Some(*version),
            }));
        }
        let products = 1 + self.geometric(0.45);
        let home = self.catalog.home_cluster(user);
        for _ in 0..products {
            let product = if self.rng.gen_bool(P_HOME) {
                self.catalog.product_in(home, &mut self.rng)
            } else {
                self.catalog.product_popularity.sample(&mut self.rng)
            };
            self.push(&uid, product, Action::View, None);
            if !self.rng.gen_bool(P_CLICK) {
                continue;
            }
            self.push(&uid, product, Action::Click, None);
            if !self.rng.gen_bool(P_CART) {
                continue;
            }
            self.push(&uid, product, Action::AddToCart, None);
            if self.rng.gen_bool(P_PURCHASE) {
                let price = self.catalog.price_cents(product);
                self.push(&uid, product, Action::Purchase, Some(price));
            }
        }
    }

    fn push(&mut self, user: &str, product: usize, action: Action, price_cents: Option<u64>) {
        self.pending.push_back(EventBody::Interaction(Interaction {
            user_id: user.to_owned(),
            product_id: product_id(product),
            action,
            price_cents,
        }));
    }

    /// Failures before the first success, capped.
    fn geometric(&mut self, p: f64) -> usize {
        (0..12).take_while(|_| !self.rng.gen_bool(p)).count()
    }
}

impl Iterator for Sessions {
    type Item = Event;

    fn next(&mut self) -> Option<Event> {
        while self.pending.is_empty() {
            self.session();
        }
        let body = self.pending.pop_front()?;
        let id = uuid::Builder::from_random_bytes(self.rng.gen()).into_uuid();
        let ts = self.clock.at(self.emitted);
        self.emitted += 1;
        Some(Event {
            id: Some(id),
            ts: Some(ts),
            body,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(seed: u64) -> Vec<Event> {
        let clock = Clock {
            start: "2026-11-01T00:00:00Z".parse().unwrap(),
            step_ms: 1000.0,
            realtime: false,
        };
        Sessions::new(seed, Catalog::new(100, 60, 10), clock)
            .take(2_000)
            .collect()
    }

    #[test]
    fn same_seed_same_traffic_and_every_line_parses() {
        let a = sample(7);
        assert_eq!(a, sample(7));
        assert_ne!(a, sample(8));
        for event in &a {
            assert_eq!(&Event::parse(&event.to_json()).unwrap(), event);
        }
        let ts: Vec<_> = a.iter().map(|e| e.ts.unwrap()).collect();
        assert!(ts.windows(2).all(|w| w[0] <= w[1]), "times never go back");
    }

    #[test]
    fn the_funnel_narrows() {
        let count = |action| {
            sample(1)
                .iter()
                .filter(|e| matches!(&e.body, EventBody::Interaction(i) if i.action == action))
                .count()
        };
        let (views, clicks, carts, purchases) = (
            count(Action::View),
            count(Action::Click),
            count(Action::AddToCart),
            count(Action::Purchase),
        );
        assert!(views > clicks && clicks > carts && carts > purchases && purchases > 0);
    }
}
