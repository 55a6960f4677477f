//! The mail worker, on the shared runtime (Postgres mode): for every
//! `mail_requested` and every purchase, find the address (from the users
//! service, or from the worker's own store), send the mail once (`log`), and
//! let the runtime commit the offsets. A user that does not exist, or an
//! address the SMTP server refuses, is a dead letter with that reason; a
//! users service or SMTP server that cannot answer now makes the batch wait
//! and retry (mails are delayed, never skipped).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::stream::{self, StreamExt};

use shared::consume::Received;
use shared::event::EventType;
use shared::worker::{Postgres, Refused, Worker};
use sqlx::{PgConnection, PgPool};

use crate::log::{self, Claim};
use crate::mail::{Mail, SendError, Smtp};
use crate::store::Store;
use crate::users_client::{Found, UsersClient};

/// How long a request waits in place for the address store to read past it
/// before its batch is retried (the store is behind: catching up, or its
/// reads fail).
const STORE_WAIT: Duration = Duration::from_secs(2);

/// Where addresses come from: the article's two workers.
pub enum Directory {
    /// Stateless: ask the users service, every time.
    Remote(UsersClient),
    /// Stateful: the worker's own store, fed by `user_updated` events.
    Local {
        store: Arc<Store>,
        /// How long a mail waits for its user to appear in the store.
        wait_for_user: Duration,
    },
}

pub struct Mailer {
    pub pool: PgPool,
    pub smtp: Smtp,
    pub directory: Directory,
    pub mode: &'static str,
    /// Mails in flight at once (distinct users; one user's mails in order).
    pub concurrency: usize,
}

impl Worker for Mailer {
    type Mode = Postgres;

    fn wants(&self, event_type: EventType) -> bool {
        matches!(
            event_type,
            EventType::MailRequested | EventType::Interaction
        )
    }

    async fn apply(&mut self, _tx: &mut PgConnection, events: &[Received]) -> anyhow::Result<()> {
        // A request the producer sent twice is one mail: the runtime skips
        // a repeat within `kafka.dedupe_window` before it gets here, the
        // mail log beyond it; this set within one batch when the window is
        // off (one statement cannot claim an id twice).
        let mut seen = HashSet::new();
        let mails: Vec<(&Received, Mail)> = events
            .iter()
            .filter_map(|received| Mail::of(received).map(|mail| (received, mail)))
            .filter(|(_, mail)| seen.insert(mail.event_id))
            .collect();
        if mails.is_empty() {
            return Ok(());
        }
        let claims: Vec<_> = mails.iter().map(|(r, m)| (m, r.ts())).collect();
        let claims = log::claim(&self.pool, &claims, self.mode).await?;
        // One user's mails in their order, users side by side.
        let mut users: HashMap<&str, Vec<(&Received, &Mail, i32)>> = HashMap::new();
        for (received, mail) in &mails {
            if let Some(Claim::Send { attempt }) = claims.get(&mail.event_id) {
                users
                    .entry(&mail.user_id)
                    .or_default()
                    .push((received, mail, *attempt));
            }
        }
        let queues: Vec<_> = users
            .into_values()
            .map(|queue| self.deliver_all(queue))
            .collect();
        let outcomes: Vec<anyhow::Result<()>> = stream::iter(queues)
            .buffer_unordered(self.concurrency.max(1))
            .collect()
            .await;
        // Every user's queue ran to its end or its first failure (none cut
        // off mid-send). A failure that may pass retries the batch; else a
        // refused mail, for the runtime to set aside.
        let mut errors: Vec<anyhow::Error> = outcomes.into_iter().filter_map(Result::err).collect();
        match errors
            .iter()
            .position(|e| e.downcast_ref::<Refused>().is_none())
        {
            Some(transient) => Err(errors.swap_remove(transient)),
            None => errors.pop().map_or(Ok(()), Err),
        }
    }
}

impl Mailer {
    fn stage(&self, stage: &'static str, started: Instant) {
        metrics::histogram!("kappa_mailer_stage_seconds", "mode" => self.mode, "stage" => stage)
            .record(started.elapsed().as_secs_f64());
    }

    /// Sends one user's claimed mails in order, up to the first failure.
    async fn deliver_all(&self, queue: Vec<(&Received, &Mail, i32)>) -> anyhow::Result<()> {
        for (received, mail, attempt) in queue {
            self.deliver(received, mail, attempt).await?;
        }
        Ok(())
    }

    /// Sends one claimed mail and marks it sent.
    async fn deliver(&self, received: &Received, mail: &Mail, attempt: i32) -> anyhow::Result<()> {
        if attempt > 1 {
            // Interrupted between sending and marking it sent: the one
            // window where the receiver gets a second copy (same Message-ID).
            metrics::counter!("kappa_mailer_resent_total", "mode" => self.mode).increment(1);
        }
        let started = Instant::now();
        let (address, version) = self.address(received, mail).await?;
        self.stage("address", started);
        let started = Instant::now();
        match self.smtp.send(mail, &address).await {
            Ok(()) => {}
            Err(SendError::Refused(reason)) => {
                return Err(Refused::new("smtp_refused", reason).into());
            }
            Err(error @ SendError::Unavailable(_)) => return Err(error.into()),
        }
        self.stage("smtp", started);
        let started = Instant::now();
        log::sent(&self.pool, mail, self.mode, &address, version).await?;
        self.stage("log", started);
        metrics::counter!("kappa_mailer_sent_total", "mode" => self.mode).increment(1);
        if let Some(ts) = received.ts() {
            let waited = (chrono::Utc::now() - ts).num_milliseconds().max(0) as f64 / 1e3;
            metrics::histogram!("kappa_mailer_request_to_sent_seconds", "mode" => self.mode)
                .record(waited);
        }
        Ok(())
    }

    /// The address of the mail's user, and the user's version it comes from.
    async fn address(
        &self,
        received: &Received,
        mail: &Mail,
    ) -> anyhow::Result<(String, Option<i64>)> {
        match &self.directory {
            Directory::Remote(users) => match users.find(&mail.user_id).await? {
                Found::User { email, version } => Ok((email, Some(version))),
                Found::Unknown => Err(Refused::new(
                    "unknown_user",
                    format!("the users service has no user {}", mail.user_id),
                )
                .into()),
            },
            Directory::Local {
                store,
                wait_for_user,
            } => {
                // Everything before this request in its partition (the
                // user's earlier updates, keyed alike) must be in the store.
                if !store
                    .wait_past(received.partition, received.offset, STORE_WAIT)
                    .await
                {
                    anyhow::bail!(
                        "the address store is at offset {} of partition {}, the request at {}; waiting",
                        store.position(received.partition),
                        received.partition,
                        received.offset
                    );
                }
                if let Some((email, version)) = store.lookup(&mail.user_id)? {
                    return Ok((email, Some(version as i64)));
                }
                // The user may be on its way (written to the users service
                // just before the request, its event not out yet): wait, but
                // only until the bound has passed since the request arrived,
                // so a worker that is behind does not wait again.
                let arrived = received.timestamp.unwrap_or_else(chrono::Utc::now);
                let waited = (chrono::Utc::now() - arrived).to_std().unwrap_or_default();
                if waited < *wait_for_user {
                    anyhow::bail!(
                        "user {} is not in the address store yet; waiting",
                        mail.user_id
                    );
                }
                Err(Refused::new(
                    "unknown_user",
                    format!(
                        "user {} did not appear in the address store within {wait_for_user:?}",
                        mail.user_id
                    ),
                )
                .into())
            }
        }
    }
}
