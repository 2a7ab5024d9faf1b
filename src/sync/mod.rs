//! Synchronization primitives that work from coroutines and from OS threads.
//!
//! Each primitive is a state word with an inline fast path (one atomic
//! operation) and a slow path that parks. A waiting coroutine is suspended
//! and its worker runs others; a waiting OS thread blocks on a futex. A
//! coroutine and a thread can wait on the same primitive.
//!
//! Locks do not poison: a panic while holding a guard releases the lock
//! during unwinding. Guards are `!Send`.
//!
//! Every wait with a time limit (`try_lock_for`, `try_read_until`,
//! `wait_timeout`, `acquire_timeout`, ...) measures it on `CLOCK_MONOTONIC`
//! and never gives up early; a waiter that gives up leaves the primitive as
//! if it had never waited.

// For maintainers: each slow path is `#[cold]` and parks in the parking lot
// (`crate::park::lot`); each primitive's file opens with its state word's
// table and protocol.

mod barrier;
pub mod channel;
mod condvar;
mod mutex;
mod once;
mod rwlock;
mod semaphore;
mod spinlock;
mod waitgroup;

pub use barrier::{Barrier, BarrierWaitResult};
pub use condvar::{Condvar, WaitTimeoutResult};
pub use mutex::{MappedMutexGuard, Mutex, MutexGuard};
pub use once::{LazyLock, OnceLock};
pub use rwlock::{
    MappedRwLockReadGuard, MappedRwLockWriteGuard, RwLock, RwLockReadGuard, RwLockUpgradableReadGuard, RwLockWriteGuard,
};
pub use semaphore::{OwnedSemaphorePermit, Semaphore, SemaphorePermit};
pub use spinlock::{SpinLock, SpinLockGuard};
pub use waitgroup::WaitGroup;

use crate::sys::futex::Deadline;
use std::time::Instant;

/// The `CLOCK_MONOTONIC` deadline of `instant`, for the `*_until` methods
/// (std's `Instant` reads the same clock on Linux). Never earlier than
/// `instant`: the time left is measured before `Deadline::after` reads the
/// clock again, so it is added to a later "now". An instant already past
/// gives a deadline that has passed.
fn deadline_at(instant: Instant) -> Deadline {
    Deadline::after(instant.saturating_duration_since(Instant::now()))
}
