//! The runtime every worker shares: consume a topic in a consumer group,
//! apply batches of events, and commit each batch's effects together with
//! the offsets it consumed, exactly once. A worker implements [`Worker`] and
//! picks its mode; the loop, batching, dead letters, claim checks, metrics,
//! rebalances and shutdown are this module's.
//!
//! ```text
//!             bounded channel (backpressure)
//!  poll thread ─────────── parsed records ───────────▶ applier task ──▶ Postgres transaction
//!   │  ▲                                                │  ▲             (Postgres mode), or
//!   │  └────────── seeks (after a fenced commit) ───────┘  │             Kafka transaction
//!   └── rebalance callback: Assign / Revoke ── control ────┘             (Kafka mode)
//!                                 (oneshot reply before it returns)
//! ```
//!
//! - The **poll thread** only polls and sorts (`filter`): a record of a type
//!   the worker does not read is skipped on its `type` alone; one it reads is
//!   parsed (or rejected), skipped if the worker does not want the event,
//!   else tagged with its partition's assignment epoch and handed on with
//!   the record as read. Skipped records go on as runs, one message each.
//!   When the channel is full it waits, which is the backpressure.
//! - The **applier** (one async task) batches records, closed at
//!   `max_batch_events` or `max_batch_ms` after the first (when the window
//!   closes, records already waiting in the channel join first, up to
//!   `max_batch_events`: a backlog fills batches by count), resolves
//!   claim-checked envelopes, and commits through the mode. Skipped records
//!   cost no commit of their own: their offsets ride with the batch's last
//!   range, or commit alone when the poll thread has caught up, or
//!   `kafka.skipped_commit_ms` after the first of them.
//! - **Rebalances**: the callback hands assignments and revocations to the
//!   applier and waits for its answer (a oneshot, no shared lock): an
//!   assignment returns where each partition starts once its state is
//!   loaded; a revocation returns once the batch in hand is committed.
//! - **Epochs**: every assignment of a partition, and every seek back after a
//!   fenced commit, gets a new epoch; records polled before it carry an older
//!   one and are dropped, so a record is never applied out of its place.
//! - **Event ids are idempotent** (`dedupe`): a record whose event id was
//!   applied (or skipped) among the `kafka.dedupe_window` records before it
//!   in its partition is a repeat: its offset commits, the worker never sees
//!   it. The window is rebuilt from the topic itself when a partition
//!   (re)starts, so it always matches the committed offsets, in both modes;
//!   replays apply the same rule (`shared::replay`).
//!
//! Two modes, one guarantee (every input's effect is committed once):
//! - [`Postgres`]: results and `consumer_offsets` in one database
//!   transaction, the offsets advanced with a compare-and-set.
//! - [`KafkaTransactions`]: output records and the consumed offsets in one
//!   Kafka transaction (`send_offsets_to_transaction` with the group's
//!   metadata, so a zombie is fenced by the group generation); readers use
//!   `read_committed`.
//!
//! Failure cases, and the tests that prove them:
//! - a record that does not parse, names an unknown type, or breaks a
//!   bound: the DLQ with the reason, acknowledged before its offset commits
//!   (`recommendation/tests/dlq_first.rs`, `tests/poison.rs`);
//! - a claim-checked envelope whose payload is missing or does not match:
//!   the DLQ (`claim_check_missing`, `claim_check_mismatch`);
//! - an event the worker refuses (an outcome: `apply` returns it in its
//!   [`Refusals`]): the DLQ with the worker's code and reason, in the same
//!   commit as the rest of the batch, nothing applied twice, nothing
//!   bisected (`shared/tests/outcomes.rs`, `mailer/tests/lookups.rs`);
//! - records that are not the worker's: read, never handed over, their
//!   offsets committed with the next commit; a worker killed while it skips
//!   a long run of them loses and repeats nothing (`shared/tests/outcomes.rs`,
//!   `products/tests/skips.rs`);
//! - data the database refuses (encoding, index size, a constraint, out of
//!   range), or a [`Refused`] raised as an error: the batch is bisected to
//!   the event(s) that cause it; those go to the DLQ with the reason, the
//!   rest commits (`shared/tests/worker.rs`);
//! - the database or broker unreachable: retried with backoff, the batch's
//!   partitions reloaded first, so a batch applies once whatever failed
//!   half-way (`recommendation/tests/exactly_once.rs`);
//! - a commit whose stored offsets are not what this instance expects (a
//!   zombie after a rebalance, or a commit whose acknowledgement was lost):
//!   dropped, state and position reloaded, and with them the window of
//!   recent ids (`recommendation/tests/fencing.rs`,
//!   `shared/tests/transactions.rs`);
//! - the same event id twice (a producer's retry after a timeout that had
//!   in fact been written, a relay or a redrive sending it again): applied
//!   once, the repeat acknowledged and counted
//!   (`kappa_sink_duplicates_skipped_total`), also when the repeat comes
//!   after a crash and restart; a repeat of an event this consumer
//!   dead-lettered is applied, so a redrive after a fix takes effect, and
//!   the repeat of an event refused in the same batch is tried too
//!   (`recommendation/tests/duplicates.rs`, `mailer/tests/duplicates.rs`,
//!   `shared/tests/duplicates.rs` for the Kafka mode);
//! - stuck (events in hand, nothing committed for `stuck_after`): `/readyz`
//!   says so, and the lag gauge keeps counting.

