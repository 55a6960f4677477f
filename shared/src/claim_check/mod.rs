//! The claim-check store: payloads too large for the stream live in Postgres;
//! the stream carries a small token, its sha256 and size.
//!
//! Write order: [`ClaimStore::put`] (state `pending`), produce the envelope,
//! then [`ClaimStore::commit`]. A payload whose produce failed, or whose
//! writer died in between, stays `pending`; after a grace period the
//! [`sweep::Sweeper`] looks for it on the topic: referenced, it is committed;
//! not, deleted. Every read checks the hash: corruption is an error, never
//! wrong data.

pub mod sweep;

use std::collections::HashMap;

use sha2::{Digest, Sha256};
use sqlx::PgPool;
use uuid::Uuid;

use crate::consume::{Received, Rejection};
use crate::event::{parse, ClaimRef, ClaimedEvent, Envelope, Event};

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
    #[error("claim-check payload {token} does not match its envelope: {what}")]
    Mismatch { token: Uuid, what: String },
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
            ClaimError::Mismatch { .. } => "claim_check_mismatch",
            ClaimError::BadPayload { .. } => "claim_check_invalid",
            ClaimError::Database(_) => "claim_check_unavailable",
        }
    }
}

/// Hex sha256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// The reference of content-addressed bytes: the token is the first 128
/// bits of their sha256, marked as a version 8 (custom) UUID, so the same
/// bytes always have the same token (see [`ClaimStore::put_content`]).
pub fn content_ref(bytes: &[u8], content_type: &str) -> ClaimRef {
    let digest = Sha256::digest(bytes);
    let mut token = [0u8; 16];
    token.copy_from_slice(&digest[..16]);
    ClaimRef {
        token: Uuid::new_v8(token),
        sha256: hex::encode(digest),
        size: bytes.len() as u64,
        content_type: content_type.to_owned(),
    }
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

    /// Stores `bytes` under their content reference ([`content_ref`]), so
    /// the same bytes are one payload however often they are stored
    /// (uploaded files, derived thumbnails). A new payload is `pending` until
    /// [`ClaimStore::commit`]; storing a pending one again restarts its grace.
    #[tracing::instrument(skip_all, fields(size = bytes.len()))]
    pub async fn put_content(&self, reference: &ClaimRef, bytes: &[u8]) -> Result<(), ClaimError> {
        let digest = hex::decode(&reference.sha256).unwrap_or_default();
        sqlx::query(
            "INSERT INTO claim_checks (token, payload, sha256, size_bytes, content_type)
             VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (token) DO UPDATE SET created_at = now()
             WHERE claim_checks.state = 'pending'",
        )
        .bind(reference.token)
        .bind(bytes)
        .bind(digest)
        .bind(bytes.len() as i64)
        .bind(&reference.content_type)
        .execute(&self.pool)
        .await?;
        Ok(())
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

    /// The stored bytes of many payloads in one query, each verified against
    /// its stored hash; tokens with no payload are absent from the map.
    pub async fn fetch_many(
        &self,
        tokens: &[Uuid],
    ) -> Result<HashMap<Uuid, Result<Vec<u8>, ClaimError>>, ClaimError> {
        let rows: Vec<(Uuid, Vec<u8>, Vec<u8>)> =
            sqlx::query_as("SELECT token, payload, sha256 FROM claim_checks WHERE token = ANY($1)")
                .bind(tokens)
                .fetch_all(&self.pool)
                .await?;
        Ok(rows
            .into_iter()
            .map(|(token, payload, stored)| {
                let actual = Sha256::digest(&payload);
                let checked = if actual.as_slice() == stored.as_slice() {
                    Ok(payload)
                } else {
                    Err(ClaimError::Corrupt {
                        token,
                        expected: hex::encode(stored),
                        actual: hex::encode(actual),
                    })
                };
                (token, checked)
            })
            .collect())
    }

    /// Resolves received claim-checked envelopes in one query: each becomes
    /// the full event, or the rejection (reason and code) that says why not.
    /// Inline events pass as they are. Fails only when the store cannot be
    /// read (transient).
    pub async fn resolve_received(
        &self,
        received: Vec<Received>,
    ) -> Result<Vec<Result<Received, Rejection>>, ClaimError> {
        let tokens: Vec<Uuid> = received
            .iter()
            .filter_map(|r| match &r.envelope {
                Envelope::Claimed(c) => Some(c.claim_check.token),
                Envelope::Inline(_) => None,
            })
            .collect();
        // One token may stand in several envelopes (content-addressed payloads).
        let fetched = if tokens.is_empty() {
            HashMap::new()
        } else {
            self.fetch_many(&tokens).await?
        };
        Ok(received
            .into_iter()
            .map(|r| {
                let Envelope::Claimed(claimed) = &r.envelope else {
                    return Ok(r);
                };
                let token = claimed.claim_check.token;
                let opened = match fetched.get(&token) {
                    None => Err(ClaimError::NotFound(token)),
                    Some(Err(ClaimError::Corrupt {
                        expected, actual, ..
                    })) => Err(ClaimError::Corrupt {
                        token,
                        expected: expected.clone(),
                        actual: actual.clone(),
                    }),
                    Some(Err(other)) => Err(ClaimError::BadPayload {
                        token,
                        expected: "stored payload",
                        reason: other.to_string(),
                    }),
                    Some(Ok(bytes)) => Self::open(claimed, bytes),
                };
                match opened {
                    Ok(event) => Ok(Received {
                        envelope: Envelope::Inline(event),
                        ..r
                    }),
                    Err(error) => {
                        metrics::counter!("kappa_claim_checks_rejected_total", "code" => error.code())
                            .increment(1);
                        Err(Rejection {
                            code: error.code(),
                            reason: error.to_string(),
                        })
                    }
                }
            })
            .collect())
    }

    /// The event in a payload fetched for `claimed`: its size and sha256
    /// must be the envelope's, and it must be an event of the envelope's
    /// type (with the envelope's key).
    pub fn open(claimed: &ClaimedEvent, bytes: &[u8]) -> Result<Event, ClaimError> {
        let ClaimRef {
            token,
            sha256,
            size,
            ..
        } = &claimed.claim_check;
        let token = *token;
        if bytes.len() as u64 != *size {
            return Err(ClaimError::Mismatch {
                token,
                what: format!("{} bytes stored, the envelope says {size}", bytes.len()),
            });
        }
        let actual = sha256_hex(bytes);
        if &actual != sha256 {
            return Err(ClaimError::Mismatch {
                token,
                what: format!("sha256 {actual}, the envelope says {sha256}"),
            });
        }
        let expected = claimed.event_type.as_str();
        let bad = |reason: String| ClaimError::BadPayload {
            token,
            expected,
            reason,
        };
        match parse(bytes).map_err(|e| bad(e.to_string()))? {
            Envelope::Inline(event) if event.body.event_type() != claimed.event_type => Err(bad(
                format!("payload is a {}", event.body.event_type().as_str()),
            )),
            Envelope::Inline(event) if event.key() != claimed.key => Err(bad(format!(
                "payload is about {}, the envelope about {}",
                event.key(),
                claimed.key
            ))),
            Envelope::Inline(event) => Ok(event),
            Envelope::Claimed(_) => Err(bad("payload is itself a claim check".into())),
        }
    }
}
