//! The mail worker, on the shared runtime (Postgres mode): for every
//! `mail_requested` and every purchase (nothing else on the stream reaches
//! it), find the user's address (from the users service, or from the
//! worker's own store), send the mail once (`log`), and let the runtime
//! commit the offsets. Per batch, each user is looked up once, users side
//! by side (`concurrency`), one user's mails in their order.
//!
//! A user that does not exist is an outcome, not a failure: its mails are
//! refused (`unknown_user`, dead-lettered with the batch's commit), or, by
//! the stateful worker while the user may still be on its way, parked
//! (`park`); an address the SMTP server refuses is refused
//! (`smtp_refused`). A users service or SMTP server that cannot answer now
//! fails the batch, which is retried (mails are delayed, never skipped;
//! those already sent are not sent again).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use futures::stream::{self, StreamExt};

use shared::consume::Received;
use shared::event::{Event, EventType};
use shared::worker::{Postgres, Refusals, Refused, Worker};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::courier::{Address, Courier};
use crate::log::{self, Claim};
use crate::mail::Mail;
use crate::park;
use crate::store::Store;
use crate::users_client::{Found, UsersClient};

/// How long a request waits in place for the address store to read past it
/// before its batch is retried (the store is behind: catching up, or its
/// reads fail).
const STORE_WAIT: Duration = Duration::from_secs(2);

/// Where addresses come from: the article's two workers.
pub enum Directory {
    /// Stateless: ask the users service, every time.
    Remote(Arc<UsersClient>),
    /// Stateful: the worker's own store, fed by `user_updated` events.
    Local {
        store: Arc<Store>,
        /// How long after its arrival a request whose user is not in the
        /// store stays parked, waiting for the user to appear.
        wait_for_user: Duration,
    },
}

/// What the directory knows of a user.
enum Lookup {
    Found(Address),
    Unknown,
}

impl Directory {
    /// The address of `user`, whose last mail of the batch is `last`; an
    /// error when it cannot be told now.
    async fn find(&self, user: &str, last: &Received) -> anyhow::Result<Lookup> {
        match self {
            Directory::Remote(users) => Ok(match users.find(user).await? {
                Found::User { email, version } => Lookup::Found(Address {
                    email,
                    version: Some(version),
                }),
                Found::Unknown => Lookup::Unknown,
            }),
            Directory::Local { store, .. } => {
                // Everything before the requests in their partition (the
                // user's earlier updates, keyed alike) must be in the store.
                if !store
                    .wait_past(last.partition, last.offset, STORE_WAIT)
                    .await
                {
                    anyhow::bail!(
                        "the address store is at offset {} of partition {}, the request at {}; waiting",
                        store.position(last.partition),
                        last.partition,
                        last.offset
                    );
                }
                Ok(match store.lookup(user)? {
                    Some((email, version)) => Lookup::Found(Address {
                        email,
                        version: Some(version as i64),
                    }),
                    None => Lookup::Unknown,
                })
            }
        }
    }

    /// Until when a request may stay parked for its user (stateful only).
    fn parked_until(&self, received: &Received) -> Option<DateTime<Utc>> {
        let Directory::Local { wait_for_user, .. } = self else {
            return None;
        };
        let arrived = received.timestamp.unwrap_or_else(Utc::now);
        Some(arrived + chrono::Duration::from_std(*wait_for_user).unwrap_or_default())
    }
}

pub struct Mailer {
    pub courier: Arc<Courier>,
    pub directory: Directory,
    /// Users looked up, and users' mails in flight, at once.
    pub concurrency: usize,
}

impl Worker for Mailer {
    type Mode = Postgres;

    const READS: &'static [EventType] = &[EventType::MailRequested, EventType::Interaction];

    fn wants(event: &Event) -> bool {
        Mail::wanted(event)
    }

