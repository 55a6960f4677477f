//! Sending: one user's claimed mails, in their order, over SMTP to the
//! address found for the user, each marked sent in the mail log once the
//! server accepted it. Used by the worker's batches and by the stateful
//! worker's parked requests alike.

use std::time::Instant;

use shared::worker::Refused;
use sqlx::PgPool;
use uuid::Uuid;

use crate::log;
use crate::mail::{Mail, SendError, Smtp};

/// Where a user's mails go: the address, and the user's version it is from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Address {
    pub email: String,
    pub version: Option<i64>,
}

/// What became of one user's mails: how many of the queue were handled
/// (sent, or refused for good: those are listed by event id), and the
/// failure that may pass and ended the queue there.
#[derive(Debug, Default)]
pub struct Delivered {
    pub handled: usize,
    pub refused: Vec<(Uuid, Refused)>,
    pub failed: Option<anyhow::Error>,
}

pub struct Courier {
    pub pool: PgPool,
    pub smtp: Smtp,
    pub mode: &'static str,
}

impl Courier {
    /// Sends `queue` (one user's mails with their claimed attempt, in
    /// order) to `address`, up to the first failure that may pass: a mail
    /// the server refuses for good is refused and the next one goes on.
    pub async fn deliver_all(&self, queue: &[(&Mail, i32)], address: &Address) -> Delivered {
        let mut delivered = Delivered::default();
        for &(mail, attempt) in queue {
            match self.deliver(mail, attempt, address).await {
                Ok(()) => delivered.handled += 1,
                Err(Failure::Refused(reason)) => {
                    delivered.handled += 1;
                    delivered
                        .refused
                        .push((mail.event_id, Refused::new("smtp_refused", reason)));
                }
                Err(Failure::Transient(error)) => {
                    delivered.failed = Some(error);
                    break;
                }
            }
        }
        delivered
    }

    /// Sends one claimed mail and marks it sent.
    async fn deliver(&self, mail: &Mail, attempt: i32, address: &Address) -> Result<(), Failure> {
        if attempt > 1 {
            // Interrupted between sending and marking it sent: the one
            // window where the receiver gets a second copy (same Message-ID).
            metrics::counter!("kappa_mailer_resent_total", "mode" => self.mode).increment(1);
        }
        let started = Instant::now();
        match self.smtp.send(mail, &address.email).await {
            Ok(()) => {}
            Err(SendError::Refused(reason)) => {
                log::refused(&self.pool, mail, self.mode, &address.email, &reason)
                    .await
                    .map_err(|e| Failure::Transient(e.into()))?;
                return Err(Failure::Refused(reason));
            }
            Err(error @ SendError::Unavailable(_)) => return Err(Failure::Transient(error.into())),
        }
        self.stage("smtp", started);
        let started = Instant::now();
        log::sent(&self.pool, mail, self.mode, &address.email, address.version)
            .await
            .map_err(|e| Failure::Transient(e.into()))?;
        self.stage("log", started);
        metrics::counter!("kappa_mailer_sent_total", "mode" => self.mode).increment(1);
        if let Some(ts) = mail.requested_at {
            let waited = (chrono::Utc::now() - ts).num_milliseconds().max(0) as f64 / 1e3;
            metrics::histogram!("kappa_mailer_request_to_sent_seconds", "mode" => self.mode)
                .record(waited);
        }
        Ok(())
    }

    /// Records how long a stage of sending took.
    pub fn stage(&self, stage: &'static str, started: Instant) {
        metrics::histogram!("kappa_mailer_stage_seconds", "mode" => self.mode, "stage" => stage)
            .record(started.elapsed().as_secs_f64());
    }
}

/// Why one mail did not leave.
enum Failure {
    /// For good: the server refused it.
    Refused(String),
    /// It may work later.
    Transient(anyhow::Error),
}
