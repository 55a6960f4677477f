//! Giving memory back once a large piece of work is over. A replay holds
//! hundreds of MB for a few seconds; an idle service should not keep them.
//! Both allocators in a service process keep freed memory for reuse: the
//! services' own (mimalloc, which purges a freed page after a delay, and
//! only when some thread calls into it again: in an idle process, or for
//! pages of a thread that has ended, that may be never) and glibc's malloc
//! (librdkafka's fetch and produce buffers), whose arenas are trimmed only
//! at their top.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::shutdown::CancellationToken;

/// `mi_option_purge_delay` in mimalloc v3's `mimalloc.h` (the bindings of
/// libmimalloc-sys 0.1 name v2's options only); a unit test checks it is
/// that option by its default.
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Pages mimalloc frees go back to the OS at once instead of after its
/// purge delay: for services that sit idle after bursts (the dashboard
/// after a replay, the gateway after a large upload). Measured on the
/// replay benchmark: idle RSS 35 MiB instead of 60-145 MiB, replay time
/// within the rounds' spread. Call it first thing in `main`.
pub fn purge_at_once() {
    // SAFETY: setting an option is a store into mimalloc's option table;
    // mallopt only changes how glibc picks arenas for threads to come.
    unsafe {
        libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, 0);
        // librdkafka's threads in one glibc arena rather than one each:
        // per-thread arenas kept 13-14 MiB each resident after a replay,
        // in use or not, where malloc_trim could not reach.
        libc::mallopt(libc::M_ARENA_MAX, 1);
    }
}

/// Returns the freed memory of both allocators to the OS: the calling
/// thread's mimalloc heap and every glibc arena's free pages, now rather
/// than when some thread next allocates. The last step of
/// `release_everywhere`, which services call.
fn release() {
    // SAFETY: both calls only walk the allocators' own free lists.
    unsafe {
        libmimalloc_sys::mi_collect(true);
        libc::malloc_trim(0);
    }
}

/// Returns what the calling thread's mimalloc heap holds freed (memory
/// other threads freed for it included): for a plain thread outside the
/// runtime, such as a worker's poll thread going idle, whose heap no
/// runtime-wide release reaches.
pub fn collect_thread() {
    // SAFETY: collects the calling thread's own heap.
    unsafe { libmimalloc_sys::mi_collect(true) };
}

/// Releases memory once a burst of work is over, for services whose work
/// comes in requests of any size (the gateway): each piece of work is
/// `note`d, and `run` releases when work was noted since the last release
/// and none for a whole `quiet` period. An idle service pays nothing; a busy
/// one is not trimmed mid-burst.
#[derive(Debug, Default)]
pub struct IdleRelease {
    noted: AtomicU64,
    releases: AtomicU64,
}

impl IdleRelease {
    /// A piece of work happened (its memory is freed or about to be).
    pub fn note(&self) {
        self.noted.fetch_add(1, Ordering::Relaxed);
    }

    /// How many times `run` released memory.
    pub fn releases(&self) -> u64 {
        self.releases.load(Ordering::Relaxed)
    }

    /// Every `quiet`, until `shutdown`: releases if work was noted before
    /// the last tick and none since.
    pub async fn run(
        self: Arc<Self>,
        quiet: Duration,
        shutdown: CancellationToken,
    ) -> anyhow::Result<()> {
        let (mut released, mut seen) = (0, 0);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return Ok(()),
                _ = tokio::time::sleep(quiet) => {}
            }
            let noted = self.noted.load(Ordering::Relaxed);
            if noted != released && noted == seen {
                release_everywhere().await?;
                released = noted;
                self.releases.fetch_add(1, Ordering::Relaxed);
                metrics::counter!("kappa_memory_releases_total").increment(1);
            }
            seen = noted;
        }
    }
}

