//! The stateful worker's own store of addresses: `user_id -> (email,
//! version)` in an embedded database (redb) in the service's data directory,
//! built from the `user_updated` events of the topic. A feeder thread reads
//! every partition from where the store stands and writes each batch of
//! updates together with the partitions' new positions, in one write: the
//! store and its offsets never disagree. An empty store is rebuilt from the
//! beginning of the topic; the store is ready once it reached the end
//! offsets it saw at start.
//!
//! Anyone who can write to the topic can write a `user_updated`, keyed
//! right and with any version. The store takes on the stream's word only
//! the next version of what it holds (version 1 of a user it does not
//! hold); a version that jumps ahead, a change without a version, or the
//! same version with another address is asked of the users service, whose
//! answer is stored instead. A user the service does not know lives on the
//! stream alone (typed in, loadgen's): its update is taken as written.

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::BorrowedMessage;
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use redb::{Database, ReadableTable, TableDefinition};
use shared::config::KafkaConfig;
use shared::consume::classify;
use shared::event::{peek_type, Envelope, Event, EventBody, EventType, UserUpdated};
use shared::kafka::ReaderContext;
use shared::shutdown::CancellationToken;
use tokio::sync::Notify;

use crate::users_client::{Found, UsersClient};

const USERS: TableDefinition<&str, (&str, u64)> = TableDefinition::new("users");
const POSITIONS: TableDefinition<u32, i64> = TableDefinition::new("positions");
/// `topic`: the topic the store was built from.
const META: TableDefinition<&str, &str> = TableDefinition::new("meta");

/// The store's page cache, at most.
const CACHE_BYTES: usize = 16 << 20;
/// Updates written per store transaction, at most.
const WRITE_EVERY: usize = 2_000;
/// How long an update read waits for its write, at most: the store's part
/// of the stateful worker's latency (requests wait for the store to pass them).
const WRITE_AFTER: Duration = Duration::from_millis(10);

pub struct Store {
    db: Database,
    /// Per partition, the next offset the store has not read (-1: none yet).
    positions: Vec<AtomicI64>,
    ready: AtomicBool,
    /// Woken at every write.
    advanced: Notify,
}

