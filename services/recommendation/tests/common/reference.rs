//! An independent reference of the recommendation model, written from its
//! documentation (README.md, "Watch recommendations change live" and the
//! API table; docs/architecture.md, "Recommendation state"). It calls
//! nothing of the `recommendation` crate and keeps plain linear scores (the
//! documented formula) where the service keeps base-2 logarithms added with
//! log-sum-exp, so the two agree only if the model does what the docs say.
//!
//! Where the docs leave a point open, a comment marked OPEN says so and how
//! `src/model.rs` or `src/query.rs` settles it.

use std::collections::{BTreeMap, HashMap, HashSet};

use chrono::{DateTime, NaiveDate, Utc};
use serde_json::Value;

/// Forward decay's fixed landmark (docs/architecture.md).
const LANDMARK: &str = "2026-01-01T00:00:00Z";
/// "decayed with a 7-day half-life" (README; the tests' configuration).
const HALF_LIFE_MS: f64 = 7.0 * 86_400_000.0;
/// "per user the last 10 distinct products and 50 purchases".
const RECENT: usize = 10;
const PURCHASED: usize = 50;
/// "per product 20 neighbours after pruning (pruned when a list reaches 40)".
const NEIGHBORS: usize = 20;
const PRUNE_AT: usize = 40;

/// An interaction's action.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    View,
    Click,
    AddToCart,
    Purchase,
}

impl Action {
    fn parse(name: &str) -> Option<Action> {
        Some(match name {
            "view" => Action::View,
            "click" => Action::Click,
            "add_to_cart" => Action::AddToCart,
            "purchase" => Action::Purchase,
            _ => return None,
        })
    }

    /// "purchase 8, add_to_cart 4, click 2, view 1" (README).
    fn weight(self) -> f64 {
        match self {
            Action::View => 1.0,
            Action::Click => 2.0,
            Action::AddToCart => 4.0,
            Action::Purchase => 8.0,
        }
    }
}

/// One interaction where the topic holds it.
#[derive(Debug, Clone)]
pub struct Interaction {
    /// The producer's event id: a repeat of one is skipped (README,
    /// `kafka.dedupe_window`; the tests stay far inside the window).
    pub id: Option<String>,
    pub partition: i32,
    pub offset: i64,
    pub user: String,
    pub product: String,
    pub action: Action,
    /// When it counts: its event time, but never after its record's
    /// timestamp (docs/architecture.md: "counts at the record's time").
    pub at: DateTime<Utc>,
    pub price_cents: i64,
}

impl Interaction {
    /// The interaction in a record's payload; `None` for anything else.
    pub fn parse(
        partition: i32,
        offset: i64,
        record_at: Option<DateTime<Utc>>,
        payload: &[u8],
    ) -> Option<Interaction> {
        let body: Value = serde_json::from_slice(payload).ok()?;
        if body["type"] != "interaction" {
            return None;
        }
        let event_at: Option<DateTime<Utc>> = body["ts"].as_str().and_then(|t| t.parse().ok());
        let at = match (event_at, record_at) {
            (Some(event), Some(record)) => event.min(record),
            (event, record) => event.or(record)?,
        };
        Some(Interaction {
            id: body["id"].as_str().map(str::to_owned),
            partition,
            offset,
            user: body["user_id"].as_str()?.to_owned(),
            product: body["product_id"].as_str()?.to_owned(),
            action: Action::parse(body["action"].as_str()?)?,
            at,
            price_cents: body["price_cents"].as_i64().unwrap_or(0),
        })
    }
}

/// Forward decay: `weight * 2^((t - landmark) / half_life)`.
fn decayed(weight: f64, at: DateTime<Utc>) -> f64 {
    let landmark: DateTime<Utc> = LANDMARK.parse().expect("a valid landmark");
    weight * ((at - landmark).num_milliseconds() as f64 / HALF_LIFE_MS).exp2()
}

/// Where a recommended product comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Similar,
    Popular,
}

/// One ranked product, its score relative to the newest event's time.
#[derive(Debug, Clone, PartialEq)]
pub struct Item {
    pub product: String,
    pub score: f64,
    pub source: Source,
}

/// One UTC day's counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Day {
    pub views: i64,
    pub clicks: i64,
    pub add_to_cart: i64,
    pub purchases: i64,
    pub revenue_cents: i64,
}

