//! The web page at `/`: daily activity and revenue charts, top products, the
//! Kappa audit's last verdict, dead letters by reason per day, the product
//! DAG and MapReduce panels, the list of runs with live progress, and a
//! button to start a replay. Rendered
//! on the server as HTML with inline SVG, so it works offline (no CDN, no
//! chart library); a few lines of script refresh the runs and post replays.
//! It shows the same days as `GET /api/metrics/daily` with the same query
//! (`from`, `to`, `run`; by default the newest 30 days with data of the
//! current run).

mod axis;
mod chart;
mod format;
mod panels;
mod quality;
mod runs;

use std::fmt::Write;
use std::sync::OnceLock;

use axum::extract::State;
use axum::http::{header, HeaderName, HeaderValue};
use axum::response::Html;
use base64::Engine as _;
use chrono::NaiveDate;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use shared::http::Query;

use crate::aggregate::{conversion, Day};
use crate::daily::Daily;
use crate::state::AppState;
use crate::store::{self, By, Run, RunState};
use chart::{Chart, Unit};

/// Escapes text for HTML.
fn esc(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// The page's query: the same as `GET /api/metrics/daily`.
#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct PageQuery {
    /// The first day shown (UTC); none: see `GET /api/metrics/daily`.
    from: Option<NaiveDate>,
    /// The last day shown (UTC); none: the newest day with data.
    to: Option<NaiveDate>,
    /// A run's id; none: the current run.
    run: Option<i64>,
}

/// The dashboard page.
///
/// HTML with inline SVG charts, rendered on the server: the daily metrics
/// of a run (the same days as `GET /api/metrics/daily` with the same
/// query), top products, the Kappa audit's last verdict, dead letters by
/// reason, the product DAG, MapReduce jobs, and the replay runs. Public
/// unless `auth.public_metrics` is false. The page shows what the public
/// APIs show: the products waiting for parts (`GET /pending-joins`) and a
/// job's top pages (`GET /jobs/{id}/pages`) are the token's, so a request
/// without it sees their counts only.
#[utoipa::path(get, path = "/", tag = "dashboard",
    params(PageQuery),
    responses((status = 200, description = "The page", content_type = "text/html", body = String)))]
