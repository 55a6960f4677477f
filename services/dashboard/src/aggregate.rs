//! What a replay computes: per UTC day, active users, views, clicks,
//! add_to_cart, purchases, revenue, conversion (purchasing users / viewing
//! users) and the top products by views and by purchases. Memory grows with
//! distinct users and products per day, not with events; results do not
//! depend on the order events arrive in, so the same range always gives the
//! same numbers.
//!
//! A day's aggregation is also kept in a mergeable form ([`Aggregate::encode_day`]):
//! its distinct users as a set and every product's counts, from which the
//! stored results (a count of users, a top 20) could not be rebuilt. An
//! incremental run decodes the days its new records touch into its own
//! aggregation ([`Aggregate::merge_encoded`]) and finishes them as a full
//! replay would have: the same sets, the same counts, the same results.

use std::collections::{BTreeMap, HashMap, HashSet};

use chrono::NaiveDate;
use serde::Serialize;
use shared::event::{Action, Interaction};

/// Top products kept per day and ranking.
pub const TOP: usize = 20;

/// The version of what a run computes and of its encoded days: raise it
/// when either changes. A run never merges into days another version
/// encoded; the first automatic run after a change is a full replay.
pub const VERSION: i32 = 1;

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

    /// The days this aggregation counted something on.
    pub fn days(&self) -> Vec<NaiveDate> {
        self.days.keys().copied().collect()
    }

    /// `day`'s aggregation in its mergeable form: the additive counts, every
    /// user of the day with what they did (active, viewing, purchasing) and
    /// every product's view and purchase counts. Integers are big-endian,
    /// an id is its length in bytes (`u32`) then its UTF-8; users and
    /// products come sorted, so equal days encode to equal bytes.
    pub fn encode_day(&self, day: NaiveDate) -> Vec<u8> {
        let mut out = Vec::new();
        let Some(acc) = self.days.get(&day) else {
            return out;
        };
        let d = &acc.day;
        for n in [
            d.views,
            d.clicks,
            d.add_to_cart,
            d.purchases,
            d.revenue_cents,
        ] {
            out.extend_from_slice(&n.to_be_bytes());
        }
        let mut users: Vec<(&str, u8)> = acc
            .active
            .iter()
            .map(|&u| {
                let flags = ACTIVE
                    | if acc.viewing.contains(&u) { VIEWING } else { 0 }
                    | if acc.purchasing.contains(&u) {
                        PURCHASING
                    } else {
                        0
                    };
                (self.users.name(u), flags)
            })
            .collect();
        users.sort_unstable();
        put_len(&mut out, users.len());
        for (user, flags) in users {
            out.push(flags);
            put_id(&mut out, user);
        }
        let mut products: Vec<(&str, u64, u64)> = acc
            .views
            .keys()
            .chain(acc.bought.keys().filter(|p| !acc.views.contains_key(p)))
            .map(|p| {
                let count = |counts: &Counts| counts.get(p).copied().unwrap_or(0);
                (
                    self.products.name(*p),
                    count(&acc.views),
                    count(&acc.bought),
                )
            })
            .collect();
        products.sort_unstable();
        put_len(&mut out, products.len());
        for (product, views, bought) in products {
            put_id(&mut out, product);
            out.extend_from_slice(&views.to_be_bytes());
            out.extend_from_slice(&bought.to_be_bytes());
        }
        out
    }

    /// Adds a day encoded by [`Aggregate::encode_day`] to this aggregation's
    /// `day`, as if its events had been added here: counts add up, sets
    /// join. Bytes that are not such an encoding change nothing.
    pub fn merge_encoded(&mut self, day: NaiveDate, encoded: &[u8]) -> Result<(), Malformed> {
        let mut decoded = Aggregate::default();
        decode_day(&mut decoded, day, encoded).ok_or(Malformed { day })?;
        self.merge(decoded);
        Ok(())
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

/// An encoded day that does not decode: stored state written by something
/// else than [`Aggregate::encode_day`], or cut short.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the stored state of {day} is not a day encoded by this version")]
pub struct Malformed {
    pub day: NaiveDate,
}

/// What a user did on a day, in [`Aggregate::encode_day`]'s user entries.
const ACTIVE: u8 = 1;
const VIEWING: u8 = 2;
const PURCHASING: u8 = 4;

fn put_len(out: &mut Vec<u8>, n: usize) {
    let n = u32::try_from(n).expect("fewer than 2^32 entries a day");
    out.extend_from_slice(&n.to_be_bytes());
}

fn put_id(out: &mut Vec<u8>, id: &str) {
    put_len(out, id.len());
    out.extend_from_slice(id.as_bytes());
}

/// Reads an encoded day into `into` (empty); `None` when the bytes are not one.
fn decode_day(into: &mut Aggregate, day: NaiveDate, encoded: &[u8]) -> Option<()> {
    let mut input = Reader(encoded);
    let acc = into.days.entry(day).or_default();
    let d = &mut acc.day;
    for n in [
        &mut d.views,
        &mut d.clicks,
        &mut d.add_to_cart,
        &mut d.purchases,
        &mut d.revenue_cents,
    ] {
        *n = input.u64()?;
    }
    for _ in 0..input.u32()? {
        let flags = input.byte()?;
        let user = into.users.number(input.id()?);
        for (flag, set) in [
            (ACTIVE, &mut acc.active),
            (VIEWING, &mut acc.viewing),
            (PURCHASING, &mut acc.purchasing),
        ] {
            if flags & flag != 0 {
                set.insert(user);
            }
        }
    }
    for _ in 0..input.u32()? {
        let product = into.products.number(input.id()?);
        for counts in [&mut acc.views, &mut acc.bought] {
            match input.u64()? {
                0 => {}
                n => {
                    counts.insert(product, n);
                }
            }
        }
    }
    input.0.is_empty().then_some(())
}

/// The unread rest of an encoded day.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let (head, rest) = self.0.split_at_checked(n)?;
        self.0 = rest;
        Some(head)
    }

    fn byte(&mut self) -> Option<u8> {
        Some(self.take(1)?[0])
    }

    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_be_bytes(self.take(4)?.try_into().ok()?))
    }

    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_be_bytes(self.take(8)?.try_into().ok()?))
    }

    fn id(&mut self) -> Option<&'a str> {
        let len = self.u32()? as usize;
        std::str::from_utf8(self.take(len)?).ok()
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

    #[test]
    fn a_day_merged_from_its_encoding_equals_the_day_counted_whole() {
        let (d1, d2) = (
            NaiveDate::from_ymd_opt(2026, 11, 20).unwrap(),
            NaiveDate::from_ymd_opt(2026, 11, 21).unwrap(),
        );
        let old = [
            (d1, i("u1", "a", Action::View, None)),
            (d1, i("u2", "b", Action::Purchase, Some(700))),
            (d2, i("u1", "a", Action::Click, None)),
        ];
        let new = [
            (d1, i("u1", "b", Action::View, None)),
            (d1, i("u3", "b", Action::Purchase, Some(50))),
            (d1, i("u2", "c", Action::AddToCart, None)),
        ];
        let mut whole = Aggregate::default();
        old.iter().chain(&new).for_each(|(d, e)| whole.add(*d, e));

        let mut before = Aggregate::default();
        old.iter().for_each(|(d, e)| before.add(*d, e));
        let mut after = Aggregate::default();
        new.iter().for_each(|(d, e)| after.add(*d, e));
        for day in before.days() {
            after.merge_encoded(day, &before.encode_day(day)).unwrap();
        }
        assert_eq!(after.encode_day(d1), whole.encode_day(d1));
        assert_eq!(after.finish(), whole.finish());

        let encoded = before.encode_day(d1);
        let mut target = Aggregate::default();
        let cut = target.merge_encoded(d1, &encoded[..encoded.len() - 1]);
        assert_eq!(cut, Err(Malformed { day: d1 }));
        let mut longer = encoded.clone();
        longer.push(0);
        assert!(target.merge_encoded(d1, &longer).is_err());
        assert!(target.days().is_empty(), "a malformed day adds nothing");
    }
}
