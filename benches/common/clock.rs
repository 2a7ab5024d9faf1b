//! The clocks the `runtime` and `sync` benches read (mounted by both with
//! `#[path]`; a bench target cannot share a module otherwise).

use std::time::Duration;

/// Which clock a benchmark reads.
#[derive(Clone, Copy)]
pub enum Clock {
    /// `Instant` (CLOCK_MONOTONIC).
    Wall,
    /// CLOCK_THREAD_CPUTIME_ID: CPU time of the calling thread only.
    ThreadCpu,
}

impl Clock {
    pub fn now(self) -> Duration {
        let id = match self {
            Clock::Wall => libc::CLOCK_MONOTONIC,
            Clock::ThreadCpu => libc::CLOCK_THREAD_CPUTIME_ID,
        };
        let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
        // SAFETY: `ts` is a valid, writable timespec and `id` a clock Linux has.
        let rc = unsafe { libc::clock_gettime(id, &mut ts) };
        assert_eq!(rc, 0, "clock_gettime: {}", std::io::Error::last_os_error());
        Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
    }
}
