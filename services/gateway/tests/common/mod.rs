//! Spawning a gateway on a free port, on its own topics and database.
#![allow(dead_code)]

use std::net::SocketAddr;

use gateway::Application;
use shared::config::{HttpConfig, Settings};
use shared::shutdown::CancellationToken;
use shared::testkit::TestEnv;

pub struct TestApp {
    pub env: TestEnv,
    pub addr: SocketAddr,
    pub client: reqwest::Client,
    pub shutdown: CancellationToken,
    pub server: tokio::task::JoinHandle<anyhow::Result<()>>,
    /// Stops the gateway if a test fails before `stop`.
    _stop_on_drop: shared::shutdown::DropGuard,
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn token(&self) -> String {
        self.env.settings.auth.admin_token.expose().to_owned()
    }

    /// POSTs a body of `content_type` to /events with the token.
    pub async fn post_events(
        &self,
        content_type: &str,
        body: impl Into<reqwest::Body>,
    ) -> reqwest::Response {
        self.client
            .post(self.url("/events"))
            .bearer_auth(self.token())
            .header("content-type", content_type)
            .body(body)
            .send()
            .await
            .expect("gateway answers")
    }

    /// POSTs an NDJSON body with the token.
    pub async fn post_ndjson(&self, body: impl Into<reqwest::Body>) -> reqwest::Response {
        self.post_events("application/x-ndjson", body).await
    }

    /// The Prometheus text the gateway serves on `/metrics`.
    pub async fn scrape(&self) -> String {
        let response = self.client.get(self.url("/metrics")).send().await;
        response.expect("gateway answers").text().await.unwrap()
    }

    /// GETs `path` with the token.
    pub async fn get_authed(&self, path: &str) -> reqwest::Response {
        self.client
            .get(self.url(path))
            .bearer_auth(self.token())
            .send()
            .await
            .expect("gateway answers")
    }

    pub async fn stop(self) {
        self.shutdown.cancel();
        self.server.await.unwrap().unwrap();
    }
}

/// A gateway on port 0 with test settings; `tweak` adjusts them first.
pub async fn spawn_app(name: &str, tweak: impl FnOnce(&mut Settings, &mut HttpConfig)) -> TestApp {
    let env = TestEnv::new(name).await;
    spawn_on(env, tweak).await
}

/// A gateway on an existing test environment.
pub async fn spawn_on(env: TestEnv, tweak: impl FnOnce(&mut Settings, &mut HttpConfig)) -> TestApp {
    let mut settings = env.settings.clone();
    let mut http = HttpConfig {
        addr: "127.0.0.1:0".parse().unwrap(),
        body_limit_bytes: 64 * 1024 * 1024,
        max_upload_file_bytes: 32 * 1024 * 1024,
        max_events_per_request: 100_000,
    };
    tweak(&mut settings, &mut http);
    let shutdown = CancellationToken::new();
    let app = Application::build(settings, http, shutdown.clone())
        .await
        .expect("gateway builds");
    let addr = app.addr();
    let server = tokio::spawn(app.run());
    TestApp {
        env,
        addr,
        client: reqwest::Client::new(),
        _stop_on_drop: shutdown.clone().drop_guard(),
        shutdown,
        server,
    }
}
