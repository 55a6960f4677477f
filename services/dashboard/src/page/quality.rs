//! The page's data-quality panels: the Kappa audit's last verdict (one
//! line) and dead letters by reason per day (a chart of the daily total
//! and a table by reason code).

use std::collections::BTreeMap;
use std::fmt::Write;

use super::chart::{Chart, Unit};
use super::{esc, format};
use crate::audit::AuditReport;
use crate::dead_letters::{select, Snapshot};

/// Days with dead letters the page shows.
const DLQ_DAYS: usize = 30;

/// Rows of the dead-letter table (the newest days).
const DLQ_ROWS: usize = 14;

/// One line: whether the last audit over every day found both halves in
/// agreement, and where they differ if not.
pub fn audit_line(report: Option<&AuditReport>) -> String {
    let Some(report) = report else {
        return r#"<p class="audit" id="audit">Kappa audit: none yet (one runs after every full replay; <code>GET /api/audit</code> with the token runs one now).</p>"#.to_owned();
    };
    let when = report.audited_at.format("%Y-%m-%d %H:%M:%S UTC");
    let compared = format!(
        "run #{} against <code>{}</code>, {} days, {} records read to align the offsets",
        report.run_id,
        esc(&report.consumer),
        format::count(report.days.len() as u64),
        format::count(report.records_read)
    );
    if report.zero_drift {
        return format!(
            r#"<p class="audit ok" id="audit">Kappa audit at {when}: <b>zero drift</b>, the streaming and batch halves agree ({compared}).</p>"#
        );
    }
    let mismatches: Vec<String> = report
        .mismatches()
        .take(5)
        .map(|(day, measure, c)| {
            format!(
                "{day} {measure}: stream {} vs batch {} ({:+})",
                c.stream, c.batch, c.difference
            )
        })
        .collect();
    let count = report.mismatches().count();
    let more = if count > mismatches.len() {
        format!("; {} more", count - mismatches.len())
    } else {
        String::new()
    };
    format!(
        r#"<p class="audit drift" id="audit">Kappa audit at {when}: <b>drift</b> in {count} day-measures ({compared}): {}{more}.</p>"#,
        esc(&mismatches.join("; "))
    )
}

/// Dead letters per day (a chart of the total) and by reason (a table of
/// the newest days); what the counts could not be read says so.
pub fn dead_letters_panel(topic: &str, snapshot: Result<&Snapshot, &anyhow::Error>) -> String {
    let mut html = format!(
        r#"<h2>Dead letters by reason</h2><p class="sub">Records on <code>{}</code> per day they were dead-lettered, by reason code.</p>"#,
        esc(topic)
    );
    let snapshot = match snapshot {
        Ok(snapshot) => snapshot,
        Err(error) => {
            let _ = write!(
                html,
                r#"<p class="empty" id="dlq-unavailable">The dead-letter topic could not be read: {}.</p>"#,
                esc(&format!("{error:#}"))
            );
            return html;
        }
    };
    let days = select(&snapshot.days, None, None, DLQ_DAYS);
    let (Some(first), Some(last)) = (days.keys().next(), days.keys().next_back()) else {
        html.push_str(r#"<p class="empty" id="dlq-none">No dead letters.</p>"#);
        return html;
    };
    let points = days
        .iter()
        .map(|(d, codes)| (*d, codes.values().sum::<u64>() as f64))
        .collect();
    html.push_str(
        &Chart {
            title: "Dead letters per day",
            id: "chart-dlq",
            unit: Unit::Count,
            range: (*first, *last),
            points,
        }
        .render(),
    );
    let mut codes: BTreeMap<&str, u64> = BTreeMap::new();
    for by_code in days.values() {
        for (code, n) in by_code {
            *codes.entry(code).or_default() += n;
        }
    }
    html.push_str(r#"<div class="scroll"><table id="dlq"><tr><th>day</th>"#);
    for code in codes.keys() {
        let _ = write!(html, "<th>{}</th>", esc(code));
    }
    html.push_str("<th>total</th></tr>");
    for (day, by_code) in days.iter().rev().take(DLQ_ROWS) {
        let _ = write!(html, r#"<tr data-day="{day}"><td>{day}</td>"#);
        for code in codes.keys() {
            let n = by_code.get(*code).copied().unwrap_or(0);
            let _ = write!(
                html,
                r#"<td data-code="{}">{}</td>"#,
                esc(code),
                format::count(n)
            );
        }
        let _ = write!(
            html,
            r#"<td class="total">{}</td></tr>"#,
            format::count(by_code.values().sum())
        );
    }
    html.push_str("</table></div>");
    if !snapshot.complete {
        html.push_str(r#"<p class="sub" id="dlq-partial">Still counting: the topic was not read to its end in time.</p>"#);
    }
    html
}
