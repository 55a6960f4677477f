//! The stateless worker's source of addresses: `GET /users/{id}` on the
//! users service, with a timeout, retries with backoff and jitter, and a
//! circuit breaker (after repeated failures it stops calling for a while and
//! fails at once, so a down service is not hammered). While it fails, the
//! worker's batch waits and is retried: mails are delayed, never skipped.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use rand::Rng;
use serde::Deserialize;
use shared::config::Secret;

/// What the users service said about a user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Found {
    User {
        email: String,
        version: i64,
    },
    /// 404: there is no such user.
    Unknown,
}

#[derive(Deserialize)]
struct UserBody {
    email: String,
    version: i64,
}

/// The breaker's state.
#[derive(Debug, Default)]
struct Breaker {
    failures: u32,
    open_until: Option<Instant>,
}

pub struct UsersClient {
    http: reqwest::Client,
    base: String,
    token: Secret,
    retries: u32,
    breaker: Mutex<Breaker>,
    trip_after: u32,
    open_for: Duration,
}

impl UsersClient {
    pub fn new(
        base: &str,
        token: Secret,
        timeout: Duration,
        retries: u32,
        trip_after: u32,
        open_for: Duration,
    ) -> anyhow::Result<Self> {
        Ok(Self {
            http: reqwest::Client::builder().timeout(timeout).build()?,
            base: base.trim_end_matches('/').to_owned(),
            token,
            retries,
            breaker: Mutex::default(),
            trip_after: trip_after.max(1),
            open_for,
        })
    }

    /// The user's address and version, or that there is none; an error when
    /// the service cannot answer (transient: the caller retries later).
    pub async fn find(&self, user: &str) -> anyhow::Result<Found> {
        if let Some(until) = self.breaker.lock().expect("poisoned").open_until {
            if Instant::now() < until {
                anyhow::bail!(
                    "the users service is failing; not calling it for a while (circuit open)"
                );
            }
        }
        let mut wait = Duration::from_millis(100);
        let mut last = None;
        for attempt in 0..=self.retries {
            if attempt > 0 {
                // Jitter: retries of many workers do not arrive together.
                let jitter = rand::thread_rng().gen_range(0.5..1.5);
                tokio::time::sleep(wait.mul_f64(jitter)).await;
                wait *= 2;
            }
            metrics::counter!("kappa_mailer_users_calls_total").increment(1);
            match self.call(user).await {
                Ok(found) => {
                    *self.breaker.lock().expect("poisoned") = Breaker::default();
                    metrics::gauge!("kappa_mailer_users_circuit_open").set(0.0);
                    return Ok(found);
                }
                Err(error) => last = Some(error),
            }
        }
        let mut breaker = self.breaker.lock().expect("poisoned");
        breaker.failures += 1;
        if breaker.failures >= self.trip_after {
            breaker.open_until = Some(Instant::now() + self.open_for);
            metrics::gauge!("kappa_mailer_users_circuit_open").set(1.0);
        }
        Err(last
            .expect("at least one attempt")
            .context("asking the users service"))
    }

    async fn call(&self, user: &str) -> anyhow::Result<Found> {
        let url = reqwest::Url::parse(&format!("{}/users/", self.base))?.join(&urlencode(user))?;
        let response = self
            .http
            .get(url)
            .bearer_auth(self.token.expose())
            .send()
            .await?;
        match response.status().as_u16() {
            200 => {
                let body: UserBody = response.json().await?;
                Ok(Found::User {
                    email: body.email,
                    version: body.version,
                })
            }
            404 => Ok(Found::Unknown),
            status => anyhow::bail!("the users service answered {status}"),
        }
    }
}

/// A user id as one path segment.
fn urlencode(id: &str) -> String {
    id.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}
