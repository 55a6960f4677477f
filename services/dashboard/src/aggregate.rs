//! What a replay computes: per UTC day, active users, views, clicks,
//! add_to_cart, purchases, revenue, conversion (purchasing users / viewing
//! users) and the top products by views and by purchases. Memory grows with
//! distinct users and products per day, not with events; results do not
//! depend on the order events arrive in, so the same range always gives the
//! same numbers.

use std::collections::{BTreeMap, HashMap, HashSet};

use chrono::NaiveDate;
use serde::Serialize;
use shared::event::{Action, Interaction};

/// Top products kept per day and ranking.
pub const TOP: usize = 20;

/// Sets and maps keyed by interned ids: foldhash, seeded per process.
type Set = HashSet<u32, foldhash::fast::RandomState>;
type Counts = HashMap<u32, u64, foldhash::fast::RandomState>;

/// One day's numbers: distinct users (active: any interaction; viewing;
/// purchasing) and counts per action, revenue in cents.
#[derive(Debug, Clone, Default, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Day {
    pub active_users: u64,
    pub viewing_users: u64,
    pub purchasing_users: u64,
    pub views: u64,
    pub clicks: u64,
    pub add_to_cart: u64,
    pub purchases: u64,
    pub revenue_cents: u64,
}

/// Ids as small numbers: each distinct id is stored once, however many
/// days and sets hold it, and sets hash 4 bytes instead of a string.
#[derive(Default)]
struct Interner {
    numbers: HashMap<Box<str>, u32, foldhash::fast::RandomState>,
    names: Vec<Box<str>>,
}

impl Interner {
    fn number(&mut self, name: &str) -> u32 {
        if let Some(&n) = self.numbers.get(name) {
            return n;
        }
        let n = u32::try_from(self.names.len()).expect("fewer than 2^32 distinct ids");
        self.names.push(name.into());
        self.numbers.insert(name.into(), n);
        n
    }

    fn name(&self, number: u32) -> &str {
        &self.names[number as usize]
    }

    /// `other`'s numbers in this interner (interning what is new here).
    fn translate(&mut self, other: &Interner) -> Vec<u32> {
        other.names.iter().map(|name| self.number(name)).collect()
    }
}

#[derive(Default)]
struct Accumulator {
    day: Day,
    active: Set,
    viewing: Set,
    purchasing: Set,
    views: Counts,
    bought: Counts,
}

/// The running aggregation of a replay.
#[derive(Default)]
pub struct Aggregate {
    users: Interner,
    products: Interner,
    days: BTreeMap<NaiveDate, Accumulator>,
}

/// A product and how often it was viewed or bought.
pub type Ranked = Vec<(String, u64)>;

/// One day of a finished aggregation.
#[derive(Debug, Clone, PartialEq)]
pub struct DayResult {
    pub day: Day,
    pub top_views: Ranked,
    pub top_purchases: Ranked,
}

/// A finished aggregation, by day.
#[derive(Debug, Clone, PartialEq)]
pub struct Results {
    pub days: BTreeMap<NaiveDate, DayResult>,
}

impl Aggregate {
    /// Adds one interaction that happened on `day`.
    pub fn add(&mut self, day: NaiveDate, interaction: &Interaction) {
        let user = self.users.number(&interaction.user_id);
        let acc = self.days.entry(day).or_default();
        acc.active.insert(user);
        match interaction.action {
            Action::View => {
                acc.day.views += 1;
                acc.viewing.insert(user);
                let product = self.products.number(&interaction.product_id);
                *acc.views.entry(product).or_default() += 1;
            }
            Action::Click => acc.day.clicks += 1,
            Action::AddToCart => acc.day.add_to_cart += 1,
            Action::Purchase => {
                acc.day.purchases += 1;
                acc.day.revenue_cents += interaction.price_cents.unwrap_or(0);
                acc.purchasing.insert(user);
                let product = self.products.number(&interaction.product_id);
                *acc.bought.entry(product).or_default() += 1;
            }
        }
    }