impl Store {
    /// Opens (or creates) the store in `dir` for `topic`, whose partitions
    /// have the `(low, high)` watermarks given. A store written from another
    /// topic, or from an earlier topic of this name (a position past the end
    /// of a partition: the topic was recreated), is emptied and rebuilt.
    pub fn open(dir: &Path, topic: &str, watermarks: &[(i64, i64)]) -> anyhow::Result<Arc<Store>> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        // redb caches up to 1 GiB by default, and keeps what a rebuild
        // touched: the store's working set is its B-tree's inner pages.
        let db = Database::builder()
            .set_cache_size(CACHE_BYTES)
            .create(dir.join("users.redb"))
            .context("opening the address store")?;
        let positions: Vec<AtomicI64> = watermarks.iter().map(|_| AtomicI64::new(-1)).collect();
        let mut foreign = None;
        {
            let write = db.begin_write()?;
            write.open_table(USERS)?;
            write.open_table(POSITIONS)?;
            let stored = write
                .open_table(META)?
                .get("topic")?
                .map(|t| t.value().to_owned());
            if stored.as_deref().is_some_and(|stored| stored != topic) {
                foreign = Some(format!("it was built from topic {stored:?}"));
            }
            for row in write.open_table(POSITIONS)?.iter()? {
                let (p, next) = row?;
                let (p, next) = (p.value() as usize, next.value());
                match watermarks.get(p) {
                    Some(&(_, high)) if next <= high => positions[p].store(next, Ordering::Relaxed),
                    _ => foreign = Some(format!("partition {p} at {next} is past the topic's end")),
                }
            }
            if let Some(why) = &foreign {
                tracing::warn!(
                    topic,
                    "the address store does not match the topic ({why}): rebuilding it"
                );
                write.delete_table(USERS)?;
                write.delete_table(POSITIONS)?;
                write.open_table(USERS)?;
                write.open_table(POSITIONS)?;
                positions
                    .iter()
                    .for_each(|p| p.store(-1, Ordering::Relaxed));
            }
            write.open_table(META)?.insert("topic", topic)?;
            write.commit()?;
        }
        Ok(Arc::new(Store {
            db,
            positions,
            ready: AtomicBool::new(false),
            advanced: Notify::new(),
        }))
    }

    /// The address and version of `user`, if the store has one.
    pub fn lookup(&self, user: &str) -> anyhow::Result<Option<(String, u64)>> {
        let read = self.db.begin_read()?;
        let table = read.open_table(USERS)?;
        Ok(table.get(user)?.map(|v| {
            let (email, version) = v.value();
            (email.to_owned(), version)
        }))
    }

    /// The next offset of `partition` the store has not read yet.
    pub fn position(&self, partition: i32) -> i64 {
        self.positions
            .get(partition as usize)
            .map_or(-1, |p| p.load(Ordering::Acquire))
    }

    /// Waits until the store read `partition` past `offset`, for up to
    /// `limit`; whether it did.
    pub async fn wait_past(&self, partition: i32, offset: i64, limit: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let advanced = self.advanced.notified();
            if self.position(partition) > offset {
                return true;
            }
            // (The sleep also covers a write between the check and the wait.)
            let step = Duration::from_millis(20).min(deadline - tokio::time::Instant::now());
            if step.is_zero() {
                return false;
            }
            let _ = tokio::time::timeout(step, advanced).await;
        }
    }

    /// Resolves at the store's next write (create it before looking, so no
    /// write between the look and the wait is missed).
    pub fn advanced(&self) -> tokio::sync::futures::Notified<'_> {
        self.advanced.notified()
    }

    /// Whether the store reached the end offsets it saw at start.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    /// Applies `updates` and moves `positions`, in one write. What an
    /// update does is [`judge`]d against the stored address; `ask` answers
    /// for those the stream alone does not vouch for.
    fn write(
        &self,
        updates: &[UserUpdated],
        positions: &[(i32, i64)],
        ask: &mut dyn FnMut(&str) -> Asked,
    ) -> anyhow::Result<()> {
        let mut write = self.db.begin_write()?;
        // Not synced to disk at each write (up to 100 a second): a crash
        // may lose the last writes, updates and positions together, and the
        // store reads those records again. What it lends to mails is only
        // what it has read past, lost or not.
        write.set_durability(redb::Durability::Eventual);
        {
            let mut users = write.open_table(USERS)?;
            for u in updates {
                let stored = users
                    .get(u.user_id.as_str())?
                    .map(|v| (v.value().0.to_owned(), v.value().1));
                let (email, version) = match judge(u, stored.as_ref()) {
                    Verdict::Stale => continue,
                    Verdict::Take => (u.email.clone(), u.version.unwrap_or(1)),
                    Verdict::Ask => match ask(&u.user_id) {
                        Asked::User { email, version } => (email, version),
                        // Not the service's user: the stream's own.
                        Asked::Unknown => (
                            u.email.clone(),
                            u.version.or(stored.map(|s| s.1)).unwrap_or(0),
                        ),
                        Asked::Unanswered => continue,
                    },
                };
                users.insert(u.user_id.as_str(), (email.as_str(), version))?;
            }
            let mut table = write.open_table(POSITIONS)?;
            for &(p, next) in positions {
                table.insert(p as u32, next)?;
            }
        }
        write.commit()?;
        for &(p, next) in positions {
            if let Some(slot) = self.positions.get(p as usize) {
                slot.store(next, Ordering::Release);
            }
        }
        self.advanced.notify_waiters();
        Ok(())
    }
}

/// What an update does to the stored `(email, version)` of its user.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    /// The next version (the users service publishes every version, in
    /// order, keyed by the user): stored as written.
    Take,
    /// Older than the stored one, or the same: nothing to do.
    Stale,
    /// Not vouched for by the stream alone: the users service decides.
    Ask,
}

fn judge(update: &UserUpdated, stored: Option<&(String, u64)>) -> Verdict {
    match (update.version, stored) {
        (Some(1), None) => Verdict::Take,
        (Some(v), Some((_, s))) if v == s + 1 => Verdict::Take,
        (Some(v), Some((_, s))) if v < *s => Verdict::Stale,
        (Some(v), Some((email, s))) if v == *s && *email == update.email => Verdict::Stale,
        // A jump ahead, a first version above 1, the same version with
        // another address, or no version at all.
        _ => Verdict::Ask,
    }
}

/// The users service's answer for an update [`judge`] could not take.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Asked {
    User {
        email: String,
        version: u64,
    },
    /// The service has no such user.
    Unknown,
    /// The service did not answer within [`ASK_FOR`]: the update is not
    /// taken (counted, logged).
    Unanswered,
}

/// How long the store keeps asking a users service that fails.
const ASK_FOR: Duration = Duration::from_secs(30);

/// Who answers for the updates the stream alone does not vouch for.
pub struct Witness {
    pub users: Arc<UsersClient>,
    /// The runtime the client's calls run on (the store's thread is not
    /// one of its workers).
    pub runtime: tokio::runtime::Handle,
}

