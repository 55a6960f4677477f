//! The tasks of one service, named, with one way to stop: shutdown, or the
//! first task that fails, cancels the token every task holds; the rest get a
//! bounded grace period to finish their work in hand, and any that does not
//! stop in time is named in the log and aborted. (A task that simply has
//! nothing to do, such as a trigger that is switched off, may end early.)

use std::collections::HashMap;
use std::future::Future;
use std::time::Duration;

use tokio::task::{Id, JoinSet};

use crate::shutdown::CancellationToken;

/// A service's long-running tasks.
pub struct Tasks {
    set: JoinSet<(&'static str, anyhow::Result<()>)>,
    /// The tasks still running, by id.
    names: HashMap<Id, &'static str>,
    shutdown: CancellationToken,
}

impl Tasks {
    /// Tasks that stop when `shutdown` is cancelled (and cancel it when one ends).
    pub fn new(shutdown: CancellationToken) -> Self {
        Self {
            set: JoinSet::new(),
            names: HashMap::new(),
            shutdown,
        }
    }

    /// Runs `task` as `name`; it must return soon after the token fires.
    pub fn spawn<F>(&mut self, name: &'static str, task: F)
    where
        F: Future<Output = anyhow::Result<()>> + Send + 'static,
    {
        let handle = self.set.spawn(async move { (name, task.await) });
        self.names.insert(handle.id(), name);
    }

    /// Waits until a task fails or shutdown is asked for, then stops every
    /// task within `grace`. Returns the first failure, if any.
    pub async fn run(mut self, grace: Duration) -> anyhow::Result<()> {
        let mut first_error = None;
        while first_error.is_none() {
            tokio::select! {
                _ = self.shutdown.cancelled() => break,
                done = self.set.join_next() => match done {
                    Some(done) => first_error = self.finished(done),
                    None => break,
                },
            }
        }
        self.shutdown.cancel();
        let deadline = tokio::time::Instant::now() + grace;
        while !self.set.is_empty() {
            match tokio::time::timeout_at(deadline, self.set.join_next()).await {
                Ok(Some(done)) => {
                    let error = self.finished(done);
                    first_error = first_error.or(error);
                }
                Ok(None) => break,
                Err(_) => {
                    let left: Vec<&str> = self.names.values().copied().collect();
                    tracing::error!(tasks = ?left, grace_ms = grace.as_millis() as u64, "tasks did not stop in time; aborting them");
                    self.set.abort_all();
                    break;
                }
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    /// Notes a finished task; its error, if it failed.
    fn finished(
        &mut self,
        done: Result<(&'static str, anyhow::Result<()>), tokio::task::JoinError>,
    ) -> Option<anyhow::Error> {
        let id = match &done {
            Ok(_) => None,
            Err(join) => Some(join.id()),
        };
        match done {
            Ok((name, result)) => {
                self.names.retain(|_, n| *n != name);
                match result {
                    Ok(()) => {
                        tracing::info!(task = name, "task stopped");
                        None
                    }
                    Err(error) => {
                        tracing::error!(task = name, error = format!("{error:#}"), "task failed");
                        Some(error.context(format!("task {name}")))
                    }
                }
            }
            Err(join) => {
                let name = id.and_then(|id| self.names.remove(&id)).unwrap_or("?");
                tracing::error!(task = name, error = %join, "task panicked");
                Some(anyhow::anyhow!("task {name} panicked: {join}"))
            }
        }
    }
}