pub async fn page(
    _: shared::http::Viewer,
    mut parts: axum::http::request::Parts,
    State(s): State<AppState>,
    Query(q): Query<PageQuery>,
) -> ([(HeaderName, HeaderValue); 4], Html<String>) {
    use axum::extract::FromRequestParts as _;
    let admin = shared::http::Admin::from_request_parts(&mut parts, &())
        .await
        .is_ok();
    let current = store::current_id(&s.pool).await.ok().flatten();
    let shown = match q.run.or(current) {
        Some(id) => store::get(&s.pool, id)
            .await
            .ok()
            .flatten()
            .filter(|r| r.state == RunState::Succeeded),
        None => None,
    };
    let mut html = String::from(HEAD);
    match &shown {
        None if q.run.is_some() => html.push_str(
            r#"<p class="empty" id="no-run">That run has no results: pick a succeeded one below.</p>"#,
        ),
        None => html.push_str(
            r#"<p class="empty" id="no-run">No replay has succeeded yet: start one below.</p>"#,
        ),
        Some(run) => metrics(&mut html, &s, run, current, &q).await,
    }
    html.push_str(&quality::audit_line(s.auditor.last().as_deref()));
    html.push_str(&quality::dead_letters_panel(
        s.dead_letters.topic(),
        s.dead_letters.snapshot().await.as_ref(),
    ));
    if let Ok(dag) = store::dag_summary(&s.pool).await {
        html.push_str(&panels::products_panel(&dag, admin));
    }
    if let Ok(jobs) = store::mapreduce_jobs(&s.pool, 5).await {
        let top = match admin {
            true => store::mapreduce_top_pages(&s.pool, 10).await.ok().flatten(),
            false => None,
        };
        html.push_str(&panels::mapreduce_panel(&jobs, top.as_ref()));
    }
    html.push_str(r#"<h2>Replays <button id="replay">Replay now</button></h2>"#);
    let list = store::list(&s.pool, 10).await.unwrap_or_default();
    let live = s.registry.lock().expect("poisoned").clone();
    html.push_str(r#"<div class="scroll">"#);
    html.push_str(&runs::table(&list, current, &live, chrono::Utc::now()));
    html.push_str("</div>");
    html.push_str(TAIL);
    (security_headers(), Html(html))
}

/// The page runs its one script (allowed by its hash, so an injected one
/// would not run), loads nothing from elsewhere, and is never framed.
fn security_headers() -> [(HeaderName, HeaderValue); 4] {
    static POLICY: OnceLock<HeaderValue> = OnceLock::new();
    let policy = POLICY.get_or_init(|| {
        let script = TAIL
            .strip_prefix("<script>")
            .and_then(|s| s.split_once("</script>"))
            .map(|(script, _)| script)
            .expect("TAIL is the page's script");
        let hash = base64::engine::general_purpose::STANDARD.encode(Sha256::digest(script));
        HeaderValue::try_from(format!(
            "default-src 'none'; script-src 'sha256-{hash}'; style-src 'unsafe-inline'; \
             connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; \
             frame-ancestors 'none'"
        ))
        .expect("an ASCII policy")
    });
    [
        (header::CONTENT_SECURITY_POLICY, policy.clone()),
        (header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY")),
        (
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ),
        (
            header::REFERRER_POLICY,
            HeaderValue::from_static("no-referrer"),
        ),
    ]
}

/// The cards, charts and top products of `run` over the asked range.
async fn metrics(html: &mut String, s: &AppState, run: &Run, current: Option<i64>, q: &PageQuery) {
    let stored = store::stored_days(&s.pool, run.id)
        .await
        .unwrap_or_default();
    let daily = match Daily::new(q.from, q.to, &stored) {
        Ok(daily) => daily,
        Err(e) => {
            let _ = write!(
                html,
                r#"<p class="empty" id="bad-range">{}</p>"#,
                esc(&e.message)
            );
            return;
        }
    };
    if current != Some(run.id) {
        let _ = write!(
            html,
            r#"<p class="sub" id="not-current">Run #{} (not the current run): <a href="/">back to the current one</a>.</p>"#,
            run.id
        );
    }
    let totals = daily.totals();
    let range_days = daily.range.map_or(0, |(a, b)| (b - a).num_days() + 1);
    let _ = write!(
        html,
        r#"<section class="cards"><div><b id="total-views">{}</b>views</div><div><b id="total-purchases">{}</b>purchases</div><div><b id="total-revenue">{}</b>revenue</div><div><b id="days-with-data">{}</b>days with data of {}, run #{}</div></section>"#,
        format::count(totals.views),
        format::count(totals.purchases),
        format::money(totals.revenue_cents),
        format::count(totals.days_with_data),
        format::count(range_days as u64),
        run.id
    );
    let Some(range) = daily.range else {
        html.push_str(r#"<p class="empty" id="no-days">This run found no interactions.</p>"#);
        return;
    };
    let series = |f: fn(&Day) -> f64| daily.data.iter().map(|(d, v)| (*d, f(v))).collect();
    for (title, id, unit, points) in [
        (
            "Views per day",
            "chart-views",
            Unit::Count,
            series(|d| d.views as f64),
        ),
        (
            "Purchases per day",
            "chart-purchases",
            Unit::Count,
            series(|d| d.purchases as f64),
        ),
        (
            "Revenue per day",
            "chart-revenue",
            Unit::Cents,
            series(|d| d.revenue_cents as f64),
        ),
        (
            "Conversion (purchasing / viewing users)",
            "chart-conversion",
            Unit::Ratio,
            series(conversion),
        ),
    ] {
        html.push_str(
            &Chart {
                title,
                id,
                unit,
                range,
                points,
            }
            .render(),
        );
    }
    // The newest day that sold something (the newest day may have views only).
    let sold = daily.data.iter().rev().find(|(_, d)| d.purchases > 0);
    if let Some((last, _)) = sold.or(daily.data.last_key_value()) {
        let top = store::top_products(&s.pool, run.id, *last, By::Purchases, 10)
            .await
            .unwrap_or_default();
        let _ = write!(
            html,
            r#"<h2>Top products by purchases, {last}</h2><table id="top"><tr><th>product</th><th>purchases</th></tr>"#
        );
        for (product, count) in top {
            let _ = write!(
                html,
                "<tr><td>{}</td><td>{}</td></tr>",
                esc(&product),
                format::count(count.max(0) as u64)
            );
        }
        html.push_str("</table>");
    }
}

const HEAD: &str = r#"<!doctype html><html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width,initial-scale=1">
<title>kappa-jobs dashboard</title><style>
body{font:15px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0 auto;max-width:1280px;padding:24px;color:#1d2430;background:#f7f8fa}
h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;margin:28px 0 8px;display:flex;gap:12px;align-items:center}
.sub{color:#667;margin:0 0 18px}.cards{display:grid;grid-template-columns:repeat(4,1fr);gap:10px}
.cards div{background:#fff;border-radius:10px;padding:12px 14px;box-shadow:0 1px 2px #0001;color:#667;font-size:13px}
.cards b{display:block;font-size:22px;color:#1d2430}figure{background:#fff;border-radius:10px;margin:14px 0;padding:10px 12px;box-shadow:0 1px 2px #0001}
figcaption{font-weight:600;margin-bottom:4px}figcaption .range{font-weight:400;color:#667;font-size:13px;margin-left:6px}
svg.chart{display:block;width:100%;height:auto}rect.day{fill:#4f7cff}rect.day:hover{fill:#2949c9}
#chart-revenue rect.day{fill:#19a974}#chart-purchases rect.day{fill:#ff8c42}#chart-conversion rect.day{fill:#9b5de5}#chart-dlq rect.day{fill:#d7263d}
.audit{background:#fff;border-radius:10px;padding:10px 14px;margin:14px 0;box-shadow:0 1px 2px #0001}.audit.ok b{color:#19a974}.audit.drift b{color:#d7263d}
.tick{font-size:11px;fill:#667;text-anchor:middle}.year{font-size:11px;fill:#1d2430;font-weight:600;text-anchor:middle}
.ytick{font-size:11px;fill:#667;text-anchor:end}.grid{stroke:#eef0f3}.axis{stroke:#99a}
.gap-band{fill:#f3f4f7}.break{stroke:#889;stroke-width:1.5;fill:none}.gap{font-size:10px;fill:#889;text-anchor:middle}
.nodata{font-size:13px;fill:#889;text-anchor:middle}
table{width:100%;border-collapse:collapse;background:#fff;border-radius:10px;overflow:hidden;box-shadow:0 1px 2px #0001}
th,td{text-align:left;padding:7px 10px;border-bottom:1px solid #eef0f3;font-size:14px}th{color:#667;font-weight:600}
.scroll{overflow-x:auto}#runs td{font-size:13px}.done{white-space:nowrap}.pct{margin-left:6px;color:#667}
#runs .error{color:#d7263d;max-width:320px;word-break:break-word;font-size:12px}
.current{font-size:11px;background:#19a97422;color:#19a974;border-radius:4px;padding:1px 5px;margin-left:4px}
.bar{background:#eef0f3;border-radius:4px;height:8px;width:140px}.bar div{background:#4f7cff;height:8px;border-radius:4px}
#runs .bar{display:inline-block;vertical-align:middle;width:80px}
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
// Seconds as the server prints them (page/format.rs).
const duration = (s) => s < 10 ? s.toFixed(1) + ' s' : s < 60 ? Math.round(s) + ' s'
  : s < 3600 ? Math.floor(s / 60) + ' min ' + String(Math.round(s) % 60).padStart(2, '0') + ' s'
  : Math.floor(s / 3600) + ' h ' + String(Math.floor(s % 3600 / 60)).padStart(2, '0') + ' min';
// Live progress of running replays (% done, ETA); reload when a state changes.
setInterval(async () => {
  const r = await fetch('/api/replays'); if (!r.ok) return;
  const runs = (await r.json()).runs;
  for (const run of runs) {
    const cell = (css) => document.querySelector(css + '[data-run="' + run.id + '"]');
    const pct = (100 * run.progress.fraction).toFixed(1) + '%';
    const bar = cell('.bar');
    if (bar) bar.firstChild.style.width = pct;
    if (cell('.pct')) cell('.pct').textContent = pct;
    if (cell('.eta') && run.state === 'running' && run.progress.eta_seconds != null)
      cell('.eta').textContent = duration(run.progress.eta_seconds);
  }
  const shown = [...document.querySelectorAll('#runs .state')].map(e => e.textContent).join();
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
