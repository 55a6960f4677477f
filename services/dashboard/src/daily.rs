//! Which days `GET /api/metrics/daily` and the page show, and what their
//! totals may say.
//!
//! With no range the answer is the newest [`DEFAULT_DATA_DAYS`] days that have
//! data: `to` is the newest day with data, `from` the oldest of the
//! [`DEFAULT_DATA_DAYS`] newest days with data that lie within ten years
//! ([`MAX_DAYS`]) up to `to`. Every day from `from` to `to` is listed, the
//! empty ones as zeros, so gaps are explicit. The ten-year window keeps one
//! old backfill (a 1990 event beside 2026 data) from stretching the default
//! answer over decades; such days are reached with an explicit range.
//!
//! An explicit range answers exactly its days and is refused (naming the
//! field) when `to` is before `from` or when it covers more than ten years.
//! With one end given, the other follows the rule above: a missing `to` is
//! the newest day with data (or `from` when that is later), a missing `from`
//! the oldest of the newest days with data up to `to`.
//!
//! Totals are sums of the additive counts (views, clicks, ... revenue) and
//! the number of days with data. Distinct users (active, viewing,
//! purchasing) and conversion do not add up over days (one user active on
//! two days is one user), and the stored per-day numbers cannot give them
//! over a range, so totals leave them out rather than state a wrong number.

use std::collections::BTreeMap;

use chrono::NaiveDate;
use serde::Serialize;

use crate::aggregate::Day;

/// The most days one answer covers: ten years.
pub const MAX_DAYS: i64 = 3660;

/// Days with data in the default range.
pub const DEFAULT_DATA_DAYS: usize = 30;

/// Why a range is refused, with the request field to blame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RangeError {
    pub field: &'static str,
    pub message: String,
}

/// Sums over a range of the counts that add up over days.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Totals {
    pub views: u64,
    pub clicks: u64,
    pub add_to_cart: u64,
    pub purchases: u64,
    pub revenue_cents: u64,
    pub days_with_data: u64,
}

/// The days of one answer: the resolved range and its days with data.
#[derive(Debug, Clone, PartialEq)]
pub struct Daily {
    /// `None`: no range was asked for and the run has no data.
    pub range: Option<(NaiveDate, NaiveDate)>,
    /// The run's days with data within the range.
    pub data: BTreeMap<NaiveDate, Day>,
}

impl Daily {
    /// Resolves the asked range against a run's stored days (see the module
    /// documentation) and keeps the days with data within it.
    pub fn new(
        from: Option<NaiveDate>,
        to: Option<NaiveDate>,
        stored: &BTreeMap<NaiveDate, Day>,
    ) -> Result<Daily, RangeError> {
        let range = resolve(from, to, stored)?;
        let data = match range {
            Some((first, last)) => stored
                .range(first..=last)
                .map(|(d, day)| (*d, day.clone()))
                .collect(),
            None => BTreeMap::new(),
        };
        Ok(Daily { range, data })
    }

    /// Every day of the range in order, the ones without data as zeros.
    pub fn every_day(&self) -> impl Iterator<Item = (NaiveDate, Day)> + '_ {
        let days = self.range.map(|(first, last)| {
            first
                .iter_days()
                .take_while(move |d| *d <= last)
                .map(|d| (d, self.data.get(&d).cloned().unwrap_or_default()))
        });
        days.into_iter().flatten()
    }

    /// The sums over the range.
    pub fn totals(&self) -> Totals {
        self.data.values().fold(Totals::default(), |mut t, d| {
            t.views += d.views;
            t.clicks += d.clicks;
            t.add_to_cart += d.add_to_cart;
            t.purchases += d.purchases;
            t.revenue_cents += d.revenue_cents;
            t.days_with_data += 1;
            t
        })
    }
}

