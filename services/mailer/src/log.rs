//! The mail log (`mail_log`): exactly one mail per request and mode, through
//! crashes. Before sending, the request's row is written `pending` and
//! committed; after the SMTP server accepted the mail, it is marked `sent`
//! (its own small commit, so the window stays as short as one statement). A
//! request found `sent` is skipped; one found `pending` was interrupted
//! between the two and is sent again, with the same `Message-ID`: the one
//! window where a receiver may see a second copy (and can drop it by that id).
//! One the server refused for good is marked `refused`, with its reason.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use uuid::Uuid;

use crate::mail::Mail;

/// What the log says about a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claim {
    /// Not sent yet: send it (`attempt` counts from 1).
    Send { attempt: i32 },
    /// Already sent: skip.
    Sent,
}

/// Records that `mails` (distinct requests) are about to be sent by
/// `mode`, in one statement; returns what the log says about each.
pub async fn claim(
    pool: &PgPool,
    mails: &[&Mail],
    mode: &str,
) -> sqlx::Result<HashMap<Uuid, Claim>> {
    if mails.is_empty() {
        return Ok(HashMap::new());
    }
    let ids: Vec<Uuid> = mails.iter().map(|m| m.event_id).collect();
    let users: Vec<&str> = mails.iter().map(|m| m.user_id.as_str()).collect();
    let subjects: Vec<&str> = mails.iter().map(|m| m.subject.as_str()).collect();
    let requested: Vec<Option<DateTime<Utc>>> = mails.iter().map(|m| m.requested_at).collect();
    let rows: Vec<(Uuid, String, i32)> = sqlx::query_as(
        "INSERT INTO mail_log (event_id, mode, user_id, subject, requested_at)
         SELECT id, $2, user_id, subject, requested_at
           FROM UNNEST($1::uuid[], $3::text[], $4::text[], $5::timestamptz[])
                AS m(id, user_id, subject, requested_at)
         ON CONFLICT (event_id, mode) DO UPDATE
           SET attempts = mail_log.attempts + CASE WHEN mail_log.state = 'sent' THEN 0 ELSE 1 END
         RETURNING event_id, state, attempts",
    )
    .bind(&ids)
    .bind(mode)
    .bind(&users)
    .bind(&subjects)
    .bind(&requested)
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(id, state, attempts)| {
            let claim = match state.as_str() {
                "sent" => Claim::Sent,
                _ => Claim::Send { attempt: attempts },
            };
            (id, claim)
        })
        .collect())
}

/// Marks `mail` sent to `address` (taken from `version` of the user).
pub async fn sent(
    pool: &PgPool,
    mail: &Mail,
    mode: &str,
    address: &str,
    version: Option<i64>,
) -> sqlx::Result<()> {
    sqlx::query(
        "UPDATE mail_log SET state = 'sent', address = $3, user_version = $4, sent_at = now()
         WHERE event_id = $1 AND mode = $2",
    )
    .bind(mail.event_id)
    .bind(mode)
    .bind(address)
    .bind(version)
    .execute(pool)
    .await?;
    Ok(())
}

/// Marks `mail` refused for good by the SMTP server for `address`.
pub async fn refused(
    pool: &PgPool,
    mail: &Mail,
    mode: &str,
    address: &str,
    reason: &str,
) -> sqlx::Result<()> {
    sqlx::query(
        "UPDATE mail_log SET state = 'refused', address = $3, refused_reason = $4
         WHERE event_id = $1 AND mode = $2",
    )
    .bind(mail.event_id)
    .bind(mode)
    .bind(address)
    .bind(reason)
    .execute(pool)
    .await?;
    Ok(())
}
