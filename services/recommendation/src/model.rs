//! The item-to-item model of one partition, in the spirit of Amazon's
//! item-based collaborative filtering: products that the same users engage
//! with close together in time are related.
//!
//! - Every interaction carries an action weight (purchase 8 > add_to_cart 4 >
//!   click 2 > view 1) scaled by *forward decay*: `w * 2^((t - t0) / half_life)`
//!   with a fixed landmark `t0`. Scores never need rewriting as time passes;
//!   newer evidence simply weighs more, and dividing by `2^((now - t0) /
//!   half_life)` at query time gives today's decayed value.
//! - Scores are kept as their base-2 logarithm (`log2(w) + (t - t0) /
//!   half_life`) and added with log-sum-exp. Linear forward-decay factors
//!   underflow to 0 a few decades before the landmark and overflow a few
//!   decades after it, so a backfill of old data would score all zero; a
//!   log-score is finite for every representable time, and the ranking of a
//!   dataset does not change when all its times shift by the same amount.
//!   Queries subtract the newest event's log-factor: decay is relative to the
//!   stream's own time, not to the wall clock or the landmark.
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

use chrono::{DateTime, Utc};
use shared::event::{Action, Interaction};
use shared::worker::Refused;

/// Distinct recent products remembered per user.
pub const RECENT: usize = 10;
/// Purchases remembered per user (excluded from recommendations).
pub const PURCHASED: usize = 50;
/// Neighbours kept per product after pruning.
pub const NEIGHBORS: usize = 20;

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

/// `log2` of the forward-decay factor of time `t`: `(t - t0) / half_life`.
/// Finite for every time chrono can represent (at most about 10^7 for a
/// one-day half-life).
pub fn log_growth(t: DateTime<Utc>, half_life_secs: f64) -> f64 {
    ((t.timestamp() - LANDMARK_SECS) as f64 + f64::from(t.timestamp_subsec_millis()) / 1e3)
        / half_life_secs
}

/// The log-score of one action at time `t`: `log2(weight * growth(t))`.
pub fn log_weight(action: Action, t: DateTime<Utc>, half_life_secs: f64) -> f64 {
    action_weight(action).log2() + log_growth(t, half_life_secs)
}

/// The log-score of an action at `t`, or why it cannot be counted (a
/// weight that is not a finite number), decided before anything changes.
pub fn weight_of(action: Action, t: DateTime<Utc>, half_life_secs: f64) -> Result<f64, Refused> {
    let weight = log_weight(action, t, half_life_secs);
    if weight.is_finite() {
        Ok(weight)
    } else {
        Err(Refused::new(
            "refused",
            format!("weight at {t} is not a finite number"),
        ))
    }
}

/// `log2(2^a + 2^b)` without leaving log space (no overflow, no underflow
/// of the larger term). Commutative bit for bit.
pub fn log_add(a: f64, b: f64) -> f64 {
    let (hi, lo) = if a >= b { (a, b) } else { (b, a) };
    hi + (lo - hi).exp2().ln_1p() * std::f64::consts::LOG2_E
}

/// A log-score as a linear score relative to the log-factor `now`
/// (the newest event's): `2^(score - now)`.
pub fn linear(log_score: f64, now: f64) -> f64 {
    (log_score - now).exp2()
}

/// Maps keyed by product or user id: foldhash is several times faster than
/// SipHash on short keys and still seeded per process (no chosen-key floods).
pub type Map<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;

/// Where an entry of the model stands against its stored row: a save
/// updates the changed rows in place and inserts the new ones (an upsert
/// of an existing row also locks it, a WAL record of its own).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Stored {
    /// No row yet.
    #[default]
    New,
    /// A row, older than the entry.
    Changed,
    /// A row equal to the entry.
    Saved,
}

impl Stored {
    /// The entry changed.
    pub fn touch(&mut self) {
        if *self == Stored::Saved {
            *self = Stored::Changed;
        }
    }
}

/// What the model remembers of one user.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct UserState {
    /// Distinct products, oldest first, with the log-score of their strongest action.
    pub recent: Vec<(String, f64)>,
    /// Purchased products, oldest first.
    pub purchased: Vec<String>,
    pub stored: Stored,
}

/// A product's co-occurrence log-scores with other products.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Neighbors {
    pub scores: Map<String, f64>,
    pub stored: Stored,
}

/// A product's decayed popularity (a log-score).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Popularity {
    pub score: f64,
    pub stored: Stored,
}

