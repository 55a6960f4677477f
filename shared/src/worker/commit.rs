//! What the applier needs of a mode: load and forget partitions, commit a
//! batch; and the backoff every retry loop shares.

use std::future::Future;
use std::time::Duration;

use super::batch::Batch;
use super::Worker;
use crate::shutdown::CancellationToken;

/// How a mode commits a batch for worker `W`.
pub trait Commit<W: Worker>: Send {
    /// Loads `partition` for `worker`; returns where it starts (`None`: the
    /// group's committed offset, or the beginning).
    fn assign(
        &mut self,
        worker: &mut W,
        partition: i32,
    ) -> impl Future<Output = anyhow::Result<Option<i64>>> + Send;

    /// Forgets `partition` (after the batch in hand was committed).
    fn revoke(&mut self, worker: &mut W, partition: i32);

    /// Commits `batch` (retrying what can be retried, until `shutdown`).
    fn commit(
        &mut self,
        worker: &mut W,
        batch: &mut Batch,
        shutdown: &CancellationToken,
    ) -> impl Future<Output = Committed> + Send;
}

/// What a commit came to.
pub enum Committed {
    /// Every record of the batch is accounted for (applied or dead-lettered).
    Done,
    /// Another instance committed these partitions (or this one did, and
    /// lost the answer): the batch was dropped; each partition restarts at
    /// the position given.
    Fenced(Vec<(i32, Option<i64>)>),
    /// Shutdown came while retrying; nothing more was committed.
    Cancelled,
}

/// Exponential backoff between retries, cut short by shutdown.
pub(super) struct Backoff(Duration);

impl Backoff {
    pub fn new() -> Self {
        Self(Duration::from_millis(100))
    }

    /// Waits before the next attempt; `false` when shutting down instead.
    pub async fn wait(&mut self, shutdown: &CancellationToken) -> bool {
        if shutdown.is_cancelled() {
            return false;
        }
        let wait = self.0;
        self.0 = (self.0 * 2).min(Duration::from_secs(5));
        tokio::select! {
            _ = shutdown.cancelled() => false,
            _ = tokio::time::sleep(wait) => true,
        }
    }
}