mod applier;
mod batch;
mod commit;
mod dedupe;
mod filter;
mod health;
mod kafka;
pub mod offsets;
mod outputs;
mod poll;
mod postgres;
mod ranges;
mod rebalance;
mod resolve;

use std::future::Future;
use std::time::Duration;

use sqlx::{PgConnection, PgPool};

use crate::config::{KafkaConfig, WorkerConfig};
use crate::consume::Received;
use crate::event::{Event, EventType};

pub use crate::kafka::Output;
pub use applier::run;
pub use health::Health;
pub use offsets::Position;
pub use outputs::Outputs;

/// Why a worker will never apply an event (a user that does not exist, an
/// address the mail server refuses, a product uploaded twice): a code for
/// the DLQ's `dlq.code` and a reason a person can act on.
#[derive(Debug, thiserror::Error)]
#[error("{reason}")]
pub struct Refused {
    pub code: &'static str,
    pub reason: String,
}

impl Refused {
    pub fn new(code: &'static str, reason: impl Into<String>) -> Self {
        Self {
            code,
            reason: reason.into(),
        }
    }
}

/// The events of a batch the worker refused: an outcome, like an effect.
/// Each goes to the DLQ with its code and reason, committed with the rest
/// of the batch; the worker writes no effect of a refused event.
#[derive(Debug, Default)]
pub struct Refusals(Vec<(i32, i64, Refused)>);

impl Refusals {
    /// No event refused.
    pub fn none() -> Self {
        Self::default()
    }

    /// `event` (one of the batch's) is refused.
    pub fn refuse(&mut self, event: &Received, refused: Refused) {
        self.0.push((event.partition, event.offset, refused));
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub(crate) fn into_inner(self) -> Vec<(i32, i64, Refused)> {
        self.0
    }
}

/// Where a worker's effects go, committed together with its offsets.
pub trait Mode: Send + Sized + 'static {
    /// What [`Worker::apply`] writes to.
    type Out: Send;
}

/// Results in PostgreSQL, in one transaction with the offsets.
pub struct Postgres;

impl Mode for Postgres {
    type Out = PgConnection;
}

/// Output records, in one Kafka transaction with the offsets.
pub struct KafkaTransactions;

impl Mode for KafkaTransactions {
    type Out = Outputs;
}