impl Default for Popularity {
    /// No interaction yet: `log2(0)`, the identity of `log_add`.
    fn default() -> Self {
        Self {
            score: f64::NEG_INFINITY,
            stored: Stored::New,
        }
    }
}

/// One partition's model; entries changed since the last save are flagged.
#[derive(Debug, Default)]
pub struct PartitionModel {
    pub users: Map<String, UserState>,
    pub cooc: Map<String, Neighbors>,
    pub popularity: Map<String, Popularity>,
}

/// The entry for `key`, cloning the key only when it is new.
fn slot<'m, V: Default>(map: &'m mut Map<String, V>, key: &str) -> &'m mut V {
    if !map.contains_key(key) {
        map.insert(key.to_owned(), V::default());
    }
    map.get_mut(key).expect("just inserted")
}

impl PartitionModel {
    /// Folds one interaction into the model ([`weight_of`], then
    /// [`PartitionModel::apply_weighted`]).
    pub fn apply(
        &mut self,
        interaction: &Interaction,
        ts: DateTime<Utc>,
        half_life_secs: f64,
    ) -> Result<(), Refused> {
        let weight = weight_of(interaction.action, ts, half_life_secs)?;
        self.apply_weighted(interaction, weight)
    }

    /// Folds one interaction of log-score `weight` into the model. A score
    /// that would not be a finite number is refused, possibly after other
    /// scores changed (the caller reloads the partition and dead-letters
    /// the event): nothing non-finite reaches the state.
    pub fn apply_weighted(
        &mut self,
        interaction: &Interaction,
        weight: f64,
    ) -> Result<(), Refused> {
        let product = interaction.product_id.as_str();
        let user = slot(&mut self.users, &interaction.user_id);

        for (other, _) in user.recent.iter().filter(|(q, _)| q != product) {
            for (a, b) in [(product, other.as_str()), (other.as_str(), product)] {
                let neighbors = slot(&mut self.cooc, a);
                match neighbors.scores.get_mut(b) {
                    Some(score) => {
                        *score = log_add(*score, weight);
                        if !score.is_finite() {
                            return Err(Refused::new(
                                "refused",
                                format!("score of {a} with {b} overflows"),
                            ));
                        }
                    }
                    None => {
                        neighbors.scores.insert(b.to_owned(), weight);
                    }
                }
                if neighbors.scores.len() >= 2 * NEIGHBORS {
                    prune(&mut neighbors.scores);
                }
                neighbors.stored.touch();
            }
        }

        // The product moves to the newest end of the window, keeping its strongest weight.
        let previous = user
            .recent
            .iter()
            .position(|(q, _)| q == product)
            .map(|i| user.recent.remove(i).1);
        user.recent.push((
            product.to_owned(),
            previous.map_or(weight, |w| w.max(weight)),
        ));
        if user.recent.len() > RECENT {
            user.recent.remove(0);
        }
        if interaction.action == Action::Purchase && !user.purchased.iter().any(|p| p == product) {
            user.purchased.push(product.to_owned());
            if user.purchased.len() > PURCHASED {
                user.purchased.remove(0);
            }
        }
        user.stored.touch();

        let popularity = slot(&mut self.popularity, product);
        popularity.score = log_add(popularity.score, weight);
        popularity.stored.touch();
        if !popularity.score.is_finite() {
            return Err(Refused::new(
                "refused",
                format!("popularity of {product} overflows"),
            ));
        }
        Ok(())
    }

    /// Marks every entry saved (after a save).
    pub fn clean(&mut self) {
        self.users
            .values_mut()
            .for_each(|u| u.stored = Stored::Saved);
        self.cooc
            .values_mut()
            .for_each(|n| n.stored = Stored::Saved);
        self.popularity
            .values_mut()
            .for_each(|p| p.stored = Stored::Saved);
    }
}

/// Keeps the `NEIGHBORS` best, ties broken by product id (deterministic).
fn prune(neighbors: &mut Map<String, f64>) {
    let mut ranked: Vec<(String, f64)> = neighbors.drain().collect();
    rank(&mut ranked);
    ranked.truncate(NEIGHBORS);
    neighbors.extend(ranked);
}

/// Sorts by score, best first, then by product id.
pub fn rank<K: Ord>(items: &mut [(K, f64)]) {
    items.sort_by(by_rank);
}