    /// Folds another aggregation (of other partitions) into this one.
    pub fn merge(&mut self, other: Aggregate) {
        let users = self.users.translate(&other.users);
        let products = self.products.translate(&other.products);
        for (date, theirs) in other.days {
            let ours = self.days.entry(date).or_default();
            ours.day.views += theirs.day.views;
            ours.day.clicks += theirs.day.clicks;
            ours.day.add_to_cart += theirs.day.add_to_cart;
            ours.day.purchases += theirs.day.purchases;
            ours.day.revenue_cents += theirs.day.revenue_cents;
            let user = |u: u32| users[u as usize];
            ours.active.extend(theirs.active.into_iter().map(user));
            ours.viewing.extend(theirs.viewing.into_iter().map(user));
            ours.purchasing
                .extend(theirs.purchasing.into_iter().map(user));
            for (product, n) in theirs.views {
                *ours.views.entry(products[product as usize]).or_default() += n;
            }
            for (product, n) in theirs.bought {
                *ours.bought.entry(products[product as usize]).or_default() += n;
            }
        }
    }

    /// The per-day results, top lists ranked by count then product id.
    pub fn finish(self) -> Results {
        let products = &self.products;
        let days = self
            .days
            .into_iter()
            .map(|(date, acc)| {
                let mut day = acc.day;
                day.active_users = acc.active.len() as u64;
                day.viewing_users = acc.viewing.len() as u64;
                day.purchasing_users = acc.purchasing.len() as u64;
                let top_views = top(products, &acc.views);
                let top_purchases = top(products, &acc.bought);
                (
                    date,
                    DayResult {
                        day,
                        top_views,
                        top_purchases,
                    },
                )
            })
            .collect();
        Results { days }
    }
}

fn top(products: &Interner, counts: &Counts) -> Ranked {
    let mut ranked: Vec<(&str, u64)> = counts
        .iter()
        .map(|(&p, &n)| (products.name(p), n))
        .collect();
    ranked.sort_unstable_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(b.0)));
    ranked.truncate(TOP);
    ranked.into_iter().map(|(p, n)| (p.to_owned(), n)).collect()
}

/// Purchasing users over viewing users; 0 for a day without views.
pub fn conversion(day: &Day) -> f64 {
    if day.viewing_users == 0 {
        0.0
    } else {
        day.purchasing_users as f64 / day.viewing_users as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn i(user: &str, product: &str, action: Action, price: Option<u64>) -> Interaction {
        Interaction {
            user_id: user.into(),
            product_id: product.into(),
            action,
            price_cents: price,
        }
    }

    #[test]
    fn counts_users_once_and_ranks_deterministically() {
        let d = NaiveDate::from_ymd_opt(2026, 11, 20).unwrap();
        let mut a = Aggregate::default();
        a.add(d, &i("u1", "b", Action::View, None));
        a.add(d, &i("u1", "a", Action::View, None));
        a.add(d, &i("u2", "a", Action::View, None));
        a.add(d, &i("u2", "a", Action::Purchase, Some(500)));
        a.add(d, &i("u3", "b", Action::Click, None));
        let results = a.finish();
        let DayResult {
            day,
            top_views: views,
            top_purchases: bought,
        } = &results.days[&d];
        assert_eq!(
            (day.active_users, day.viewing_users, day.purchasing_users),
            (3, 2, 1)
        );
        assert_eq!(
            (day.views, day.clicks, day.purchases, day.revenue_cents),
            (3, 1, 1, 500)
        );
        assert_eq!(views, &vec![("a".to_string(), 2), ("b".to_string(), 1)]);
        assert_eq!(bought, &vec![("a".to_string(), 1)]);
        assert_eq!(conversion(day), 0.5);
    }

    #[test]
    fn merging_partial_aggregations_equals_one_aggregation() {
        let d = NaiveDate::from_ymd_opt(2026, 11, 20).unwrap();
        let events = [
            i("u1", "a", Action::View, None),
            i("u2", "a", Action::View, None),
            i("u1", "b", Action::Purchase, Some(7)),
            i("u3", "a", Action::Purchase, Some(9)),
        ];
        let mut whole = Aggregate::default();
        events.iter().for_each(|e| whole.add(d, e));
        let (mut left, mut right) = (Aggregate::default(), Aggregate::default());
        events[..2].iter().for_each(|e| left.add(d, e));
        events[2..].iter().for_each(|e| right.add(d, e));
        left.merge(right);
        assert_eq!(left.finish(), whole.finish());
    }
}
