//! The item-to-item model of one partition, in the spirit of Amazon's
//! item-based collaborative filtering: products that the same users engage
//! with close together in time are related.
//!
//! - Every interaction carries an action weight (purchase 8 > add_to_cart 4 >
//!   click 2 > view 1) scaled by *forward decay*: `w * 2^((t - t0) / half_life)`
//!   with a fixed landmark `t0`. Scores never need rewriting as time passes;
//!   newer evidence simply weighs more, and dividing by `2^((now - t0) /
//!   half_life)` at query time gives today's decayed value.
//! - Per user: the last `RECENT` distinct products (with their weights) and
//!   the last `PURCHASED` purchases (excluded from recommendations).
//! - Per product: co-occurrence scores with other products. An interaction with
//!   p adds its weight to (p, q) and (q, p) for every q in the user's recent
//!   window. Lists are pruned to the `NEIGHBORS` best when they reach twice that.
//! - Per product: decayed popularity, the fallback for thin histories.
//!
//! Bounds: per user O(RECENT + PURCHASED); per product O(2 * NEIGHBORS). The
//! number of users and products is the catalogue's. Everything is a pure
//! function of the partition's events in offset order (ties broken by product
//! id), so a partition rebuilt anywhere, from any batch boundaries, is
//! bit-for-bit the same.

use std::collections::{BTreeSet, HashMap};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use shared::event::{Action, Interaction};

/// Distinct recent products remembered per user.
pub const RECENT: usize = 20;
/// Purchases remembered per user (excluded from recommendations).
pub const PURCHASED: usize = 50;
/// Neighbours kept per product after pruning.
pub const NEIGHBORS: usize = 50;

/// Landmark of forward decay: 2026-01-01T00:00:00Z.
const LANDMARK_SECS: i64 = 1_767_225_600;

/// How much one action says about a user's interest.
pub fn action_weight(action: Action) -> f64 {
    match action {
        Action::View => 1.0,
        Action::Click => 2.0,
        Action::AddToCart => 4.0,
        Action::Purchase => 8.0,
    }
}

/// The forward-decay factor of time `t`: `2^((t - t0) / half_life)`.
pub fn growth(t: DateTime<Utc>, half_life_secs: f64) -> f64 {
    (((t.timestamp() - LANDMARK_SECS) as f64) / half_life_secs).exp2()
}

/// What the model remembers of one user.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct UserState {
    /// Distinct products, oldest first, with their latest forward-decayed weight.
    pub recent: Vec<(String, f64)>,
    /// Purchased products, oldest first.
    pub purchased: Vec<String>,
}

/// One partition's model plus what changed since the last save.
#[derive(Debug, Default)]
pub struct PartitionModel {
    pub users: HashMap<String, UserState>,
    pub cooc: HashMap<String, HashMap<String, f64>>,
    pub popularity: HashMap<String, f64>,
    pub dirty_users: BTreeSet<String>,
    pub dirty_items: BTreeSet<String>,
    pub dirty_popularity: BTreeSet<String>,
}

impl PartitionModel {
    /// Folds one interaction into the model.
    pub fn apply(&mut self, interaction: &Interaction, ts: DateTime<Utc>, half_life_secs: f64) {
        let product = &interaction.product_id;
        let weight = action_weight(interaction.action) * growth(ts, half_life_secs);
        let user = self.users.entry(interaction.user_id.clone()).or_default();

        for (other, _) in user.recent.iter().filter(|(q, _)| q != product) {
            for (a, b) in [(product, other), (other, product)] {
                let neighbors = self.cooc.entry(a.clone()).or_default();
                *neighbors.entry(b.clone()).or_insert(0.0) += weight;
                if neighbors.len() >= 2 * NEIGHBORS {
                    prune(neighbors);
                }
                self.dirty_items.insert(a.clone());
            }
        }

        // The product moves to the newest end of the window, keeping its strongest weight.
        let previous = user
            .recent
            .iter()
            .position(|(q, _)| q == product)
            .map(|i| user.recent.remove(i).1);
        user.recent
            .push((product.clone(), previous.map_or(weight, |w| w.max(weight))));
        if user.recent.len() > RECENT {
            user.recent.remove(0);
        }
        if interaction.action == Action::Purchase && !user.purchased.contains(product) {
            user.purchased.push(product.clone());
            if user.purchased.len() > PURCHASED {
                user.purchased.remove(0);
            }
        }
        self.dirty_users.insert(interaction.user_id.clone());

        *self.popularity.entry(product.clone()).or_insert(0.0) += weight;
        self.dirty_popularity.insert(product.clone());
    }

    /// Forgets what changed (after a save).
    pub fn clean(&mut self) {
        self.dirty_users.clear();
        self.dirty_items.clear();
        self.dirty_popularity.clear();
    }
}

/// Keeps the `NEIGHBORS` best, ties broken by product id (deterministic).
fn prune(neighbors: &mut HashMap<String, f64>) {
    let mut ranked: Vec<(String, f64)> = neighbors.drain().collect();
    rank(&mut ranked);
    ranked.truncate(NEIGHBORS);
    neighbors.extend(ranked);
}

/// Sorts by score, best first, then by product id.
pub fn rank(items: &mut [(String, f64)]) {
    items.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: f64 = 86_400.0;

    fn event(user: &str, product: &str, action: Action) -> Interaction {
        Interaction {
            user_id: user.into(),
            product_id: product.into(),
            action,
            price_cents: (action == Action::Purchase).then_some(100),
        }
    }

    fn t0() -> DateTime<Utc> {
        "2026-01-01T00:00:00Z".parse().unwrap()
    }

    #[test]
    fn forward_decay_halves_per_half_life() {
        let later = t0() + chrono::TimeDelta::days(7);
        assert_eq!(growth(t0(), 7.0 * DAY), 1.0);
        assert_eq!(growth(later, 7.0 * DAY), 2.0);
    }

    #[test]
    fn co_occurrence_is_symmetric_and_action_weighted() {
        let mut m = PartitionModel::default();
        m.apply(&event("u1", "a", Action::View), t0(), 7.0 * DAY);
        m.apply(&event("u1", "b", Action::Purchase), t0(), 7.0 * DAY);
        m.apply(&event("u1", "a", Action::Click), t0(), 7.0 * DAY);
        // b pairs with a at weight 8; the click on a pairs with b at 2.
        assert_eq!(m.cooc["a"]["b"], 10.0);
        assert_eq!(m.cooc["b"]["a"], 10.0);
        let user = &m.users["u1"];
        assert_eq!(
            user.recent,
            vec![("b".to_string(), 8.0), ("a".to_string(), 2.0)]
        );
        assert_eq!(user.purchased, vec!["b".to_string()]);
        assert_eq!(m.popularity["a"], 3.0);
    }

    #[test]
    fn windows_and_neighbor_lists_stay_bounded() {
        let mut m = PartitionModel::default();
        for i in 0..500 {
            m.apply(
                &event("u1", &format!("p{i}"), Action::View),
                t0(),
                7.0 * DAY,
            );
        }
        assert_eq!(m.users["u1"].recent.len(), RECENT);
        assert!(m.cooc.values().all(|n| n.len() < 2 * NEIGHBORS));
    }
}
