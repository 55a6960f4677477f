//! The replays table: per run its trigger and what it read (full,
//! incremental after which run, or a custom range), state, % done with a
//! bar, the time left, records read and rejected, how long it took, and the
//! error of a failed run. A running run's numbers come from the live
//! progress of this instance; the page's script refreshes them every second.

use std::collections::HashMap;
use std::fmt::Write;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use shared::replay::{Progress, ProgressView};

use super::{esc, format};
use crate::store::{Run, RunKind, RunState};

/// Column headers; the script and the tests find cells by these classes.
const HEADER: &str = r#"<table id="runs"><tr><th>#</th><th>trigger</th><th>range</th><th>state</th><th>% done</th><th>ETA</th><th>records</th><th>rejected</th><th>duration</th><th>finished</th><th>error</th></tr>"#;

/// The table of `runs`, newest first.
pub fn table(
    runs: &[Run],
    current: Option<i64>,
    live: &HashMap<i64, Arc<Progress>>,
    now: DateTime<Utc>,
) -> String {
    let mut html = String::from(HEADER);
    for run in runs {
        let view = live.get(&run.id).map(|p| p.view());
        row(&mut html, run, current == Some(run.id), view, now);
    }
    html.push_str("</table>");
    html
}

fn row(
    html: &mut String,
    run: &Run,
    current: bool,
    view: Option<ProgressView>,
    now: DateTime<Utc>,
) {
    let fraction = view.map(|v| v.fraction).unwrap_or(match run.state {
        RunState::Succeeded => 1.0,
        _ => 0.0,
    });
    let id = run.id;
    let link = if run.state == RunState::Succeeded {
        format!(r#"<a href="/?run={id}">{id}</a>"#)
    } else {
        id.to_string()
    };
    let badge = if current {
        r#" <span class="current">current</span>"#
    } else {
        ""
    };
    let eta = match (view.and_then(|v| v.eta_seconds), run.state) {
        (Some(seconds), RunState::Running) => format::duration(seconds),
        _ => "–".to_owned(),
    };
    let records = match (view, run.state) {
        (Some(v), RunState::Running) => {
            format!("{} / {}", format::count(v.read), format::count(v.total))
        }
        _ => run
            .records
            .map(|r| format::count(r.max(0) as u64))
            .unwrap_or_default(),
    };
    let duration = match (run.started_at, run.finished_at) {
        (Some(start), Some(end)) => format::duration(seconds(end - start)),
        (Some(start), None) => format::duration(seconds(now - start)),
        _ => "–".to_owned(),
    };
    let _ = write!(
        html,
        r#"<tr data-run="{id}"><td>{link}</td><td>{}</td><td class="range">{}</td><td class="state {state}">{state}</td><td class="done"><div class="bar" data-run="{id}"><div style="width:{:.1}%"></div></div><span class="pct" data-run="{id}">{:.1}%</span>{badge}</td><td class="eta" data-run="{id}">{eta}</td><td class="records">{records}</td><td class="rejected">{}</td><td class="duration">{duration}</td><td>{}</td><td class="error">{}</td></tr>"#,
        run.trigger.as_str(),
        range(run),
        fraction * 100.0,
        fraction * 100.0,
        run.rejected
            .map(|r| format::count(r.max(0) as u64))
            .unwrap_or_default(),
        run.finished_at
            .map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string())
            .unwrap_or_default(),
        esc(run.error.as_deref().unwrap_or_default()),
        state = run.state.as_str(),
    );
}

/// What a run read: "full", "incremental after #base", the custom range,
/// or, for an automatic run that has not started, what decides it.
fn range(run: &Run) -> String {
    match (run.kind, run.base_run_id) {
        (Some(RunKind::Full), _) => "full".to_owned(),
        (Some(RunKind::Incremental), Some(base)) => format!("incremental after #{base}"),
        (Some(RunKind::Incremental), None) => "incremental".to_owned(),
        (None, _) if run.covers_topic() => "incremental or full (at start)".to_owned(),
        (Some(RunKind::Range) | None, _) => {
            let time = |t: Option<DateTime<Utc>>, none: &str| {
                t.map_or(none.to_owned(), |t| t.format("%Y-%m-%d %H:%M").to_string())
            };
            format!(
                "{} → {}",
                time(run.from_time, "earliest"),
                time(run.to_time, "end")
            )
        }
    }
}

fn seconds(delta: chrono::TimeDelta) -> f64 {
    delta.num_milliseconds() as f64 / 1000.0
}
