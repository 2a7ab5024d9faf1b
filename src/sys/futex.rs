//! `futex(2)` wait and wake on a 32-bit word, private to this process.
//!
//! Deadlines are absolute `CLOCK_MONOTONIC` times (`FUTEX_WAIT_BITSET` with
//! `FUTEX_BITSET_MATCH_ANY`), so a wait that is interrupted and retried never
//! waits longer in total than asked, and never returns before the deadline
//! because of a clock change.

use crate::loom::process::AtomicU32;
use std::time::Duration;

/// An absolute point on `CLOCK_MONOTONIC`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Deadline {
    secs: i64,
    nanos: u32,
}

impl Deadline {
    /// The clock's origin: no earlier than any deadline ever made. A
    /// placeholder where no deadline was set yet.
    pub(crate) const ORIGIN: Deadline = Deadline { secs: 0, nanos: 0 };

    /// Now on `CLOCK_MONOTONIC`.
    pub fn now() -> Deadline {
        let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
        // SAFETY: `ts` is a valid timespec to write; CLOCK_MONOTONIC always exists.
        unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
        Deadline { secs: ts.tv_sec, nanos: ts.tv_nsec as u32 }
    }

    /// `timeout` from now; saturates far in the future instead of overflowing.
    pub fn after(timeout: Duration) -> Deadline {
        let now = Deadline::now();
        let secs = i64::try_from(timeout.as_secs()).unwrap_or(i64::MAX);
        let mut nanos = now.nanos + timeout.subsec_nanos();
        let mut carry = 0;
        if nanos >= 1_000_000_000 {
            nanos -= 1_000_000_000;
            carry = 1;
        }
        match now.secs.checked_add(secs).and_then(|s| s.checked_add(carry)) {
            Some(secs) => Deadline { secs, nanos },
            None => Deadline { secs: i64::MAX, nanos: 999_999_999 },
        }
    }

    /// Nanoseconds since the clock's origin (boot, for `CLOCK_MONOTONIC`);
    /// saturates at `u64::MAX`.
    pub(crate) fn as_nanos(&self) -> u64 {
        (self.secs.max(0) as u64).saturating_mul(1_000_000_000).saturating_add(self.nanos as u64)
    }

    /// Whether the deadline has passed.
    pub fn has_passed(&self) -> bool {
        Deadline::now() >= *self
    }

    fn as_timespec(&self) -> libc::timespec {
        libc::timespec { tv_sec: self.secs, tv_nsec: self.nanos as libc::c_long }
    }
}

/// Blocks while `*word == expected`, until woken or until `deadline` passes.
///
/// Returns `false` only when the deadline passed; `true` on a wake, on a
/// mismatch (`EAGAIN`) or on a spurious return, so callers re-check their
/// state word in a loop. `EINTR` is retried.
pub fn wait(word: &AtomicU32, expected: u32, deadline: Option<Deadline>) -> bool {
    let ts = deadline.map(|d| d.as_timespec());
    let ts_ptr = ts.as_ref().map_or(std::ptr::null(), |t| t as *const libc::timespec);
    loop {
        // SAFETY: `word` is a live, aligned u32 for the whole call; `ts_ptr` is
        // null or points at a timespec that outlives the call. FUTEX_WAIT_BITSET
        // reads the timeout as an absolute CLOCK_MONOTONIC time.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_futex,
                word.as_ptr(),
                libc::FUTEX_WAIT_BITSET | libc::FUTEX_PRIVATE_FLAG,
                expected,
                ts_ptr,
                std::ptr::null::<u32>(),
                libc::FUTEX_BITSET_MATCH_ANY,
            )
        };
        if rc == 0 {
            return true;
        }
        match std::io::Error::last_os_error().raw_os_error() {
            Some(libc::EINTR) => continue,
            Some(libc::ETIMEDOUT) => return false,
            _ => return true, // EAGAIN: the word already changed.
        }
    }
}

/// Wakes up to `count` threads blocked in [`wait`] on `word`; returns how many woke.
pub fn wake(word: &AtomicU32, count: u32) -> usize {
    let count = count.min(i32::MAX as u32) as i32;
    // SAFETY: `word` is a live, aligned u32; FUTEX_WAKE only reads the address.
    let rc =
        unsafe { libc::syscall(libc::SYS_futex, word.as_ptr(), libc::FUTEX_WAKE | libc::FUTEX_PRIVATE_FLAG, count) };
    rc.max(0) as usize
}
