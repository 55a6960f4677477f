//! http-bench: answer latency of a GET under concurrency, for
//! `scripts/bench/answers.sh`.
//!
//! ```text
//! http-bench --paths paths.txt --base http://127.0.0.1:8082 --concurrency 50 --requests 5000
//! ```
//! `--concurrency` clients, each on its own keep-alive connection, take the
//! paths of the file round-robin (one per line) and GET them one after
//! another until `--requests` answers came in all. Every answer must be 200
//! (else the run fails, naming the first other status). Prints one line:
//! requests, seconds, requests/s and the latency percentiles in ms, from
//! sending the request to reading the whole body. The token comes from
//! `KAPPA_TOKEN` (bearer), if set.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Parser;

#[derive(Debug, Parser)]
#[command(version, about = "GET latency under concurrency")]
struct Args {
    /// A file of request paths, one per line (e.g. /users/u1/recommendations).
    #[arg(long)]
    paths: std::path::PathBuf,
    /// The service's base URL.
    #[arg(long)]
    base: String,
    #[arg(long, default_value_t = 50)]
    concurrency: usize,
    /// Answers in all.
    #[arg(long, default_value_t = 5_000)]
    requests: usize,
    #[arg(long, env = "KAPPA_TOKEN", hide_env_values = true)]
    token: Option<String>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let paths: Vec<String> = std::fs::read_to_string(&args.paths)
        .with_context(|| format!("reading {}", args.paths.display()))?
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| format!("{}{}", args.base, l.trim()))
        .collect();
    anyhow::ensure!(!paths.is_empty(), "no paths in {}", args.paths.display());
    let paths = Arc::new(paths);
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let clients = (0..args.concurrency.max(1)).map(|_| {
        let (paths, next, token) = (paths.clone(), next.clone(), args.token.clone());
        let requests = args.requests;
        tokio::spawn(async move {
            let client = reqwest::Client::builder()
                .pool_max_idle_per_host(1)
                .timeout(Duration::from_secs(30))
                .build()?;
            let mut latencies = Vec::new();
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                if n >= requests {
                    return anyhow::Ok(latencies);
                }
                let url = &paths[n % paths.len()];
                let mut request = client.get(url);
                if let Some(token) = &token {
                    request = request.bearer_auth(token);
                }
                let sent = Instant::now();
                let response = request.send().await.with_context(|| format!("GET {url}"))?;
                let status = response.status();
                response.bytes().await?;
                latencies.push(sent.elapsed());
                if status != 200 {
                    bail!("GET {url} answered {status}");
                }
            }
        })
    });
    let mut latencies = Vec::with_capacity(args.requests);
    for client in futures::future::join_all(clients).await {
        latencies.extend(client??);
    }
    let seconds = started.elapsed().as_secs_f64();
    latencies.sort_unstable();
    let ms = |q: f64| {
        let i = ((latencies.len() as f64 * q).ceil() as usize).clamp(1, latencies.len()) - 1;
        latencies[i].as_secs_f64() * 1000.0
    };
    println!(
        "requests {} seconds {seconds:.2} per_second {:.0} p50_ms {:.2} p90_ms {:.2} p99_ms {:.2} max_ms {:.2}",
        latencies.len(),
        latencies.len() as f64 / seconds,
        ms(0.50),
        ms(0.90),
        ms(0.99),
        ms(1.0),
    );
    Ok(())
}
