//! The transactional outbox's relay: a service writes its change and an
//! outbox row (the event exactly as it goes on the topic) in one Postgres
//! transaction; the relay publishes unsent rows (keyed by the row's key
//! column), waits for the broker's acknowledgement, then marks them sent,
//! all while holding the rows' locks (`FOR UPDATE SKIP LOCKED`), so any
//! number of relays (one per instance) never publish a row twice at once. A
//! relay killed after the write committed and before it published leaves the
//! row unsent: the next relay publishes it. Killed after the broker
//! acknowledged and before the row was marked, the row goes out once more,
//! with the same event id; readers deduplicate by id or version.
//!
//! An outbox table has `id bigserial`, the key column, `payload text`,
//! `created_at` and `sent_at` (used by `users`, the product creator and the
//! page-count coordinator).

use std::sync::Arc;
use std::time::Duration;

use sqlx::PgPool;
use tokio::sync::Notify;

use crate::kafka_batch::{BatchProducer, Outgoing};
use crate::shutdown::CancellationToken;

/// Rows published per transaction.
const BATCH: i64 = 500;

pub struct Relay {
    pub pool: PgPool,
    /// The outbox table, and the column whose value keys each record.
    pub table: &'static str,
    pub key_column: &'static str,
    pub producer: std::sync::Arc<BatchProducer>,
    pub topic: String,
    /// Woken by this process's writes; other instances' rows are found by polling.
    pub wake: Arc<Notify>,
    pub poll_interval: Duration,
    /// Tests only: how long to hold the locked rows before publishing them,
    /// the window in which a test kills the process (zero in service).
    pub pause_before_publish: Duration,
}

impl Relay {
    /// Publishes until `shutdown`.
    pub async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        crate::catalogue::zero(
            "kappa_outbox_failures_total",
            &[("outbox", self.table.into())],
        );
        let mut backoff = Duration::from_millis(100);
        loop {
            let published = match self.publish_some().await {
                Ok(n) => {
                    backoff = Duration::from_millis(100);
                    n
                }
                Err(error) => {
                    tracing::warn!(
                        error = format!("{error:#}"),
                        retry_in_ms = backoff.as_millis() as u64,
                        "outbox relay failed; retrying"
                    );
                    metrics::counter!("kappa_outbox_failures_total", "outbox" => self.table)
                        .increment(1);
                    tokio::select! {
                        _ = shutdown.cancelled() => return Ok(()),
                        _ = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                    continue;
                }
            };
            self.report_lag().await;
            if published == BATCH as usize {
                continue; // more waiting
            }
            tokio::select! {
                _ = shutdown.cancelled() => return Ok(()),
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(self.poll_interval) => {}
            }
        }
    }

    /// One transaction: lock unsent rows, publish them, mark them sent.
    async fn publish_some(&self) -> anyhow::Result<usize> {
        let mut tx = self.pool.begin().await?;
        let rows: Vec<(i64, String, String)> = sqlx::query_as(&format!(
            "SELECT id, {key}, payload FROM {table} WHERE sent_at IS NULL
             ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED",
            key = self.key_column,
            table = self.table,
        ))
        .bind(BATCH)
        .fetch_all(&mut *tx)
        .await?;
        if rows.is_empty() {
            return Ok(0);
        }
        if !self.pause_before_publish.is_zero() {
            tracing::info!(
                rows = rows.len(),
                outbox = self.table,
                "rows locked; pausing before publishing (test)"
            );
            tokio::time::sleep(self.pause_before_publish).await;
        }
        let messages: Vec<Outgoing<'_>> = rows
            .iter()
            .map(|(_, key, payload)| Outgoing {
                key: key.as_bytes(),
                payload: payload.as_bytes(),
                timestamp: None,
            })
            .collect();
        let outcomes = self.producer.send_all(&self.topic, &messages).await;
        // Mark what the broker acknowledged; the rest stays for the next round.
        let sent: Vec<i64> = rows
            .iter()
            .zip(&outcomes)
            .filter(|(_, outcome)| outcome.is_ok())
            .map(|((id, _, _), _)| *id)
            .collect();
        sqlx::query(&format!(
            "UPDATE {} SET sent_at = now() WHERE id = ANY($1)",
            self.table
        ))
        .bind(&sent)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        metrics::counter!("kappa_outbox_published_total", "outbox" => self.table)
            .increment(sent.len() as u64);
        if let Some(Err(error)) = outcomes.into_iter().find(Result::is_err) {
            anyhow::bail!("the broker did not acknowledge every row: {error}");
        }
        Ok(sent.len())
    }

    /// `kappa_outbox_unsent` and `kappa_outbox_lag_seconds` (age of the oldest unsent row).
    async fn report_lag(&self) {
        let lag: Result<(i64, Option<f64>), _> = sqlx::query_as(&format!(
            "SELECT count(*), extract(epoch FROM now() - min(created_at))::float8
             FROM {} WHERE sent_at IS NULL",
            self.table
        ))
        .fetch_one(&self.pool)
        .await;
        if let Ok((unsent, age)) = lag {
            metrics::gauge!("kappa_outbox_unsent", "outbox" => self.table).set(unsent as f64);
            metrics::gauge!("kappa_outbox_lag_seconds", "outbox" => self.table)
                .set(age.unwrap_or(0.0));
        }
    }
}
