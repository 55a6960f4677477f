//! A dashboard in-process on a test's own topics and database.
#![allow(dead_code)]

pub mod browser;

use std::time::{Duration, Instant};

use dashboard::{Application, DashboardConfig};
use serde_json::Value;
use shared::shutdown::CancellationToken;
use shared::testkit::TestEnv;

/// A test configuration: no schedule, no threshold.
pub fn config() -> DashboardConfig {
    DashboardConfig {
        addr: "127.0.0.1:0".parse().unwrap(),
        keep_runs: 3,
        schedule: String::new(),
        interval: String::new(),
        threshold_bytes: 0,
        threshold_events: 0,
        check_interval_ms: 200,
        readers: 2,
        pagecount_url: "http://127.0.0.1:9".into(),
        audit_consumer: "recommendation".into(),
    }
}

pub struct Service {
    pub base: String,
    pub token: String,
    pub client: reqwest::Client,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
    /// Stops the service if a test fails before `stop`.
    _stop_on_drop: shared::shutdown::DropGuard,
}

impl Service {
    pub async fn start(env: &TestEnv, config: DashboardConfig) -> Service {
        Self::start_with(env.settings.clone(), config).await
    }

    /// With settings of the test's choosing (e.g. `auth.public_metrics`).
    pub async fn start_with(
        settings: shared::config::Settings,
        config: DashboardConfig,
    ) -> Service {
        let token = settings.auth.admin_token.expose().to_owned();
        let shutdown = CancellationToken::new();
        let app = Application::build(settings, config, shutdown.clone())
            .await
            .unwrap();
        let base = format!("http://{}", app.addr());
        let task = tokio::spawn(app.run());
        Service {
            base,
            token,
            client: reqwest::Client::new(),
            _stop_on_drop: shutdown.clone().drop_guard(),
            shutdown,
            task,
        }
    }

    /// `host:port` of the service.
    pub fn addr(&self) -> &str {
        self.base.trim_start_matches("http://")
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        let response = self
            .client
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .unwrap();
        (response.status().as_u16(), response.json().await.unwrap())
    }

    /// Starts a replay and waits for it to finish; returns the run and the
    /// progress fractions seen on the way.
    pub async fn replay(&self, body: Value) -> (Value, Vec<f64>) {
        let response = self
            .client
            .post(format!("{}/api/replays", self.base))
            .bearer_auth(&self.token)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 202);
        let id = response.json::<Value>().await.unwrap()["id"]
            .as_i64()
            .unwrap();
        let (mut seen, until) = (Vec::new(), Instant::now() + Duration::from_secs(60));
        loop {
            let (_, run) = self.get(&format!("/api/replays/{id}")).await;
            seen.push(run["progress"]["fraction"].as_f64().unwrap());
            if run["state"] == "succeeded" || run["state"] == "failed" {
                return (run, seen);
            }
            assert!(Instant::now() < until, "replay {id} did not finish");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub async fn stop(self) {
        self.shutdown.cancel();
        let stopped = shared::testkit::within(
            shared::testkit::STOP_LIMIT,
            "the in-process dashboard stopping",
            self.task,
        );
        stopped.await.unwrap().unwrap();
    }
}

impl Service {
    /// The page at `/`, as HTML.
    pub async fn page(&self) -> String {
        let response = reqwest::get(format!("{}/", self.base)).await.unwrap();
        response.text().await.unwrap()
    }

    /// Every run, oldest first.
    pub async fn runs(&self) -> Vec<Value> {
        let (_, body) = self.get("/api/replays").await;
        let mut runs = body["runs"].as_array().cloned().unwrap_or_default();
        runs.reverse();
        runs
    }

    /// Waits until the threshold checker has run `more` more times after
    /// now, and returns its status: a negative check ("no run fired") waits
    /// on this condition, not on a guessed sleep.
    pub async fn threshold_checks(&self, more: u64) -> Value {
        let (_, now) = self.get("/api/triggers").await;
        let target = now["checks"].as_u64().unwrap() + more;
        let until = Instant::now() + Duration::from_secs(60);
        loop {
            let (_, status) = self.get("/api/triggers").await;
            if status["checks"].as_u64().unwrap() >= target {
                return status;
            }
            assert!(
                Instant::now() < until,
                "the threshold checker stopped: {status}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits until `check` holds for the list of runs.
    pub async fn wait_runs(&self, what: &str, check: impl Fn(&[Value]) -> bool) -> Vec<Value> {
        let until = Instant::now() + Duration::from_secs(60);
        loop {
            let runs = self.runs().await;
            if check(&runs) {
                return runs;
            }
            assert!(
                Instant::now() < until,
                "timed out waiting for {what}: {runs:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}