/// The range to answer, `None` when none was asked and there is no data.
fn resolve(
    from: Option<NaiveDate>,
    to: Option<NaiveDate>,
    stored: &BTreeMap<NaiveDate, Day>,
) -> Result<Option<(NaiveDate, NaiveDate)>, RangeError> {
    let newest = stored.keys().next_back().copied();
    let Some(last) = to.or(newest.map(|n| from.map_or(n, |f| n.max(f)))).or(from) else {
        return Ok(None);
    };
    let first = match from {
        Some(first) => first,
        None => default_from(last, stored),
    };
    if last < first {
        return Err(RangeError {
            field: "to",
            message: format!("`to` ({last}) must not be before `from` ({first})"),
        });
    }
    let days = (last - first).num_days() + 1;
    if days > MAX_DAYS {
        let field = if to.is_some() { "to" } else { "from" };
        return Err(RangeError {
            field,
            message: format!(
                "`{field}`: {first} to {last} is {days} days; at most {MAX_DAYS} (ten years) per request"
            ),
        });
    }
    Ok(Some((first, last)))
}

/// The oldest of the newest days with data up to `last`, within ten years;
/// `last` itself when there is none.
fn default_from(last: NaiveDate, stored: &BTreeMap<NaiveDate, Day>) -> NaiveDate {
    let window = last
        .checked_sub_days(chrono::Days::new(MAX_DAYS as u64 - 1))
        .unwrap_or(NaiveDate::MIN);
    stored
        .range(window..=last)
        .rev()
        .take(DEFAULT_DATA_DAYS)
        .last()
        .map_or(last, |(d, _)| *d)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(text: &str) -> NaiveDate {
        text.parse().unwrap()
    }

    fn stored(days: &[&str]) -> BTreeMap<NaiveDate, Day> {
        days.iter()
            .map(|t| {
                let day = Day {
                    views: 2,
                    active_users: 1,
                    ..Day::default()
                };
                (d(t), day)
            })
            .collect()
    }

    #[test]
    fn the_default_is_the_newest_days_with_data_within_ten_years() {
        let data = stored(&["1990-03-14", "2026-08-01", "2026-08-03"]);
        let daily = Daily::new(None, None, &data).unwrap();
        assert_eq!(daily.range, Some((d("2026-08-01"), d("2026-08-03"))));
        let days: Vec<_> = daily.every_day().map(|(d, day)| (d, day.views)).collect();
        assert_eq!(
            days,
            vec![
                (d("2026-08-01"), 2),
                (d("2026-08-02"), 0),
                (d("2026-08-03"), 2)
            ]
        );
        assert_eq!(daily.totals().views, 4);
        assert_eq!(daily.totals().days_with_data, 2);
    }

    #[test]
    fn the_default_covers_at_most_thirty_days_with_data() {
        let texts: Vec<String> = (1..=31).map(|n| format!("2026-07-{n:02}")).collect();
        let data = stored(&texts.iter().map(String::as_str).collect::<Vec<_>>());
        let daily = Daily::new(None, None, &data).unwrap();
        assert_eq!(daily.range, Some((d("2026-07-02"), d("2026-07-31"))));
    }

    #[test]
    fn explicit_ranges_are_bounded_and_name_the_field() {
        let data = stored(&["1990-03-14", "2026-08-03"]);
        let backwards = Daily::new(Some(d("2026-08-03")), Some(d("2026-08-01")), &data);
        assert_eq!(backwards.unwrap_err().field, "to");
        let too_long = Daily::new(Some(d("1990-01-01")), None, &data);
        assert_eq!(too_long.unwrap_err().field, "from");
        let old = Daily::new(Some(d("1990-03-14")), Some(d("1990-03-14")), &data).unwrap();
        assert_eq!(old.totals().views, 2);
    }

    #[test]
    fn no_data_and_no_range_is_an_empty_answer() {
        let daily = Daily::new(None, None, &BTreeMap::new()).unwrap();
        assert_eq!((daily.range, daily.every_day().count()), (None, 0));
        let later = Daily::new(Some(d("2027-01-01")), None, &stored(&["2026-08-03"])).unwrap();
        assert_eq!(later.range, Some((d("2027-01-01"), d("2027-01-01"))));
    }
}