/// `release` for a whole tokio service: mimalloc collects only the calling
/// thread's heap, and the free pages of a busy period sit in the runtime
/// workers' heaps. One task per worker meets the others at a rendezvous, so
/// that each worker runs one collection (a few ms; call it when the service
/// is quiet). The rendezvous gives up after `RENDEZVOUS`: a worker busy with
/// something else (or a second call at the same time) costs a collection,
/// never a hang. Measured on the gateway after the ingest benchmark: idle RSS
/// 23-27 MiB, 55-60 MiB with `release` on one thread.
pub async fn release_everywhere() -> anyhow::Result<()> {
    // One at a time: two calls' tasks would hold each other's workers.
    static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    let _turn = ONE_AT_A_TIME.lock().await;
    let workers = tokio::runtime::Handle::current().metrics().num_workers();
    let rendezvous = Arc::new(Rendezvous::new(workers));
    let collections: Vec<_> = (0..workers)
        .map(|_| {
            let rendezvous = rendezvous.clone();
            tokio::spawn(async move {
                rendezvous.meet(RENDEZVOUS);
                // SAFETY: collects the calling thread's own heap.
                unsafe { libmimalloc_sys::mi_collect(true) };
            })
        })
        .collect();
    for collection in collections {
        collection.await?;
    }
    tokio::task::spawn_blocking(release).await?;
    Ok(())
}

/// How long a worker waits for the others at `release_everywhere`'s rendezvous.
const RENDEZVOUS: Duration = Duration::from_millis(200);

/// A barrier whose wait ends after a timeout as well.
struct Rendezvous {
    arrived: std::sync::Mutex<usize>,
    all_here: std::sync::Condvar,
    expected: usize,
}

impl Rendezvous {
    fn new(expected: usize) -> Self {
        Self {
            arrived: std::sync::Mutex::new(0),
            all_here: std::sync::Condvar::new(),
            expected,
        }
    }

    /// Blocks until `expected` callers arrived, or `timeout` passed.
    fn meet(&self, timeout: Duration) {
        let mut arrived = self.arrived.lock().unwrap_or_else(|e| e.into_inner());
        *arrived += 1;
        if *arrived >= self.expected {
            self.all_here.notify_all();
            return;
        }
        let _ = self
            .all_here
            .wait_timeout_while(arrived, timeout, |arrived| *arrived < self.expected);
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_purge_delay_option_is_the_one_set() {
        // The purge delay's default in the mimalloc this crate builds is
        // 1,000 ms (`options.c`); an upgrade that renumbered the options
        // would fail here first.
        let delay = unsafe { libmimalloc_sys::mi_option_get(super::MI_OPTION_PURGE_DELAY) };
        assert_eq!(delay, 1000);
        super::release();
    }

    /// Calls at the same time end (they once held each other's workers at
    /// their barriers for good). On a runtime of its own, so that a hang
    /// fails the test instead of stopping it.
    #[test]
    fn concurrent_releases_end() {
        let (done, ended) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async {
                let calls: Vec<_> = (0..4)
                    .map(|_| tokio::spawn(super::release_everywhere()))
                    .collect();
                for call in calls {
                    call.await.unwrap().unwrap();
                }
            });
            let _ = done.send(());
        });
        ended
            .recv_timeout(std::time::Duration::from_secs(30))
            .expect("release_everywhere calls hung");
    }

    /// Busy: no release; quiet after work: one, on every worker; idle: none.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn memory_is_released_once_the_work_stops() {
        use std::sync::Arc;
        use std::time::Duration;
        let idle = Arc::new(super::IdleRelease::default());
        let shutdown = crate::shutdown::CancellationToken::new();
        // Wide margins: only a scheduling stall of a whole second could
        // look like a quiet period to it.
        let quiet = Duration::from_secs(1);
        let running = tokio::spawn(idle.clone().run(quiet, shutdown.clone()));
        for _ in 0..150 {
            idle.note();
            drop(std::hint::black_box(vec![1u8; 1 << 20]));
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(idle.releases(), 0, "released while busy");
        tokio::time::sleep(quiet * 4).await;
        assert_eq!(idle.releases(), 1, "released once after the work");
        tokio::time::sleep(quiet * 4).await;
        assert_eq!(idle.releases(), 1, "released again while idle");
        shutdown.cancel();
        running.await.unwrap().unwrap();
    }
}
