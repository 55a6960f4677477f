//! The stateful worker's parked requests (`mail_parked`). A request whose
//! user is not in the address store, once the store has read past it, may
//! still have its user on the way: created in the users service just
//! before, its `user_updated` not out of the outbox yet. Holding the
//! partition until it comes would hold every request behind it; instead the
//! worker parks the request, in the transaction that commits its offset,
//! and goes on. A user's later requests are parked behind its parked ones,
//! so its mails keep their order.
//!
//! The park task looks again whenever the store moves (at most every 250
//! ms, and at least every second): a parked request whose user appeared is
//! sent like any other (claimed in the mail log, so once); one still
//! without a user when its wait is over (`mailer.wait_for_user_ms` after it
//! arrived, by the wall clock: the user's event may never come) is
//! dead-lettered `unknown_user`, its record read back from the topic. Rows are
//! taken `FOR UPDATE SKIP LOCKED` and deleted in the same transaction, so
//! instances never work on the same request at once, and a crash leaves the
//! row to the next look (whose claim finds a mail already sent).

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use chrono::{DateTime, Utc};
use shared::consume::Received;
use shared::dlq::DeadLetters;
use shared::shutdown::CancellationToken;
use sqlx::PgConnection;
use uuid::Uuid;

use crate::courier::{Address, Courier};
use crate::log::{self, Claim};
use crate::mail::Mail;
use crate::store::Store;

/// Parked requests looked at per transaction.
const PAGE: i64 = 500;
/// The least time between two looks at the parked requests.
const LOOK_EVERY: Duration = Duration::from_millis(250);

/// Which of `users` have parked requests (of `mode`).
pub async fn users(
    tx: &mut PgConnection,
    mode: &str,
    users: &[&str],
) -> sqlx::Result<HashSet<String>> {
    let rows: Vec<String> = sqlx::query_scalar(
        "SELECT DISTINCT user_id FROM mail_parked WHERE mode = $1 AND user_id = ANY($2)",
    )
    .bind(mode)
    .bind(users)
    .fetch_all(&mut *tx)
    .await?;
    Ok(rows.into_iter().collect())
}

/// Parks the request `received` (its mail rendered) until `until`.
pub async fn park(
    tx: &mut PgConnection,
    mode: &str,
    mail: &Mail,
    received: &Received,
    until: DateTime<Utc>,
) -> anyhow::Result<()> {
    sqlx::query(
        "INSERT INTO mail_parked
           (mode, event_id, user_id, mail, origin_topic, origin_partition, origin_offset, decide_by)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
         ON CONFLICT DO NOTHING",
    )
    .bind(mode)
    .bind(mail.event_id)
    .bind(&mail.user_id)
    .bind(serde_json::to_value(mail)?)
    .bind(&received.topic)
    .bind(received.partition)
    .bind(received.offset)
    .bind(until)
    .execute(&mut *tx)
    .await
    .context("parking a mail request")?;
    metrics::counter!("kappa_mailer_parked_total", "mode" => mode.to_owned()).increment(1);
    Ok(())
}

/// The park task of a stateful worker.
pub struct Parked {
    pub courier: Arc<Courier>,
    pub store: Arc<Store>,
    pub dead_letters: DeadLetters,
    pub wait_for_user: Duration,
}

/// A parked request to dead-letter, with its code and reason.
type Dead<'r> = (&'r Row, &'static str, String);

/// One parked request.
#[derive(sqlx::FromRow)]
struct Row {
    event_id: Uuid,
    user_id: String,
    mail: serde_json::Value,
    origin_topic: String,
    origin_partition: i32,
    origin_offset: i64,
    decide_by: DateTime<Utc>,
}

impl Parked {
    /// Looks at the parked requests whenever the store moves, until shutdown.
    pub async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        loop {
            let advanced = self.store.advanced();
            let looked = tokio::time::Instant::now();
            match self.round().await {
                Ok(true) => continue,
                Ok(false) => {}
                Err(error) => {
                    tracing::warn!(
                        error = format!("{error:#}"),
                        "looking at parked mail requests failed; trying again"
                    )
                }
            }
            // The store moves every few ms under load: look again when it
            // did, but not more often than LOOK_EVERY.
            tokio::select! {
                _ = shutdown.cancelled() => return Ok(()),
                _ = advanced => {}
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
            tokio::select! {
                _ = shutdown.cancelled() => return Ok(()),
                _ = tokio::time::sleep_until(looked + LOOK_EVERY) => {}
            }
        }
    }

