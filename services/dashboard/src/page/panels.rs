//! The page's panels fed by other services' tables: the product DAG and
//! the MapReduce jobs.

use std::fmt::Write;

use super::esc;
use crate::store;

/// Products by status, the slowest branch, and, with the token, the joins
/// still waiting and for how long (what `GET /pending-joins` shows).
pub fn products_panel(dag: &store::DagSummary, admin: bool) -> String {
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
    if !dag.waiting.is_empty() && !admin {
        html.push_str(
            r#"<p class="sub" id="pending-joins-hidden">Which products wait for which parts: <code>GET /pending-joins</code> on the products service, with the token.</p>"#,
        );
    } else if !dag.waiting.is_empty() {
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
/// and the top pages of the newest job that succeeded (given only to a
/// request with the token).
pub fn mapreduce_panel(jobs: &[store::JobRow], top: Option<&(i64, Vec<(String, i64)>)>) -> String {
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
