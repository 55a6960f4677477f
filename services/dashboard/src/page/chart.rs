//! One bar chart as inline SVG on a continuous time axis (laid out by
//! [`Axis`]): a day without data is a visible gap, a long empty stretch a
//! break with a marker saying how long it is. The y-axis has round ticks
//! (1, 2 or 5 times a power of ten); the x-axis prints the year under its
//! labels when the range spans years. The SVG scales to the width of the
//! page (viewBox, `width="100%"`).

use std::fmt::Write;

use chrono::{Datelike, NaiveDate};

use super::axis::{Axis, Piece, BREAK, LEFT, RIGHT, WIDTH};
use super::format;

/// viewBox height and the plot's vertical margins (width and horizontal
/// margins are the x-axis's: [`super::axis`]).
const HEIGHT: f64 = 230.0;
const TOP: f64 = 12.0;
const BOTTOM: f64 = 54.0;

/// What a series counts, which decides how its numbers are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    Count,
    /// Values are cents, printed as dollars.
    Cents,
    /// Values are 0..1, printed as percentages.
    Ratio,
}

impl Unit {
    fn value(self, v: f64) -> String {
        match self {
            Unit::Count => format::count_tick(v),
            Unit::Cents => format::money(v.round().max(0.0) as u64),
            Unit::Ratio => format::percent(v),
        }
    }

    fn tick(self, v: f64, step: f64) -> String {
        match self {
            Unit::Count => format::count_tick(v),
            Unit::Cents => format::money_tick(v, step),
            Unit::Ratio => format::percent_tick(v, step),
        }
    }

    /// The finest tick step that means something (a whole event, a cent).
    fn min_step(self) -> f64 {
        match self {
            Unit::Count | Unit::Cents => 1.0,
            Unit::Ratio => 0.001,
        }
    }
}

/// Round y ticks from 0 past `max`: about four steps of 1, 2 or 5 x 10^n.
pub fn ticks(max: f64, min_step: f64) -> Vec<f64> {
    let max = max.max(min_step);
    let raw = max / 4.0;
    let magnitude = 10f64.powf(raw.log10().floor());
    let nice = match raw / magnitude {
        f if f <= 1.0 => 1.0,
        f if f <= 2.0 => 2.0,
        f if f <= 5.0 => 5.0,
        _ => 10.0,
    };
    let step = (nice * magnitude).max(min_step);
    let n = (max / step - 1e-9).ceil().max(1.0) as usize;
    (0..=n).map(|i| i as f64 * step).collect()
}

/// A chart of one series over `from..=to`; `points` are the days with data.
pub struct Chart<'a> {
    pub title: &'a str,
    pub id: &'a str,
    pub unit: Unit,
    pub range: (NaiveDate, NaiveDate),
    pub points: Vec<(NaiveDate, f64)>,
}

