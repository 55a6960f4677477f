//! The claim-check store: payloads too large for the stream live in Postgres;
//! the stream carries a small token, its sha256 and size.
//!
//! Write order: [`ClaimStore::put`] (state `pending`), produce the envelope,
//! then [`ClaimStore::commit`]. A payload whose produce failed, or whose
//! writer died in between, stays `pending` and is removed by the sweeper after
//! a grace period. Every read checks the hash: corruption is an error, never
//! wrong data.

use std::time::Duration;

use sha2::{Digest, Sha256};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::event::{parse, ClaimRef, Envelope, Event};

/// Why a payload could not be had.
#[derive(Debug, thiserror::Error)]
pub enum ClaimError {
    #[error("claim-check payload {0} not found")]
    NotFound(Uuid),
    #[error("claim-check payload {token} failed its integrity check: sha256 is {actual}, expected {expected}")]
    Corrupt {
        token: Uuid,
        expected: String,
        actual: String,
    },
    #[error("claim-check payload {token} is not a valid {expected} event: {reason}")]
    BadPayload {
        token: Uuid,
        expected: &'static str,
        reason: String,
    },
    #[error("claim-check store unavailable: {0}")]
    Database(#[from] sqlx::Error),
}

impl ClaimError {
    /// A stable reason code for DLQ headers and HTTP errors.
    pub fn code(&self) -> &'static str {
        match self {
            ClaimError::NotFound(_) => "claim_check_missing",
            ClaimError::Corrupt { .. } => "claim_check_corrupt",
            ClaimError::BadPayload { .. } => "claim_check_invalid",
            ClaimError::Database(_) => "claim_check_unavailable",
        }
    }
}

/// Hex sha256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Payload storage in the `claim_checks` table.
#[derive(Clone)]
pub struct ClaimStore {
    pool: PgPool,
}

impl ClaimStore {
    /// A store on `pool` (migrations applied).
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }

    /// Stores `bytes` as a pending payload and returns its reference.
    #[tracing::instrument(skip_all, fields(size = bytes.len()))]
    pub async fn put(&self, bytes: &[u8], content_type: &str) -> Result<ClaimRef, ClaimError> {
        let token = Uuid::now_v7();
        let digest = Sha256::digest(bytes);
        sqlx::query(
            "INSERT INTO claim_checks (token, payload, sha256, size_bytes, content_type)
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(token)
        .bind(bytes)
        .bind(digest.as_slice())
        .bind(bytes.len() as i64)
        .bind(content_type)
        .execute(&self.pool)
        .await?;
        Ok(ClaimRef {
            token,
            sha256: hex::encode(digest),
            size: bytes.len() as u64,
            content_type: content_type.to_owned(),
        })
    }

    /// Marks payloads as referenced by an acknowledged event: the sweeper keeps them.
    pub async fn commit(&self, tokens: &[Uuid]) -> Result<(), ClaimError> {
        if tokens.is_empty() {
            return Ok(());
        }
        sqlx::query(
            "UPDATE claim_checks SET state = 'committed', committed_at = now()
             WHERE token = ANY($1) AND state = 'pending'",
        )
        .bind(tokens)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The exact stored bytes, verified against the stored hash.
    pub async fn fetch(&self, token: Uuid) -> Result<Vec<u8>, ClaimError> {
        Ok(self.fetch_typed(token).await?.0)
    }

    /// The exact stored bytes and their content type, verified against the stored hash.
    #[tracing::instrument(skip(self))]
    pub async fn fetch_typed(&self, token: Uuid) -> Result<(Vec<u8>, String), ClaimError> {
        let row: Option<(Vec<u8>, Vec<u8>, String)> = sqlx::query_as(
            "SELECT payload, sha256, content_type FROM claim_checks WHERE token = $1",
        )
        .bind(token)
        .fetch_optional(&self.pool)
        .await?;
        let (payload, stored, content_type) = row.ok_or(ClaimError::NotFound(token))?;
        let actual = Sha256::digest(&payload);
        if actual.as_slice() != stored.as_slice() {
            return Err(ClaimError::Corrupt {
                token,
                expected: hex::encode(stored),
                actual: hex::encode(actual),
            });
        }
        Ok((payload, content_type))
    }

    /// The full event behind an envelope: inline events as they are,
    /// claim-checked ones fetched, verified against the envelope's hash and
    /// parsed.
    pub async fn resolve(&self, envelope: Envelope) -> Result<Event, ClaimError> {
        let claimed = match envelope {
            Envelope::Inline(event) => return Ok(event),
            Envelope::Claimed(claimed) => claimed,
        };
        let ClaimRef { token, sha256, .. } = &claimed.claim_check;
        let bytes = self.fetch(*token).await?;
        let actual = sha256_hex(&bytes);
        if &actual != sha256 {
            return Err(ClaimError::Corrupt {
                token: *token,
                expected: sha256.clone(),
                actual,
            });
        }
        let expected = claimed.event_type.as_str();
        let bad = |reason: String| ClaimError::BadPayload {
            token: *token,
            expected,
            reason,
        };
        match parse(&bytes).map_err(|e| bad(e.to_string()))? {
            Envelope::Inline(event) if event.body.event_type() == claimed.event_type => Ok(event),
            Envelope::Inline(event) => Err(bad(format!(
                "payload is a {}",
                event.body.event_type().as_str()
            ))),
            Envelope::Claimed(_) => Err(bad("payload is itself a claim check".into())),
        }
    }

    /// Deletes pending payloads older than `grace`; returns how many.
    pub async fn sweep(&self, grace: Duration) -> Result<u64, ClaimError> {
        let done = sqlx::query(
            "DELETE FROM claim_checks
             WHERE state = 'pending' AND created_at < now() - make_interval(secs => $1)",
        )
        .bind(grace.as_secs_f64())
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }

    /// Runs [`ClaimStore::sweep`] every `interval` until `shutdown`.
    pub fn spawn_sweeper(
        self,
        interval: Duration,
        grace: Duration,
        shutdown: CancellationToken,
    ) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(interval);
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tick.tick() => {}
                }
                match self.sweep(grace).await {
                    Ok(0) => {}
                    Ok(removed) => {
                        tracing::info!(removed, "swept uncommitted claim-check payloads")
                    }
                    Err(error) => {
                        tracing::warn!(%error, "claim-check sweep failed; retrying next interval")
                    }
                }
            }
        })
    }
}