impl Witness {
    fn ask(&self, user: &str, shutdown: &CancellationToken) -> Asked {
        let until = Instant::now() + ASK_FOR;
        let answer = loop {
            match self.runtime.block_on(self.users.find(user)) {
                Ok(Found::User { email, version }) => {
                    break Asked::User {
                        email,
                        version: version.max(0) as u64,
                    }
                }
                Ok(Found::Unknown) => break Asked::Unknown,
                Err(error) if Instant::now() >= until || shutdown.is_cancelled() => {
                    tracing::warn!(user, error = %format!("{error:#}"),
                        "address store: a user update the users service could not confirm is not taken");
                    break Asked::Unanswered;
                }
                Err(_) => std::thread::sleep(Duration::from_millis(500)),
            }
        };
        let answer_label = match &answer {
            Asked::User { .. } => "user",
            Asked::Unknown => "unknown",
            Asked::Unanswered => "unanswered",
        };
        metrics::counter!("kappa_mailer_store_asked_total", "answer" => answer_label).increment(1);
        answer
    }
}

/// Feeds `store` from every partition of `topic` until `shutdown`, on a
/// thread of its own (polling and the store's writes both block).
pub fn feed(
    store: Arc<Store>,
    witness: Witness,
    kafka: &KafkaConfig,
    topic: &str,
    shutdown: CancellationToken,
) -> anyhow::Result<std::thread::JoinHandle<anyhow::Result<()>>> {
    let (kafka, topic) = (kafka.clone(), topic.to_owned());
    Ok(std::thread::Builder::new()
        .name("address-store".into())
        .spawn(move || run(&store, &witness, &kafka, &topic, &shutdown))?)
}

fn run(
    store: &Store,
    witness: &Witness,
    kafka: &KafkaConfig,
    topic: &str,
    shutdown: &CancellationToken,
) -> anyhow::Result<()> {
    // Assign-only (every partition, whoever processes the mails): the group
    // id is required by librdkafka, never joined.
    // A position below the first offset kept (retention): from there.
    let tuning = [("auto.offset.reset", "earliest")];
    let consumer: BaseConsumer<ReaderContext> = shared::kafka::reader_config(
        kafka,
        "kappa-address-store",
        &[&tuning[..], &shared::kafka::STREAM_QUEUE[..]].concat(),
    )
    .create_with_context(ReaderContext::new("address-store"))
    .context("creating the store's reader")?;
    let timeout = Duration::from_secs(10);
    let partitions = store.positions.len() as i32;
    let mut list = TopicPartitionList::new();
    let mut targets = Vec::new();
    for p in 0..partitions {
        let (_, high) = consumer.fetch_watermarks(topic, p, timeout)?;
        targets.push(high);
        let start = match store.position(p) {
            next if next >= 0 => Offset::Offset(next),
            _ => Offset::Beginning,
        };
        list.add_partition_offset(topic, p, start)?;
    }
    consumer.assign(&list)?;
    let started = Instant::now();
    let mut reached = vec![false; partitions as usize];
    let mut updates: Vec<UserUpdated> = Vec::new();
    let mut moved: Vec<(i32, i64)> = Vec::new();
    let mut opened: Option<Instant> = None;
    let mut busy = false;
    while !shutdown.is_cancelled() {
        // Unwritten updates are written within WRITE_AFTER of the first.
        let wait = opened.map_or(Duration::from_millis(100), |o| {
            WRITE_AFTER.saturating_sub(o.elapsed())
        });
        match consumer.poll(wait) {
            Some(Ok(message)) => {
                busy = true;
                let (p, offset) = (message.partition(), message.offset());
                moved.push((p, offset + 1));
                opened.get_or_insert_with(Instant::now);
                if let Some(update) = user_update(&message) {
                    updates.push(update);
                }
                if offset + 1 >= targets[p as usize] {
                    reached[p as usize] = true;
                }
            }
            Some(Err(KafkaError::PartitionEOF(p))) => reached[p as usize] = true,
            Some(Err(error)) => tracing::warn!(%error, "address store: consumer error"),
            // Nothing new: what this thread freed while busy goes back.
            None if std::mem::take(&mut busy) => shared::memory::collect_thread(),
            None => {}
        }
        let due = opened.is_some_and(|o| o.elapsed() >= WRITE_AFTER);
        if !moved.is_empty() && (moved.len() >= WRITE_EVERY || due) {
            store.write(&updates, &latest(&moved), &mut |user| {
                witness.ask(user, shutdown)
            })?;
            updates.clear();
            moved.clear();
            opened = None;
        }
        if !store.is_ready() && reached.iter().all(|r| *r) && moved.is_empty() {
            store.ready.store(true, Ordering::Release);
            tracing::info!(
                seconds = started.elapsed().as_secs_f64(),
                "address store caught up"
            );
        }
    }
    Ok(())
}