#[derive(Default)]
struct User {
    /// Distinct products, oldest first, with a decayed weight each.
    recent: Vec<(String, f64)>,
    purchased: Vec<String>,
}

/// OPEN (docs: "each partition's model"): whether the neighbour bound is
/// per partition or global. Per partition (`rec_cooc` is keyed by item and
/// partition, pruned in memory), and queries add the partitions' lists up.
#[derive(Default)]
struct Partition {
    users: HashMap<String, User>,
    cooc: HashMap<String, HashMap<String, f64>>,
    popularity: HashMap<String, f64>,
}

/// The model after a stream, with what the queries answer.
#[derive(Default)]
pub struct Reference {
    partitions: BTreeMap<i32, Partition>,
    newest: Option<DateTime<Utc>>,
    daily: BTreeMap<NaiveDate, Day>,
    /// Interactions applied and neighbour lists pruned (coverage).
    pub applied: usize,
    pub prunes: usize,
}

impl Reference {
    /// "events apply one by one in offset order" (per partition).
    pub fn new(mut events: Vec<Interaction>) -> Reference {
        events.sort_by_key(|e| (e.partition, e.offset));
        let mut reference = Reference::default();
        let mut seen = HashSet::new();
        for e in &events {
            if e.id
                .as_ref()
                .is_none_or(|id| seen.insert((e.partition, id)))
            {
                reference.apply(e);
            }
        }
        reference
    }

    fn apply(&mut self, e: &Interaction) {
        let w = decayed(e.action.weight(), e.at);
        let partition = self.partitions.entry(e.partition).or_default();
        let user = partition.users.entry(e.user.clone()).or_default();
        // OPEN: which weight a pair gets (the new interaction's alone, its
        // product with the other's, ...), in which directions, and in which
        // order a window is walked (it decides what a prune mid-walk keeps).
        // The model: the new interaction's weight, added to both (p, q) and
        // (q, p) for every other q in the window, oldest q first.
        for (other, _) in user.recent.iter().filter(|(q, _)| *q != e.product) {
            self.prunes += add_pair(&mut partition.cooc, &e.product, other, w);
            self.prunes += add_pair(&mut partition.cooc, other, &e.product, w);
        }
        // OPEN: what weight a product keeps in the window when engaged with
        // again. The model: it moves to the newest end with the larger of its
        // decayed weights (a later view can outweigh an earlier purchase).
        let kept = match user.recent.iter().position(|(q, _)| *q == e.product) {
            Some(i) => user.recent.remove(i).1.max(w),
            None => w,
        };
        user.recent.push((e.product.clone(), kept));
        if user.recent.len() > RECENT {
            user.recent.remove(0);
        }
        // OPEN: whether a repeated purchase refreshes its place among the
        // 50. The model: no, a product is remembered once, oldest dropped.
        if e.action == Action::Purchase && !user.purchased.contains(&e.product) {
            user.purchased.push(e.product.clone());
            if user.purchased.len() > PURCHASED {
                user.purchased.remove(0);
            }
        }
        // OPEN: what popularity counts. The model: every interaction, with
        // its action weight, decayed like everything else.
        *partition.popularity.entry(e.product.clone()).or_default() += w;
        self.newest = self.newest.max(Some(e.at));
        let day = self.daily.entry(e.at.date_naive()).or_default();
        match e.action {
            Action::View => day.views += 1,
            Action::Click => day.clicks += 1,
            Action::AddToCart => day.add_to_cart += 1,
            Action::Purchase => {
                day.purchases += 1;
                day.revenue_cents += e.price_cents;
            }
        }
        self.applied += 1;
    }

    /// The newest event's time ("now" for every score).
    pub fn newest(&self) -> Option<DateTime<Utc>> {
        self.newest
    }

    /// "weight 1 at that instant scores 1": the divisor of a linear score.
    fn now(&self) -> f64 {
        self.newest.map_or(1.0, |t| decayed(1.0, t))
    }

    /// Every product engaged with, sorted.
    pub fn products(&self) -> Vec<String> {
        let all: HashSet<&String> = self
            .partitions
            .values()
            .flat_map(|p| p.popularity.keys())
            .collect();
        sorted(all.into_iter().cloned())
    }

    /// Every user, sorted.
    pub fn users(&self) -> Vec<String> {
        let all: HashSet<&String> = self
            .partitions
            .values()
            .flat_map(|p| p.users.keys())
            .collect();
        sorted(all.into_iter().cloned())
    }