impl Chart<'_> {
    pub fn render(&self) -> String {
        let (from, to) = self.range;
        let data: Vec<NaiveDate> = self.points.iter().map(|p| p.0).collect();
        let axis = Axis::new(from, to, &data);
        let (title, id) = (self.title, self.id);
        let mut svg = format!(
            r#"<figure><figcaption>{title} <span class="range">{from} – {to}</span></figcaption><svg id="{id}" class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" width="100%" preserveAspectRatio="xMidYMid meet" role="img" aria-label="{title}, {from} to {to}">"#
        );
        let max = self.points.iter().map(|p| p.1).fold(0.0, f64::max);
        let ticks = ticks(max, self.unit.min_step());
        self.y_axis(&mut svg, &ticks);
        let top = *ticks.last().expect("at least two ticks");
        let base = HEIGHT - BOTTOM;
        let width = (axis.step * 0.8).max(0.6);
        for (day, value) in &self.points {
            let Some(x) = axis.x(*day) else { continue };
            // A value above zero stays visible however small beside the top.
            let h = ((base - TOP) * value / top).max(if *value > 0.0 { 1.5 } else { 0.0 });
            let _ = write!(
                svg,
                r#"<rect class="day" x="{:.2}" y="{:.2}" width="{width:.2}" height="{h:.2}" data-day="{day}" data-value="{value}"><title>{day}: {}</title></rect>"#,
                x + (axis.step - width) / 2.0,
                base - h,
                self.unit.value(*value)
            );
        }
        x_axis(&mut svg, &axis, from.year() != to.year());
        if self.points.is_empty() {
            let _ = write!(
                svg,
                r#"<text x="{}" y="{}" class="nodata">no data in this range</text>"#,
                (LEFT + WIDTH - RIGHT) / 2.0,
                (TOP + base) / 2.0
            );
        }
        svg.push_str("</svg></figure>");
        svg
    }

    /// Grid lines and labels at the round ticks.
    fn y_axis(&self, svg: &mut String, ticks: &[f64]) {
        let (top, base) = (*ticks.last().expect("ticks"), HEIGHT - BOTTOM);
        let step = ticks.get(1).copied().unwrap_or(1.0);
        for tick in ticks {
            let y = base - (base - TOP) * tick / top;
            let _ = write!(
                svg,
                r#"<line class="grid" x1="{LEFT}" x2="{}" y1="{y:.2}" y2="{y:.2}"/><text class="ytick" x="{}" y="{:.2}" data-tick="{tick}">{}</text>"#,
                WIDTH - RIGHT,
                LEFT - 6.0,
                y + 3.5,
                self.unit.tick(*tick, step)
            );
        }
        let _ = write!(
            svg,
            r#"<line class="axis" x1="{LEFT}" x2="{LEFT}" y1="{TOP}" y2="{base}"/>"#
        );
    }
}

/// The baseline, day labels (with the year under them when the range spans
/// years), and a marker on each collapsed stretch, its length on a row of
/// its own below the years: beside the first day after a break it would
/// meet that day's year.
fn x_axis(svg: &mut String, axis: &Axis, years: bool) {
    let base = HEIGHT - BOTTOM;
    let _ = write!(
        svg,
        r#"<line class="axis" x1="{LEFT}" x2="{}" y1="{base}" y2="{base}"/>"#,
        WIDTH - RIGHT
    );
    let mut year = None;
    for (day, x) in axis.labels() {
        let _ = write!(
            svg,
            r#"<text class="tick" x="{x:.2}" y="{}">{}</text>"#,
            base + 14.0,
            day.format("%m-%d")
        );
        if years && year != Some(day.year()) {
            year = Some(day.year());
            let _ = write!(
                svg,
                r#"<text class="year" x="{x:.2}" y="{}">{}</text>"#,
                base + 28.0,
                day.year()
            );
        }
    }
    for piece in &axis.pieces {
        let Piece::Break { first, last, x } = piece else {
            continue;
        };
        let days = (*last - *first).num_days() + 1;
        let (a, b) = (x + BREAK * 0.3, x + BREAK * 0.7);
        let _ = write!(
            svg,
            r#"<g class="gap-break" data-from="{first}" data-to="{last}"><title>no data from {first} to {last} ({} days)</title><rect class="gap-band" x="{x:.2}" y="{TOP}" width="{BREAK}" height="{}"/><path class="break" d="M{:.2} {:.2} L{:.2} {:.2} M{:.2} {:.2} L{:.2} {:.2}"/><text class="gap" x="{:.2}" y="{}">{}</text></g>"#,
            format::count(days as u64),
            base - TOP,
            a - 3.0,
            base + 6.0,
            a + 3.0,
            base - 6.0,
            b - 3.0,
            base + 6.0,
            b + 3.0,
            base - 6.0,
            x + BREAK / 2.0,
            base + 44.0,
            format::span(days)
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_are_round() {
        assert_eq!(ticks(7.0, 1.0), vec![0.0, 2.0, 4.0, 6.0, 8.0]);
        assert_eq!(ticks(20.0, 1.0), vec![0.0, 5.0, 10.0, 15.0, 20.0]);
        assert_eq!(ticks(1234.0, 1.0), vec![0.0, 500.0, 1000.0, 1500.0]);
        assert_eq!(ticks(0.0, 1.0), vec![0.0, 1.0]);
        assert_eq!(ticks(0.37, 0.001).get(1), Some(&0.1));
    }
}
