//! A coarse clock per worker thread, for the dump's "in this state for ...".
//!
//! Reading `CLOCK_MONOTONIC` costs ~20 ns, more than a whole yield between
//! two coroutines (~16 ns), so the switch paths never read it. Instead each
//! worker keeps the time of its latest reading in a thread-local, and a
//! coroutine that switches out stores that value in its task (one load and
//! one store). The worker refreshes it where it reads the clock anyway or
//! where a reading is cheap next to the work around it: when it starts,
//! after every idle sleep, when its timers are due, when it answers a dump,
//! and about every thousand scheduling rounds (a countdown in the round
//! that already runs every 31st: ~0.03 ns per round).
//!
//! So a stamp is never later than the event, and early by at most the time
//! since the last refresh: microseconds on a worker that switches often,
//! more on one whose coroutines run long between switches. The dump
//! reports durations measured from such stamps; they may over-report by
//! that much, never under-report.

use crate::sys::futex::Deadline;
use std::cell::Cell;

/// Fairness rounds (every ~20th scheduling round) between refreshes.
const REFRESH_EVERY: u32 = 48;

thread_local! {
    /// The latest reading on this worker thread, in nanoseconds of
    /// `CLOCK_MONOTONIC`; 0 on a thread that is not a worker.
    static COARSE_NOW: Cell<u64> = const { Cell::new(0) };
    /// Calls of `refresh_now_and_then` left until the next refresh.
    static UNTIL_REFRESH: Cell<u32> = const { Cell::new(0) };
}

/// `CLOCK_MONOTONIC` now, in nanoseconds (a real reading).
pub(crate) fn now() -> u64 {
    Deadline::now().as_nanos()
}

/// The calling worker's coarse time (0 off a worker thread).
#[inline]
pub(crate) fn coarse() -> u64 {
    COARSE_NOW.with(Cell::get)
}

/// The coarse time on a worker thread, a real reading elsewhere.
#[inline]
pub(crate) fn coarse_or_now() -> u64 {
    match coarse() {
        0 => now(),
        coarse => coarse,
    }
}

/// Reads the clock into this thread's coarse time; returns it.
pub(crate) fn refresh() -> u64 {
    let now = now();
    COARSE_NOW.with(|c| c.set(now));
    now
}

/// Sets this thread's coarse time from a reading the caller just took.
pub(crate) fn set(now: u64) {
    COARSE_NOW.with(|c| c.set(now));
}

/// Refreshes every `REFRESH_EVERY`th call; the scheduling loop calls it
/// in its occasional fairness rounds.
#[inline]
pub(crate) fn refresh_now_and_then() {
    let left = UNTIL_REFRESH.with(Cell::get);
    if left == 0 {
        UNTIL_REFRESH.with(|c| c.set(REFRESH_EVERY));
        refresh();
    } else {
        UNTIL_REFRESH.with(|c| c.set(left - 1));
    }
}
