//! Synchronization primitives that work from coroutines and from OS threads.
//!
//! Each primitive is a state word with an inline fast path (one atomic
//! operation) and a `#[cold]` slow path that parks in the parking lot
//! (`crate::park::lot`). A waiting coroutine is suspended and its worker
//! runs others; a waiting OS thread blocks on a futex. A coroutine and a
//! thread can wait on the same primitive. Each file opens with its state
//! word's table and protocol.
//!
//! Locks do not poison: a panic while holding a guard releases the lock
//! during unwinding. Guards are `!Send`.

mod barrier;
mod condvar;
mod mutex;
mod rwlock;
mod semaphore;
mod spinlock;
mod waitgroup;

pub use barrier::{Barrier, BarrierWaitResult};
pub use condvar::{Condvar, WaitTimeoutResult};
pub use mutex::{Mutex, MutexGuard};
pub use rwlock::{RwLock, RwLockReadGuard, RwLockWriteGuard};
pub use semaphore::{Semaphore, SemaphorePermit};
pub use spinlock::{SpinLock, SpinLockGuard};
pub use waitgroup::WaitGroup;