/// A worker: what it reads, the state it keeps per partition, and how a
/// batch of events becomes effects. Methods run on the applier task.
pub trait Worker: Send + 'static {
    /// `Postgres` or `KafkaTransactions`.
    type Mode: Mode;

    /// The event types the worker reads. A record of any other type costs
    /// it a look at the record's `type` and nothing more: not parsed, not
    /// handed over, its offset committed with the next commit. (Records of
    /// these types are checked in full: what is wrong with one goes to the
    /// DLQ from this worker too.)
    const READS: &'static [EventType];

    /// Of the inline events of those types, the ones the worker acts on
    /// (all, unless it says otherwise); the rest are skipped like records
    /// of other types. Claim-checked events are resolved and handed over
    /// without asking.
    fn wants(_event: &Event) -> bool {
        true
    }

    /// This instance now owns `partition`: load its state.
    fn load(
        &mut self,
        _pool: &PgPool,
        _partition: i32,
    ) -> impl Future<Output = anyhow::Result<()>> + Send {
        async { Ok(()) }
    }

    /// `partition` left this instance, or its state must be reloaded.
    fn unload(&mut self, _partition: i32) {}

    /// Applies `events` (in per-partition offset order) and writes the
    /// effects through `out`, which commits them with the offsets. An event
    /// the worker will never apply is refused in the [`Refusals`] it
    /// returns (dead-lettered in the same commit; no effect of it written).
    /// An error is a failure: retried (the partitions' state reloaded
    /// first), unless it is about the data (a database refusing it, or a
    /// [`Refused`] raised after the state had changed), when the batch is
    /// bisected to the event that causes it and that one is dead-lettered.
    fn apply(
        &mut self,
        out: &mut <Self::Mode as Mode>::Out,
        events: &[Received],
    ) -> impl Future<Output = anyhow::Result<Refusals>> + Send;
}

/// How a worker consumes.
#[derive(Debug, Clone)]
pub struct Options {
    /// Consumer group, and the consumer's name in `consumer_offsets`.
    pub group: String,
    pub topic: String,
    pub max_batch_events: usize,
    pub max_batch_ms: u64,
    /// `/readyz` fails when events were in hand this long without a commit.
    pub stuck_after: Duration,
    /// This instance's name, stable across restarts (Kafka mode: the
    /// transactional id is `<group>-<instance>`, so a restarted instance
    /// aborts what its previous life left open).
    pub instance: String,
}

impl Options {
    /// Group `group` on `topic` as instance `instance`, batching as configured.
    pub fn new(
        config: &WorkerConfig,
        group: impl Into<String>,
        topic: impl Into<String>,
        instance: impl Into<String>,
    ) -> Self {
        Options {
            group: group.into(),
            topic: topic.into(),
            max_batch_events: config.max_batch_events,
            max_batch_ms: config.max_batch_ms,
            stuck_after: config.stuck_after(),
            instance: instance.into(),
        }
    }
}

/// What a worker runs with.
#[derive(Clone)]
pub struct Setup {
    pub kafka: KafkaConfig,
    pub pool: PgPool,
    pub options: Options,
}

/// A mode worker `W` can run in: both of this crate's ([`Postgres`],
/// [`KafkaTransactions`]) and no other (sealed: how a mode commits is the
/// runtime's own business).
pub trait Start<W: Worker>: Mode + sealed::Starts<W> {}

impl<W: Worker, M: Mode + sealed::Starts<W>> Start<W> for M {}

pub(crate) mod sealed {
    use std::future::Future;
    use std::sync::Arc;

    use super::commit::Commit;
    use super::rebalance::Consumer;
    use super::{Setup, Worker};

    /// How a mode starts committing for worker `W` (implemented by both modes).
    pub trait Starts<W: Worker> {
        type Committer: Commit<W>;

        fn start(
            setup: &Setup,
            consumer: Arc<Consumer>,
        ) -> impl Future<Output = anyhow::Result<Self::Committer>> + Send;
    }
}