/// The user update a record carries, checked like every consumer checks
/// what it reads (parse, bounds, keyed by its user); other records are
/// passed over on their `type` alone.
fn user_update(message: &BorrowedMessage<'_>) -> Option<UserUpdated> {
    if message.payload().and_then(peek_type) != Some(EventType::UserUpdated) {
        return None;
    }
    match classify(message).ok()?.envelope {
        Envelope::Inline(Event {
            body: EventBody::UserUpdated(update),
            ..
        }) => Some(update),
        _ => None,
    }
}

/// The highest position per partition.
fn latest(moved: &[(i32, i64)]) -> Vec<(i32, i64)> {
    let mut out: Vec<(i32, i64)> = Vec::new();
    for &(p, next) in moved {
        match out.iter_mut().find(|(q, _)| *q == p) {
            Some(slot) => slot.1 = slot.1.max(next),
            None => out.push((p, next)),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn update(user: &str, email: &str, version: u64) -> UserUpdated {
        UserUpdated {
            user_id: user.into(),
            email: email.into(),
            name: None,
            version: Some(version),
        }
    }

    fn scratch_dir(name: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("kappa-store-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    /// A users service that is never asked.
    fn unasked(user: &str) -> Asked {
        panic!("{user} asked of the users service")
    }

    #[test]
    fn keeps_the_newest_version_and_its_positions_across_opens() {
        let dir = scratch_dir("versions");
        let store = Store::open(&dir, "events", &[(0, 10), (0, 10)]).unwrap();
        let updates = [1, 2, 3].map(|v| update("ann", &format!("ann@v{v}"), v));
        store
            .write(
                &[&updates[..], &[update("ann", "ann@v2", 2)]].concat(),
                &[(1, 7)],
                &mut unasked,
            )
            .unwrap();
        assert_eq!(store.lookup("ann").unwrap(), Some(("ann@v3".into(), 3)));
        drop(store);
        let store = Store::open(&dir, "events", &[(0, 10), (0, 12)]).unwrap();
        assert_eq!((store.position(0), store.position(1)), (-1, 7));
        assert_eq!(store.lookup("ann").unwrap(), Some(("ann@v3".into(), 3)));
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_store_of_another_or_a_recreated_topic_is_rebuilt() {
        let dir = scratch_dir("foreign");
        let store = Store::open(&dir, "events", &[(0, 10)]).unwrap();
        store
            .write(&[update("ann", "ann@v1", 1)], &[(0, 9)], &mut unasked)
            .unwrap();
        drop(store);
        // Another topic: emptied.
        let store = Store::open(&dir, "other", &[(0, 10)]).unwrap();
        assert_eq!(
            (store.position(0), store.lookup("ann").unwrap()),
            (-1, None)
        );
        store
            .write(&[update("bob", "bob@v1", 1)], &[(0, 9)], &mut unasked)
            .unwrap();
        drop(store);
        // The same name, recreated (ends before the stored position): emptied.
        let store = Store::open(&dir, "other", &[(0, 4)]).unwrap();
        assert_eq!(
            (store.position(0), store.lookup("bob").unwrap()),
            (-1, None)
        );
        std::fs::remove_dir_all(dir).unwrap();
    }

    /// The stream is taken at its word for the next version only; what
    /// jumps ahead, comes without a version or changes an address under the
    /// same version is the users service's to answer, and its answer is
    /// what the store keeps.
    #[test]
    fn only_the_next_version_is_taken_on_the_streams_word() {
        let dir = scratch_dir("trust");
        let store = Store::open(&dir, "events", &[(0, 10)]).unwrap();
        let mut asked = Vec::new();
        let mut service = |user: &str| {
            asked.push(user.to_owned());
            match user {
                "ann" => Asked::User {
                    email: "ann@real".into(),
                    version: 2,
                },
                "typed" => Asked::Unknown,
                _ => Asked::Unanswered,
            }
        };
        let unversioned = UserUpdated {
            version: None,
            ..update("typed", "typed@kcat", 0)
        };
        store
            .write(
                &[
                    update("ann", "ann@v1", 1),
                    update("ann", "ann@v2", 2),
                    // Forged: far ahead, then the same version elsewhere.
                    update("ann", "evil@forged", 999),
                    update("ann", "evil@same", 2),
                    unversioned,
                    update("zed", "zed@v5", 5),
                ],
                &[(0, 6)],
                &mut service,
            )
            .unwrap();
        assert_eq!(asked, ["ann", "ann", "typed", "zed"]);
        assert_eq!(store.lookup("ann").unwrap(), Some(("ann@real".into(), 2)));
        assert_eq!(
            store.lookup("typed").unwrap(),
            Some(("typed@kcat".into(), 0))
        );
        assert_eq!(store.lookup("zed").unwrap(), None, "unanswered: not taken");
        std::fs::remove_dir_all(dir).unwrap();
    }
}