    /// One page of parked requests: sent, dead-lettered, or left waiting.
    /// `true` when the page was full (look again at once).
    async fn round(&self) -> anyhow::Result<bool> {
        let mode = self.courier.mode;
        let mut tx = self.courier.pool.begin().await?;
        let rows: Vec<Row> = sqlx::query_as(
            "SELECT event_id, user_id, mail, origin_topic, origin_partition, origin_offset, decide_by
             FROM mail_parked WHERE mode = $1
             ORDER BY origin_partition, origin_offset
             LIMIT $2 FOR UPDATE SKIP LOCKED",
        )
        .bind(mode)
        .bind(PAGE)
        .fetch_all(&mut *tx)
        .await?;
        let full = rows.len() as i64 == PAGE;
        // Per user, in stream order.
        let mut queues: Vec<(String, Vec<Row>)> = Vec::new();
        for row in rows {
            match queues.iter_mut().find(|(user, _)| *user == row.user_id) {
                Some((_, queue)) => queue.push(row),
                None => queues.push((row.user_id.clone(), vec![row])),
            }
        }
        let mut done: Vec<Uuid> = Vec::new();
        let mut dead: Vec<Dead<'_>> = Vec::new();
        for (user, queue) in &queues {
            match self.store.lookup(user)? {
                Some((email, version)) => {
                    let address = Address {
                        email,
                        version: Some(version as i64),
                    };
                    let (sent, refused) = self.send(queue, &address).await?;
                    done.extend(sent);
                    dead.extend(refused);
                }
                None => {
                    // Each in order, as long as its wait is over.
                    let now = Utc::now();
                    for row in queue.iter().take_while(|r| r.decide_by <= now) {
                        let reason = format!(
                            "user {} did not appear in the address store within {:?} of the request's arrival",
                            row.user_id, self.wait_for_user
                        );
                        dead.push((row, "unknown_user", reason));
                    }
                }
            }
        }
        self.dead_letter(&dead).await?;
        done.extend(dead.iter().map(|(row, _, _)| row.event_id));
        sqlx::query("DELETE FROM mail_parked WHERE mode = $1 AND event_id = ANY($2)")
            .bind(mode)
            .bind(&done)
            .execute(&mut *tx)
            .await?;
        let (left,): (i64,) = sqlx::query_as("SELECT count(*) FROM mail_parked WHERE mode = $1")
            .bind(mode)
            .fetch_one(&mut *tx)
            .await?;
        tx.commit().await?;
        metrics::gauge!("kappa_mailer_parked", "mode" => mode).set(left as f64);
        Ok(full)
    }

    /// Sends a user's parked mails in order; returns the ones sent (now or
    /// before), and the ones the server refused, to dead-letter.
    async fn send<'r>(
        &self,
        queue: &'r [Row],
        address: &Address,
    ) -> anyhow::Result<(Vec<Uuid>, Vec<Dead<'r>>)> {
        let mails: Vec<Mail> = queue
            .iter()
            .map(|row| serde_json::from_value(row.mail.clone()))
            .collect::<Result<_, _>>()
            .context("reading a parked mail")?;
        let claims = log::claim(
            &self.courier.pool,
            &mails.iter().collect::<Vec<_>>(),
            self.courier.mode,
        )
        .await?;
        let mut done = Vec::new();
        let mut to_send = Vec::new();
        for mail in &mails {
            match claims.get(&mail.event_id) {
                Some(Claim::Send { attempt }) => to_send.push((mail, *attempt)),
                // Sent before (a crash came between sending and this delete).
                _ => done.push(mail.event_id),
            }
        }
        let delivered = self.courier.deliver_all(&to_send, address).await;
        let mut refused = Vec::new();
        for (mail, _) in &to_send[..delivered.handled] {
            match delivered
                .refused
                .iter()
                .find(|(id, _)| *id == mail.event_id)
            {
                Some((_, why)) => {
                    let row = queue
                        .iter()
                        .find(|r| r.event_id == mail.event_id)
                        .expect("a parked row per mail");
                    refused.push((row, why.code, why.reason.clone()));
                }
                None => done.push(mail.event_id),
            }
        }
        if let Some(error) = delivered.failed {
            tracing::warn!(
                error = format!("{error:#}"),
                "sending a parked mail failed; trying again later"
            );
        }
        Ok((done, refused))
    }

    /// Dead-letters the requests (each acknowledged before its row goes):
    /// their records read back with one reader, sent all at once.
    async fn dead_letter(&self, dead: &[Dead<'_>]) -> anyhow::Result<()> {
        if dead.is_empty() {
            return Ok(());
        }
        let origins = dead
            .iter()
            .map(|(row, _, _)| {
                (
                    row.origin_topic.clone(),
                    row.origin_partition,
                    row.origin_offset,
                )
            })
            .collect();
        let records = self.dead_letters.fetch_origins(origins).await?;
        let sends = records
            .iter()
            .zip(dead)
            .map(|(record, (_, code, reason))| self.dead_letters.send(record, code, reason));
        futures::future::try_join_all(sends).await?;
        Ok(())
    }
}
