//! Where each day of a range sits on a chart's x-axis. Every day has its
//! place, so a day without data is a visible gap rather than its neighbours
//! moving together (a 1990 day never sits next to 2026-11). An empty stretch
//! long enough to squeeze the data into slivers is collapsed into a break of
//! fixed width, which the chart marks with its length.

use chrono::NaiveDate;

/// viewBox width and the plot's horizontal margins (for y labels).
pub const WIDTH: f64 = 960.0;
pub const LEFT: f64 = 76.0;
pub const RIGHT: f64 = 14.0;
/// Width of a collapsed empty stretch.
pub const BREAK: f64 = 26.0;
/// Empty stretches at least this long, and at least an eighth of the range,
/// are collapsed.
const COLLAPSE_DAYS: i64 = 60;
/// Least distance between two x labels.
const LABEL_GAP: f64 = 64.0;

/// One piece of the x-axis: a run of days at one step each, or a collapsed
/// empty stretch.
#[derive(Debug, Clone, PartialEq)]
pub enum Piece {
    Days {
        first: NaiveDate,
        last: NaiveDate,
        x: f64,
    },
    Break {
        first: NaiveDate,
        last: NaiveDate,
        x: f64,
    },
}

/// Where each day of a range sits on the x-axis.
#[derive(Debug)]
pub struct Axis {
    pub pieces: Vec<Piece>,
    pub step: f64,
}

impl Axis {
    /// Lays out `from..=to` with the given days with data (sorted).
    pub fn new(from: NaiveDate, to: NaiveDate, data: &[NaiveDate]) -> Axis {
        let span = (to - from).num_days() + 1;
        let mut collapsed = Vec::new();
        if !data.is_empty() {
            let mut edges = vec![from.pred_opt().unwrap_or(from)];
            edges.extend_from_slice(data);
            edges.push(to.succ_opt().unwrap_or(to));
            for pair in edges.windows(2) {
                let empty = (pair[1] - pair[0]).num_days() - 1;
                if empty >= COLLAPSE_DAYS && empty * 8 >= span {
                    // Days between two others: both exist.
                    if let (Some(first), Some(last)) = (pair[0].succ_opt(), pair[1].pred_opt()) {
                        collapsed.push((first, last));
                    }
                }
            }
        }
        let hidden: i64 = collapsed
            .iter()
            .map(|(a, b)| (*b - *a).num_days() + 1)
            .sum();
        let visible = (span - hidden).max(1) as f64;
        let step = (WIDTH - LEFT - RIGHT - BREAK * collapsed.len() as f64) / visible;
        let (mut pieces, mut cursor, mut x) = (Vec::new(), from, LEFT);
        for (first, last) in collapsed {
            if cursor < first {
                let days = (first - cursor).num_days() as f64;
                let last_day = first.pred_opt().unwrap_or(first);
                pieces.push(Piece::Days {
                    first: cursor,
                    last: last_day,
                    x,
                });
                x += days * step;
            }
            pieces.push(Piece::Break { first, last, x });
            x += BREAK;
            cursor = last.succ_opt().unwrap_or(last);
        }
        if cursor <= to {
            pieces.push(Piece::Days {
                first: cursor,
                last: to,
                x,
            });
        }
        Axis { pieces, step }
    }

    /// The left edge of `day`'s place; `None` inside a collapsed stretch.
    pub fn x(&self, day: NaiveDate) -> Option<f64> {
        self.pieces.iter().find_map(|piece| match piece {
            Piece::Days { first, last, x } if (*first..=*last).contains(&day) => {
                Some(x + (day - *first).num_days() as f64 * self.step)
            }
            _ => None,
        })
    }

    /// Days to label: greedily, at least [`LABEL_GAP`] apart, each run of
    /// days starting with a label where it fits.
    pub fn labels(&self) -> Vec<(NaiveDate, f64)> {
        let every = (LABEL_GAP / self.step).ceil().max(1.0) as usize;
        let mut out: Vec<(NaiveDate, f64)> = Vec::new();
        for piece in &self.pieces {
            let Piece::Days { first, last, .. } = piece else {
                continue;
            };
            for day in first.iter_days().take_while(|d| d <= last).step_by(every) {
                let center = self.x(day).unwrap_or(LEFT) + self.step / 2.0;
                if out
                    .last()
                    .is_none_or(|(_, prev)| center - prev >= LABEL_GAP)
                {
                    out.push((day, center));
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(text: &str) -> NaiveDate {
        text.parse().unwrap()
    }

    #[test]
    fn missing_days_keep_their_place_and_long_gaps_collapse() {
        let data = [d("2026-11-10"), d("2026-11-12")];
        let axis = Axis::new(d("2026-11-10"), d("2026-11-12"), &data);
        let (a, b) = (axis.x(data[0]).unwrap(), axis.x(data[1]).unwrap());
        assert!((b - a - 2.0 * axis.step).abs() < 1e-9, "a gap of one day");

        let data = [d("2019-06-01"), d("2026-11-10"), d("2026-11-12")];
        let axis = Axis::new(data[0], data[2], &data);
        assert!(matches!(axis.pieces[1], Piece::Break { .. }), "{axis:?}");
        assert_eq!(axis.x(d("2022-01-01")), None);
        let (old, new) = (axis.x(data[0]).unwrap(), axis.x(data[1]).unwrap());
        assert!(new - old >= BREAK, "the break sits between them");
        assert!(axis.step > 100.0, "the data days are not slivers");
    }
}
