//! The lock of a parking-lot bucket: a futex mutex without poisoning.
//!
//! Every park and every wake takes one (the waiter to queue itself, the
//! waker to take waiters off), so it sits on the path of every hand-off
//! between coroutines. `std::sync::Mutex` would do, but its poisoning reads
//! the thread's panic count on every lock and unlock, and nothing here
//! needs it: a bucket's queue is left consistent at every point where code
//! it calls could panic (a validation callback runs before the node is
//! linked), and the parking lot ignored the poison flag anyway.
//!
//! # State word
//!
//! ```text
//!  state       meaning                           lock                     unlock
//!  ----------  --------------------------------  -----------------------  -------------------------
//!  UNLOCKED    free                              CAS -> LOCKED: taken     -
//!  LOCKED      held, nobody sleeps on the word   spin, then swap to       swap -> UNLOCKED: done
//!                                                CONTENDED and sleep
//!  CONTENDED   held, a thread may sleep on the   swap to CONTENDED;       swap -> UNLOCKED, then
//!              word (futex)                      got it if it was         wake one sleeper
//!                                                UNLOCKED, else sleep
//! ```
//!
//! (Drepper's "Futexes Are Tricky", mutex 2, as std's futex mutex.) A
//! thread that takes the lock after sleeping takes it as CONTENDED, since
//! others may still sleep: at worst one wake too many, never one missing.
//! The holder never parks or switches while it holds the lock, so a waiter
//! spins briefly first (the holder is usually running on another CPU), and
//! a coroutine that has to sleep blocks its worker thread only for the few
//! instructions the holder has left.
//!
//! Under loom the bucket lock is loom's `Mutex`, so the models explore the
//! lock's interleavings (this file's futex protocol is the textbook one
//! above, and is not itself modelled).

#[cfg(not(loom))]
pub(crate) use self::futex_lock::{BucketGuard, BucketLock};

#[cfg(loom)]
pub(crate) use self::loom_lock::{BucketGuard, BucketLock};

#[cfg(not(loom))]
mod futex_lock {
    use crate::loom::UnsafeCell;
    use crate::loom::process::{AtomicU32, Ordering};
    use crate::sys::futex;
    use std::ops::{Deref, DerefMut};

    const UNLOCKED: u32 = 0;
    const LOCKED: u32 = 1;
    const CONTENDED: u32 = 2;
    /// Loads of the word before a waiter sleeps on it.
    const SPINS: u32 = 100;

    /// A mutex around a bucket's queue; see the module docs.
    pub(crate) struct BucketLock<T> {
        state: AtomicU32,
        data: UnsafeCell<T>,
    }

    // SAFETY: the lock hands `data` to one thread at a time (T: Send moves
    // it between threads), as `std::sync::Mutex` does.
    unsafe impl<T: Send> Sync for BucketLock<T> {}
    // SAFETY: as above.
    unsafe impl<T: Send> Send for BucketLock<T> {}

    impl<T> BucketLock<T> {
        pub(crate) const fn new(data: T) -> BucketLock<T> {
            BucketLock { state: AtomicU32::new(UNLOCKED), data: UnsafeCell::new(data) }
        }

        #[inline]
        pub(crate) fn lock(&self) -> BucketGuard<'_, T> {
            // Acquire: pairs with the Release of the previous holder's
            // unlock, so its changes to the queue are visible.
            if self.state.compare_exchange(UNLOCKED, LOCKED, Ordering::Acquire, Ordering::Relaxed).is_err() {
                self.lock_contended();
            }
            BucketGuard { lock: self }
        }

        #[cold]
        #[inline(never)]
        fn lock_contended(&self) {
            let mut state = self.state.load(Ordering::Relaxed);
            for _ in 0..SPINS {
                if state == UNLOCKED {
                    // Acquire: as in `lock`.
                    match self.state.compare_exchange(UNLOCKED, LOCKED, Ordering::Acquire, Ordering::Relaxed) {
                        Ok(_) => return,
                        Err(actual) => state = actual,
                    }
                    continue;
                }
                if state == CONTENDED {
                    break; // others already sleep: queue up behind them
                }
                std::hint::spin_loop();
                state = self.state.load(Ordering::Relaxed);
            }
            // Acquire: as in `lock`. The swap announces a sleeper; if the
            // lock was free, it is ours (taken as CONTENDED: see the module
            // docs).
            while self.state.swap(CONTENDED, Ordering::Acquire) != UNLOCKED {
                futex::wait(&self.state, CONTENDED, None);
            }
        }

        #[inline]
        fn unlock(&self) {
            // Release: publishes the holder's changes to the next holder
            // (its Acquire in `lock`).
            if self.state.swap(UNLOCKED, Ordering::Release) == CONTENDED {
                futex::wake(&self.state, 1);
            }
        }
    }

    /// The holder's access to the data; unlocks on drop.
    pub(crate) struct BucketGuard<'a, T> {
        lock: &'a BucketLock<T>,
    }

    impl<T> Deref for BucketGuard<'_, T> {
        type Target = T;

        fn deref(&self) -> &T {
            // SAFETY: the guard holds the lock: no one else touches `data`.
            self.lock.data.with(|p| unsafe { &*p })
        }
    }

    impl<T> DerefMut for BucketGuard<'_, T> {
        fn deref_mut(&mut self) -> &mut T {
            // SAFETY: as in `deref`, and `&mut self` makes this the only
            // reference through the guard.
            self.lock.data.with_mut(|p| unsafe { &mut *p })
        }
    }

    impl<T> Drop for BucketGuard<'_, T> {
        #[inline]
        fn drop(&mut self) {
            self.lock.unlock();
        }
    }
}

#[cfg(loom)]
mod loom_lock {
    use crate::loom::{Mutex, MutexGuard};

    /// Under loom: loom's Mutex, so that the models explore the lock.
    pub(crate) struct BucketLock<T>(Mutex<T>);

    pub(crate) type BucketGuard<'a, T> = MutexGuard<'a, T>;

    impl<T> BucketLock<T> {
        pub(crate) fn new(data: T) -> BucketLock<T> {
            BucketLock(Mutex::new(data))
        }

        pub(crate) fn lock(&self) -> BucketGuard<'_, T> {
            self.0.lock().unwrap_or_else(|e| e.into_inner())
        }
    }
}