    /// Per UTC day, oldest first.
    pub fn daily(&self) -> Vec<(NaiveDate, Day)> {
        self.daily.iter().map(|(d, c)| (*d, *c)).collect()
    }

    /// Every product co-occurring with `product`, best first.
    pub fn similar(&self, product: &str) -> Vec<Item> {
        let mut scores: HashMap<String, f64> = HashMap::new();
        for list in self.partitions.values().filter_map(|p| p.cooc.get(product)) {
            for (q, s) in list {
                *scores.entry(q.clone()).or_default() += s;
            }
        }
        items(scores, self.now(), Source::Similar)
    }

    /// Every product by decayed popularity, best first.
    pub fn popular(&self) -> Vec<Item> {
        let mut scores: HashMap<String, f64> = HashMap::new();
        for (q, s) in self.partitions.values().flat_map(|p| &p.popularity) {
            *scores.entry(q.clone()).or_default() += s;
        }
        items(scores, self.now(), Source::Popular)
    }

    /// A user's full ranking (a query with limit n answers its first n) and
    /// how many candidates a purchase removed.
    ///
    /// OPEN: how recent products combine. The model (and README's "scores
    /// are relative to the newest event's time"): the sum over the window of
    /// the product's weight times its co-occurrence score, each relative to
    /// now. OPEN: what is excluded. Only purchases; the user's other recent
    /// products may be recommended. OPEN: "thin" history. Fewer co-occurrence
    /// candidates than the limit; popular products not purchased and not
    /// already listed fill up, after every co-occurrence candidate.
    pub fn for_user(&self, user: &str) -> (Vec<Item>, usize) {
        let mut recent: BTreeMap<&str, f64> = BTreeMap::new();
        let mut purchased: HashSet<&str> = HashSet::new();
        for state in self.partitions.values().filter_map(|p| p.users.get(user)) {
            for (q, w) in &state.recent {
                let kept = recent.entry(q.as_str()).or_insert(0.0);
                *kept = kept.max(*w);
            }
            purchased.extend(state.purchased.iter().map(String::as_str));
        }
        let now = self.now();
        let mut scores: HashMap<String, f64> = HashMap::new();
        let mut excluded = 0;
        for (item, w) in &recent {
            for list in self.partitions.values().filter_map(|p| p.cooc.get(*item)) {
                for (q, s) in list {
                    if purchased.contains(q.as_str()) {
                        excluded += 1;
                    } else {
                        *scores.entry(q.clone()).or_default() += (w / now) * (s / now);
                    }
                }
            }
        }
        let mut ranked = items(scores, 1.0, Source::Similar);
        let listed: HashSet<String> = ranked.iter().map(|i| i.product.clone()).collect();
        ranked.extend(
            self.popular().into_iter().filter(|i| {
                !listed.contains(&i.product) && !purchased.contains(i.product.as_str())
            }),
        );
        (ranked, excluded)
    }
}

/// Adds `w` to `a`'s score with `b`; a list reaching `PRUNE_AT` keeps its
/// `NEIGHBORS` best. 1 when it pruned.
fn add_pair(cooc: &mut HashMap<String, HashMap<String, f64>>, a: &str, b: &str, w: f64) -> usize {
    let list = cooc.entry(a.to_owned()).or_default();
    *list.entry(b.to_owned()).or_default() += w;
    if list.len() < PRUNE_AT {
        return 0;
    }
    let mut best = ranked(std::mem::take(list));
    best.truncate(NEIGHBORS);
    list.extend(best);
    1
}

/// Best first; "pruning breaks ties by product id". OPEN: ties in a
/// query's ranking. The model breaks them the same way.
fn ranked(scores: HashMap<String, f64>) -> Vec<(String, f64)> {
    let mut all: Vec<(String, f64)> = scores.into_iter().collect();
    all.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    all
}

/// Ranked, each score divided by `now`.
fn items(scores: HashMap<String, f64>, now: f64, source: Source) -> Vec<Item> {
    ranked(scores)
        .into_iter()
        .map(|(product, score)| Item {
            product,
            score: score / now,
            source,
        })
        .collect()
}

fn sorted(names: impl Iterator<Item = String>) -> Vec<String> {
    let mut all: Vec<String> = names.collect();
    all.sort();
    all
}
