//! `--register-users`: the users a run of traffic signs up are registered
//! through the users service, as people sign up, instead of appearing as
//! `user_updated` records written straight to the topic (the users
//! service's outbox publishes theirs). Only a share of them, chosen by user
//! id (the same users every run): the others' purchases are refused by the
//! mail workers (`unknown_user`), as in a real mix. A user is registered
//! with its first profile, then each later change in order; users side by
//! side, a bounded number at a time. Idempotent: a user that exists (409)
//! is kept, a change already made (412 on `If-Match`) is skipped, so a run
//! repeated registers nothing twice.

use std::collections::BTreeMap;

use anyhow::Context;
use futures::stream::{self, StreamExt, TryStreamExt};
use reqwest::StatusCode;
use serde_json::json;
use shared::event::UserUpdated;

/// Where and how users are registered.
pub struct Registration {
    /// The users service, e.g. `http://127.0.0.1:8081`.
    pub url: String,
    /// Its bearer token.
    pub token: String,
    /// Requests in flight at once.
    pub concurrency: usize,
}

/// What a registration did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Registered {
    pub created: u64,
    /// Registered by an earlier run.
    pub existed: u64,
    pub changed: u64,
    /// Changes an earlier run made already.
    pub unchanged: u64,
}

/// Whether `user` is among `share` (0..=1) of all users: by a hash of its
/// id, so the same users every run, whatever else the run generates.
pub fn chosen(user: &str, share: f64) -> bool {
    if share >= 1.0 {
        return true;
    }
    // FNV-1a, its high bits mixed (splitmix64's finalizer): stable across
    // runs and builds, as std's hasher is not, and even over ids alike.
    let mut h = user.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    h = (h ^ (h >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h = (h ^ (h >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^= h >> 31;
    ((h >> 11) as f64 / (1u64 << 53) as f64) < share
}

impl Registration {
    /// Registers every user of `updates` (each user's in stream order).
    pub async fn run(&self, updates: Vec<UserUpdated>) -> anyhow::Result<Registered> {
        let mut by_user: BTreeMap<String, Vec<UserUpdated>> = BTreeMap::new();
        for update in updates {
            by_user
                .entry(update.user_id.clone())
                .or_default()
                .push(update);
        }
        let client = reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(30))
            .build()?;
        let client = &client;
        let results: Vec<Registered> = stream::iter(by_user.into_values())
            .map(|profile| async move { self.user(client, &profile).await })
            .buffer_unordered(self.concurrency.max(1))
            .try_collect()
            .await?;
        Ok(results
            .into_iter()
            .fold(Registered::default(), |a, b| Registered {
                created: a.created + b.created,
                existed: a.existed + b.existed,
                changed: a.changed + b.changed,
                unchanged: a.unchanged + b.unchanged,
            }))
    }

    /// One user: created with its first profile, then each change.
    async fn user(
        &self,
        client: &reqwest::Client,
        profile: &[UserUpdated],
    ) -> anyhow::Result<Registered> {
        let mut done = Registered::default();
        let Some((first, changes)) = profile.split_first() else {
            return Ok(done);
        };
        let id = &first.user_id;
        let created = client
            .post(format!("{}/users", self.url))
            .bearer_auth(&self.token)
            .json(&json!({"id": id, "email": first.email, "name": first.name}))
            .send()
            .await
            .with_context(|| format!("registering user {id}"))?;
        match created.status() {
            StatusCode::CREATED => done.created += 1,
            StatusCode::CONFLICT => done.existed += 1,
            status => anyhow::bail!(
                "registering user {id}: {status} {}",
                created.text().await.unwrap_or_default()
            ),
        }
        // The users service numbers versions from 1, as loadgen does: a
        // change to version v is based on v - 1.
        for (n, change) in (2..).zip(changes) {
            let base = change.version.unwrap_or(n) - 1;
            let changed = client
                .put(format!("{}/users/{id}", self.url))
                .bearer_auth(&self.token)
                .header("If-Match", format!("\"{base}\""))
                .json(&json!({"email": change.email, "name": change.name}))
                .send()
                .await
                .with_context(|| format!("changing user {id}"))?;
            match changed.status() {
                StatusCode::OK => done.changed += 1,
                StatusCode::PRECONDITION_FAILED => done.unchanged += 1,
                status => anyhow::bail!(
                    "changing user {id}: {status} {}",
                    changed.text().await.unwrap_or_default()
                ),
            }
        }
        Ok(done)
    }
}

#[cfg(test)]
mod tests {
    use super::chosen;

    #[test]
    fn a_share_of_users_is_chosen_the_same_every_time() {
        let users: Vec<String> = (0..10_000).map(|i| format!("u{i}")).collect();
        let share = users.iter().filter(|u| chosen(u, 0.8)).count();
        assert!((7_700..=8_300).contains(&share), "{share} of 10,000");
        assert!(users.iter().all(|u| chosen(u, 1.0)));
        assert!(!users.iter().any(|u| chosen(u, 0.0)));
        let again = users.iter().filter(|u| chosen(u, 0.8)).count();
        assert_eq!(share, again);
    }
}
