//! Giving memory back once a large piece of work is over. A replay holds
//! hundreds of MB for a few seconds; an idle service should not keep them.
//! Both allocators in a service process keep freed memory for reuse: the
//! services' own (mimalloc, which purges a freed page after a delay, and
//! only when some thread calls into it again: in an idle process, or for
//! pages of a thread that has ended, that may be never) and glibc's malloc
//! (librdkafka's fetch and produce buffers), whose arenas are trimmed only
//! at their top.

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

/// Returns the freed memory of both allocators to the OS: every arena's
/// free pages, now rather than when some thread next allocates. Costs a
/// few ms; call it when a large run has ended, not per request.
pub fn release() {
    // SAFETY: both calls only walk the allocators' own free lists.
    unsafe {
        libmimalloc_sys::mi_collect(true);
        libc::malloc_trim(0);
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
}