/// The order of [`rank`]: by score, best first, then by product id.
pub fn by_rank<K: Ord>(a: &(K, f64), b: &(K, f64)) -> std::cmp::Ordering {
    b.1.total_cmp(&a.1).then_with(|| a.0.cmp(&b.0))
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

    fn close(log_score: f64, want: f64) -> bool {
        (linear(log_score, 0.0) - want).abs() < 1e-9 * want
    }

    #[test]
    fn forward_decay_halves_per_half_life() {
        let later = t0() + chrono::TimeDelta::days(7);
        assert_eq!(log_growth(t0(), 7.0 * DAY), 0.0);
        assert_eq!(log_growth(later, 7.0 * DAY), 1.0);
        assert_eq!(log_weight(Action::Purchase, later, 7.0 * DAY), 4.0);
    }

    #[test]
    fn log_scores_add_without_overflow_or_underflow() {
        assert!(close(log_add(3.0_f64.log2(), 5.0_f64.log2()), 8.0));
        assert_eq!(log_add(f64::NEG_INFINITY, 2.0), 2.0);
        assert_eq!(log_add(1e7, 1e7), 1e7 + 1.0);
        assert_eq!(log_add(-1e7, -1e7), -1e7 + 1.0);
        assert_eq!(log_add(2.5, -7.0), log_add(-7.0, 2.5));
        // Decades away from the landmark, both ends stay finite.
        for t in ["1970-01-01T00:00:00Z", "2262-04-11T00:00:00Z"] {
            let t: DateTime<Utc> = t.parse().unwrap();
            assert!(log_weight(Action::View, t, 7.0 * DAY).is_finite());
        }
    }

    #[test]
    fn co_occurrence_is_symmetric_and_action_weighted() {
        let mut m = PartitionModel::default();
        m.apply(&event("u1", "a", Action::View), t0(), 7.0 * DAY)
            .unwrap();
        m.apply(&event("u1", "b", Action::Purchase), t0(), 7.0 * DAY)
            .unwrap();
        m.apply(&event("u1", "a", Action::Click), t0(), 7.0 * DAY)
            .unwrap();
        // b pairs with a at weight 8; the click on a pairs with b at 2.
        assert!(close(m.cooc["a"].scores["b"], 10.0));
        assert_eq!(m.cooc["a"].scores["b"], m.cooc["b"].scores["a"]);
        let user = &m.users["u1"];
        assert_eq!(
            user.recent,
            vec![("b".to_string(), 3.0), ("a".to_string(), 1.0)]
        );
        assert_eq!(user.purchased, vec!["b".to_string()]);
        assert!(close(m.popularity["a"].score, 3.0));
    }

    /// The same interactions, all shifted by the same span of time, rank
    /// the same: decades before or after the landmark included.
    #[test]
    fn a_shifted_dataset_ranks_the_same() {
        let ranking = |shift: chrono::TimeDelta| {
            let mut m = PartitionModel::default();
            let day = chrono::TimeDelta::days(1);
            let events = [
                ("u1", "a", Action::View, 0),
                ("u1", "b", Action::Purchase, 1),
                ("u2", "a", Action::Click, 3),
                ("u2", "c", Action::View, 20),
                ("u3", "c", Action::AddToCart, 30),
                ("u3", "a", Action::View, 31),
            ];
            for (user, product, action, days) in events {
                let t = t0() + shift + day * days;
                m.apply(&event(user, product, action), t, 7.0 * DAY)
                    .unwrap();
            }
            let mut popular: Vec<(String, f64)> = m
                .popularity
                .iter()
                .map(|(k, p)| (k.clone(), p.score))
                .collect();
            rank(&mut popular);
            let mut similar: Vec<(String, f64)> = m.cooc["a"].scores.clone().into_iter().collect();
            rank(&mut similar);
            let names = |v: Vec<(String, f64)>| v.into_iter().map(|(k, _)| k).collect::<Vec<_>>();
            (names(popular), names(similar))
        };
        let now = ranking(chrono::TimeDelta::zero());
        assert_eq!(now.0, ["c", "a", "b"]);
        assert_eq!(now.1, ["c", "b"]);
        assert_eq!(ranking(-chrono::TimeDelta::days(365 * 30)), now);
        assert_eq!(ranking(chrono::TimeDelta::days(365 * 20)), now);
    }

    #[test]
    fn windows_and_neighbor_lists_stay_bounded() {
        let mut m = PartitionModel::default();
        for i in 0..500 {
            m.apply(
                &event("u1", &format!("p{i}"), Action::View),
                t0(),
                7.0 * DAY,
            )
            .unwrap();
        }
        assert_eq!(m.users["u1"].recent.len(), RECENT);
        assert!(m.cooc.values().all(|n| n.scores.len() < 2 * NEIGHBORS));
    }
}
