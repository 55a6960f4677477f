//! The web page at `/`: daily activity and revenue charts, top products, the
//! list of runs with live progress, and a button to start a replay. Rendered
//! on the server as HTML with inline SVG, so it works offline (no CDN, no
//! chart library); a few lines of script refresh the runs and post replays.

use std::fmt::Write;

use axum::extract::State;
use axum::response::Html;
use chrono::NaiveDate;

use crate::aggregate::{conversion, Day};
use crate::store::{self, By, Run, RunState};
use crate::AppState;

/// Escapes text for HTML.
fn esc(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// A bar chart of one series: one `<rect>` per day, carrying its day and value.
fn bars(
    title: &str,
    id: &str,
    days: &[(NaiveDate, f64)],
    format: impl Fn(f64) -> String,
) -> String {
    let (width, height, pad) = (720.0, 180.0, 28.0);
    let max = days.iter().map(|d| d.1).fold(0.0, f64::max).max(1.0);
    let step = (width - 2.0 * pad) / days.len().max(1) as f64;
    let mut svg = format!(
        r#"<figure><figcaption>{title}</figcaption><svg id="{id}" viewBox="0 0 {width} {height}" role="img" aria-label="{title}">"#
    );
    for (i, (day, value)) in days.iter().enumerate() {
        let h = (height - 2.0 * pad) * value / max;
        let x = pad + i as f64 * step + step * 0.1;
        let y = height - pad - h;
        let _ = write!(
            svg,
            r#"<rect x="{x:.1}" y="{y:.1}" width="{:.1}" height="{h:.1}" data-day="{day}" data-value="{value}"><title>{day}: {}</title></rect>"#,
            step * 0.8,
            format(*value)
        );
        if days.len() <= 31 || i % (days.len() / 15).max(1) == 0 {
            let _ = write!(
                svg,
                r#"<text x="{:.1}" y="{:.1}" class="tick">{}</text>"#,
                x + step * 0.4,
                height - 8.0,
                day.format("%m-%d")
            );
        }
    }
    let _ = write!(
        svg,
        r#"<text x="{pad}" y="16" class="max">max {}</text></svg></figure>"#,
        format(max)
    );
    svg
}

fn progress_bar(run: &Run, fraction: f64) -> String {
    format!(
        r#"<div class="bar" data-run="{}"><div style="width:{:.1}%"></div></div>"#,
        run.id,
        fraction * 100.0
    )
}

/// Products by status, the joins still waiting and how long, the slowest branch.
fn products_panel(dag: &store::DagSummary) -> String {
    let mut html = String::from(r#"<h2>Products</h2><section class="cards" id="products">"#);
    for (status, count) in &dag.by_status {
        let _ = write!(
            html,
            r#"<div><b id="products-{status}">{count}</b>{status}</div>"#
        );
    }
    html.push_str("</section>");
    if let Some((kind, parts, mean)) = dag.branches.first() {
        let _ = write!(
            html,
            r#"<p class="sub" id="slowest-branch">Slowest branch: <b>{kind}</b>, {:.2} s on average from upload to result ({parts} parts); "#,
            mean
        );
        let others: Vec<String> = dag.branches[1..]
            .iter()
            .map(|(k, _, m)| format!("{k} {m:.2} s"))
            .collect();
        let _ = write!(html, "{}.</p>", esc(&others.join(", ")));
    }
    if !dag.waiting.is_empty() {
        html.push_str(r#"<table id="pending-joins"><tr><th>waiting product</th><th>missing parts</th><th>waited</th><th>deadline in</th></tr>"#);
        for (id, missing, waited, left) in &dag.waiting {
            let _ = write!(
                html,
                "<tr><td>{}</td><td>{}</td><td>{waited:.0} s</td><td>{:.0} s</td></tr>",
                esc(id),
                esc(&missing.join(", ")),
                left.max(0.0)
            );
        }
        html.push_str("</table>");
    }
    html
}

/// MapReduce jobs with their progress (chunks mapped, partitions reduced)
/// and the top pages of the newest job that succeeded.
fn mapreduce_panel(jobs: &[store::JobRow], top: Option<&(i64, Vec<(String, i64)>)>) -> String {
    let mut html = String::from(
        r#"<h2>MapReduce page counts <button id="mapreduce-run">Count pages now</button></h2><table id="mapreduce"><tr><th>job</th><th>state</th><th>mapped</th><th>reduced</th><th>lines</th><th>time</th></tr>"#,
    );
    let bar = |done: i64, total: i32| {
        let fraction = if total > 0 {
            done as f64 / f64::from(total)
        } else {
            1.0
        };
        format!(
            r#"<div class="bar" title="{done}/{total}"><div style="width:{:.1}%"></div></div>"#,
            fraction * 100.0
        )
    };
    for job in jobs {
        let _ = write!(
            html,
            r#"<tr><td>{}</td><td class="state mr-{}">{}</td><td>{}</td><td>{}</td><td>{}</td><td>{:.1} s</td></tr>"#,
            job.id,
            esc(&job.state),
            esc(&job.state),
            bar(job.chunks_done, job.chunks_total),
            bar(job.partitions_final, job.partitions_total),
            job.lines_total,
            job.seconds
        );
    }
    html.push_str("</table>");
    if let Some((id, pages)) = top {
        let _ = write!(
            html,
            r#"<table id="top-pages"><tr><th>top pages, job {id}</th><th>requests</th></tr>"#
        );
        for (page, count) in pages {
            let _ = write!(html, "<tr><td>{}</td><td>{count}</td></tr>", esc(page));
        }
        html.push_str("</table>");
    }
    html
}

pub async fn page(State(s): State<AppState>) -> Html<String> {
    let current = store::current(&s.pool).await.ok().flatten();
    let list = store::list(&s.pool, 10).await.unwrap_or_default();
    let days: Vec<(NaiveDate, Day)> = match &current {
        Some(run) => store::stored_days(&s.pool, run.id)
            .await
            .unwrap_or_default()
            .into_iter()
            .collect(),
        None => Vec::new(),
    };
    let mut html = String::from(HEAD);
    match &current {
        None => html.push_str(
            r#"<p class="empty" id="no-run">No replay has succeeded yet: start one below.</p>"#,
        ),
        Some(run) => {
            let totals = days.iter().fold(Day::default(), |mut t, (_, d)| {
                t.views += d.views;
                t.purchases += d.purchases;
                t.revenue_cents += d.revenue_cents;
                t
            });
            let _ = write!(
                html,
                r#"<section class="cards"><div><b id="total-views">{}</b>views</div><div><b id="total-purchases">{}</b>purchases</div><div><b id="total-revenue">{:.2}</b>revenue</div><div><b>{}</b>days, run #{}</div></section>"#,
                totals.views,
                totals.purchases,
                totals.revenue_cents as f64 / 100.0,
                days.len(),
                run.id
            );
            let series =
                |f: fn(&Day) -> f64| days.iter().map(|(d, v)| (*d, f(v))).collect::<Vec<_>>();
            html.push_str(&bars(
                "Views per day",
                "chart-views",
                &series(|d| d.views as f64),
                |v| format!("{v:.0}"),
            ));
            html.push_str(&bars(
                "Purchases per day",
                "chart-purchases",
                &series(|d| d.purchases as f64),
                |v| format!("{v:.0}"),
            ));
            html.push_str(&bars(
                "Revenue per day",
                "chart-revenue",
                &series(|d| d.revenue_cents as f64 / 100.0),
                |v| format!("{v:.2}"),
            ));
            html.push_str(&bars(
                "Conversion (purchasing / viewing users)",
                "chart-conversion",
                &series(conversion),
                |v| format!("{:.1}%", v * 100.0),
            ));
            if let Some((last, _)) = days.last() {
                let top = store::top_products(&s.pool, run.id, *last, By::Purchases, 10)
                    .await
                    .unwrap_or_default();
                let _ = write!(
                    html,
                    r#"<h2>Top products by purchases, {last}</h2><table id="top"><tr><th>product</th><th>purchases</th></tr>"#
                );
                for (product, count) in top {
                    let _ = write!(html, "<tr><td>{}</td><td>{count}</td></tr>", esc(&product));
                }
                html.push_str("</table>");
            }
        }
    }
    if let Ok(dag) = store::dag_summary(&s.pool).await {
        html.push_str(&products_panel(&dag));
    }
    if let Ok(jobs) = store::mapreduce_jobs(&s.pool, 5).await {
        let top = store::mapreduce_top_pages(&s.pool, 10).await.ok().flatten();
        html.push_str(&mapreduce_panel(&jobs, top.as_ref()));
    }
    html.push_str(r#"<h2>Replays <button id="replay">Replay now</button></h2><table id="runs"><tr><th>#</th><th>trigger</th><th>state</th><th>progress</th><th>records</th><th>finished</th></tr>"#);
    let registry = s.registry.lock().expect("poisoned").clone();
    for run in &list {
        let fraction = registry.get(&run.id).map(|p| p.view().fraction).unwrap_or(
            if run.state == RunState::Succeeded {
                1.0
            } else {
                0.0
            },
        );
        let _ = write!(
            html,
            r#"<tr><td>{}</td><td>{}</td><td class="state {}">{}</td><td>{}</td><td>{}</td><td>{}</td></tr>"#,
            run.id,
            run.trigger.as_str(),
            run.state.as_str(),
            run.state.as_str(),
            progress_bar(run, fraction),
            run.records.map(|r| r.to_string()).unwrap_or_default(),
            run.finished_at
                .map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string())
                .unwrap_or_default()
        );
    }
    html.push_str("</table>");
    html.push_str(TAIL);
    Html(html)
}

const HEAD: &str = r#"<!doctype html><html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width,initial-scale=1">
<title>kappa-jobs dashboard</title><style>
body{font:15px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0 auto;max-width:820px;padding:24px;color:#1d2430;background:#f7f8fa}
h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;margin:28px 0 8px;display:flex;gap:12px;align-items:center}
.sub{color:#667;margin:0 0 18px}.cards{display:grid;grid-template-columns:repeat(4,1fr);gap:10px}
.cards div{background:#fff;border-radius:10px;padding:12px 14px;box-shadow:0 1px 2px #0001;color:#667;font-size:13px}
.cards b{display:block;font-size:22px;color:#1d2430}figure{background:#fff;border-radius:10px;margin:14px 0;padding:10px 12px;box-shadow:0 1px 2px #0001}
figcaption{font-weight:600;margin-bottom:4px}svg{width:100%;height:auto}rect{fill:#4f7cff}rect:hover{fill:#2949c9}
#chart-revenue rect{fill:#19a974}#chart-purchases rect{fill:#ff8c42}#chart-conversion rect{fill:#9b5de5}
.tick{font-size:10px;fill:#889;text-anchor:middle}.max{font-size:11px;fill:#889}
table{width:100%;border-collapse:collapse;background:#fff;border-radius:10px;overflow:hidden;box-shadow:0 1px 2px #0001}
th,td{text-align:left;padding:7px 10px;border-bottom:1px solid #eef0f3;font-size:14px}th{color:#667;font-weight:600}
.bar{background:#eef0f3;border-radius:4px;height:8px;width:140px}.bar div{background:#4f7cff;height:8px;border-radius:4px}
.state.failed{color:#d7263d}.state.succeeded{color:#19a974}.state.running{color:#4f7cff}
button{font:inherit;font-size:13px;padding:5px 12px;border:0;border-radius:6px;background:#1d2430;color:#fff;cursor:pointer}
.empty{background:#fff;padding:16px;border-radius:10px}</style></head><body>
<h1>kappa-jobs dashboard</h1><p class="sub">Daily metrics recomputed from the retained <code>events</code> topic by batch replays.</p>
"#;

const TAIL: &str = r#"<script>
document.getElementById('replay').onclick = async () => {
  const token = sessionStorage.getItem('token') || prompt('Admin token (.run/token)');
  if (!token) return;
  sessionStorage.setItem('token', token);
  const r = await fetch('/api/replays', {method: 'POST', headers: {'Authorization': 'Bearer ' + token, 'Content-Type': 'application/json'}, body: JSON.stringify({from: 'earliest'})});
  if (r.status === 401) sessionStorage.removeItem('token');
  if (!r.ok) { alert((await r.json()).message); return; }
  setTimeout(() => location.reload(), 300);
};
// Live progress of running replays; reload when one finishes.
setInterval(async () => {
  const r = await fetch('/api/replays'); if (!r.ok) return;
  const runs = (await r.json()).runs;
  for (const run of runs) {
    const bar = document.querySelector('.bar[data-run="' + run.id + '"] div');
    if (bar) bar.style.width = (100 * run.progress.fraction).toFixed(1) + '%';
  }
  const shown = [...document.querySelectorAll('.state')].map(e => e.textContent).join();
  if (runs.slice(0, 10).map(r => r.state).join() !== shown) location.reload();
}, 1000);
const countPages = document.getElementById('mapreduce-run');
if (countPages) countPages.onclick = async () => {
  const token = sessionStorage.getItem('token') || prompt('Admin token (.run/token)');
  if (!token) return;
  sessionStorage.setItem('token', token);
  const r = await fetch('/api/mapreduce/jobs', {method: 'POST', headers: {'Authorization': 'Bearer ' + token}});
  if (r.status === 401) sessionStorage.removeItem('token');
  if (!r.ok) { alert((await r.json()).message); return; }
  setTimeout(() => location.reload(), 300);
};
// A MapReduce job running: the page is re-rendered with its progress.
if (document.querySelector('.mr-running')) setTimeout(() => location.reload(), 2000);
</script></body></html>"#;