    async fn apply(
        &mut self,
        tx: &mut PgConnection,
        events: &[Received],
    ) -> anyhow::Result<Refusals> {
        let mut refusals = Refusals::none();
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
            return Ok(refusals);
        }
        // Each user's mails in their order (a user's events share a partition).
        let mut users: HashMap<&str, Vec<usize>> = HashMap::new();
        for (i, (_, mail)) in mails.iter().enumerate() {
            users.entry(mail.user_id.as_str()).or_default().push(i);
        }
        let this = &*self;
        // (The futures are made first: a stream mapping borrowed items
        // would not be `Send` for every lifetime, as the runtime needs.)
        let lookups: Vec<_> = users
            .iter()
            .map(|(&user, queue)| {
                let last = mails[*queue.last().expect("a user has a mail")].0;
                async move {
                    let started = Instant::now();
                    let found = this.directory.find(user, last).await;
                    // One user's lookup, for all of its mails in the batch.
                    this.courier.stage("address", started);
                    (user, found)
                }
            })
            .collect();
        let lookups: Vec<(&str, anyhow::Result<Lookup>)> = stream::iter(lookups)
            .buffer_unordered(self.concurrency.max(1))
            .collect()
            .await;
        // A user with parked requests has the next ones parked too: they
        // are sent after those, in order.
        let parked = match &self.directory {
            Directory::Local { .. } => {
                let names: Vec<&str> = users.keys().copied().collect();
                park::users(tx, self.courier.mode, &names).await?
            }
            Directory::Remote(_) => HashSet::new(),
        };
        let now = Utc::now();
        let mut failure = None;
        let mut to_send: Vec<(&str, Address)> = Vec::new();
        for (user, lookup) in lookups {
            let found = match lookup {
                Ok(Lookup::Found(address)) if !parked.contains(user) => {
                    to_send.push((user, address));
                    continue;
                }
                Ok(Lookup::Found(_)) => true,
                Ok(Lookup::Unknown) => false,
                Err(error) => {
                    failure.get_or_insert(error);
                    continue;
                }
            };
            for &i in &users[user] {
                let (received, mail) = &mails[i];
                match self.directory.parked_until(received) {
                    Some(until) if found || until > now => {
                        park::park(tx, self.courier.mode, mail, received, until.max(now)).await?
                    }
                    _ => refusals.refuse(received, self.unknown(user)),
                }
            }
        }
        // What is to be sent is claimed in the mail log, in one statement.
        let claimable: Vec<&Mail> = to_send
            .iter()
            .flat_map(|(user, _)| users[user].iter().map(|&i| &mails[i].1))
            .collect();
        let claims = log::claim(&self.courier.pool, &claimable, self.courier.mode).await?;
        let deliveries: Vec<_> = to_send
            .iter()
            .map(|(user, address)| {
                let queue: Vec<(&Mail, i32)> = users[user]
                    .iter()
                    .map(|&i| &mails[i].1)
                    .filter_map(|mail| match claims.get(&mail.event_id) {
                        Some(Claim::Send { attempt }) => Some((mail, *attempt)),
                        _ => None,
                    })
                    .collect();
                async move { this.courier.deliver_all(&queue, address).await }
            })
            .collect();
        let deliveries = stream::iter(deliveries)
            .buffer_unordered(self.concurrency.max(1))
            .collect::<Vec<_>>()
            .await;
        let by_id: HashMap<Uuid, &Received> = mails
            .iter()
            .map(|(received, mail)| (mail.event_id, *received))
            .collect();
        for delivered in deliveries {
            for (id, refused) in delivered.refused {
                refusals.refuse(by_id[&id], refused);
            }
            if let Some(error) = delivered.failed {
                failure.get_or_insert(error);
            }
        }
        // Every user's queue ran to its end or its first failure (none cut
        // off mid-send): a failure that may pass retries the batch.
        match failure {
            Some(error) => Err(error),
            None => Ok(refusals),
        }
    }
}

impl Mailer {
    /// Why a user's mails are refused: the user does not exist.
    fn unknown(&self, user: &str) -> Refused {
        let reason = match &self.directory {
            Directory::Remote(_) => format!("the users service has no user {user}"),
            Directory::Local { wait_for_user, .. } => format!(
                "user {user} is not in the address store, which has read past the request, \
                 {wait_for_user:?} after the request arrived"
            ),
        };
        Refused::new("unknown_user", reason)
    }
}
