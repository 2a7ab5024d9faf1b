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
//!  LOCKED      held, nobody sleeps on the word   spin, then swap to       store UNLOCKED: done
//!              (but see "Unlock without a ...")  CONTENDED and sleep      (no read-modify-write)
//!  CONTENDED   held, a thread may sleep on the   swap to CONTENDED;       swap -> UNLOCKED, then
//!              word (futex)                      got it if it was         wake one sleeper
//!                                                UNLOCKED, else sleep
//! ```
//!
//! (Drepper's "Futexes Are Tricky", mutex 2, as std's futex mutex, but for
//! the uncontended unlock.) A thread that takes the lock after sleeping
//! takes it as CONTENDED, since others may still sleep: at worst one wake
//! too many, never one missing. The holder never parks or switches while it
//! holds the lock, so a waiter spins briefly first (the holder is usually
//! running on another CPU), and a coroutine that has to sleep blocks its
//! worker thread only for the few instructions the holder has left.
//!
//! # Unlock without a read-modify-write
//!
//! Every Mutex+Condvar hand-off takes a bucket lock twice (the waiter to
//! queue itself, the notifier to take it off), so the unlock's swap was two
//! of the hand-off's eight atomic read-modify-writes, each about 10 ns on
//! the hosts we measure on. An unlock that finds the word LOCKED (nobody
//! announced a sleep) stores UNLOCKED instead: a load and a store.
//!
//! The price is a lost wake. A waiter's swap of LOCKED to CONTENDED can
//! land between the unlocker's load and the moment its store reaches the
//! cache line: on x86 that is not two instructions but as long as the
//! store waits for the line, which the spinning waiters keep taking. The
//! store then overwrites the announcement, and no unlock will wake that
//! waiter. So a waiter, once it has announced itself, does two things:
//!
//! - it watches the word for a few more spins (`SETTLE_SPINS`) before it
//!   sleeps: a store in flight lands in that time, the word reads UNLOCKED,
//!   and the waiter takes the lock instead of sleeping (its futex wait
//!   would also return at once, but only if the store landed before the
//!   kernel read the word);
//! - each sleep has a deadline (`FIRST_BACKSTOP`, doubling up to
//!   `BACKSTOP`), after which it looks again: what the watch misses (an
//!   unlocker preempted between its load and its store) costs a sleeper
//!   100 µs, not for ever.
//!
//! Exclusion is unaffected: the lock is only ever taken by a
//! read-modify-write that finds it UNLOCKED. Sleeps happen only when a
//! holder keeps the lock past the waiters' spins (a holder preempted by the
//! kernel), so none of this is on the hand-off paths. Measured with OS
//! threads hammering one bucket lock on 2 CPUs (each takes it, checks and
//! bumps a pair of counters, lets it go; 1.5 s runs, three or more of each
//! build in turns), waits over 0.9 ms per run and acquisitions per run:
//!
//! ```text
//!  threads  unlock by swap        store, 1 ms deadlines   store, watch, 100 us first
//!  -------  --------------------  ----------------------  --------------------------
//!  4        2-24, 4.4-5.3 M       326-372, 6.2-6.3 M      16-54, 6.8-7.0 M
//!  8        9-57, 5.9-6.1 M       2 088-2 600, 7.0-7.2 M  176-308, 6.4 M
//! ```
//!
//! Under loom the bucket lock is loom's `Mutex`, so the models explore the
//! lock's interleavings with an unlock that is a Release and nothing more,
//! as this one's store is. This file's futex protocol is not itself
//! modelled: its unit tests below hammer it with threads that take it on
//! every path (the spin, the sleep and the wake), and make the store
//! unlock's one race happen. Without the deadlines both fail: four threads
//! on two CPUs hit the race within 200 000 lock operations and hung.

#[cfg(not(loom))]
pub(crate) use self::futex_lock::{BucketGuard, BucketLock};

#[cfg(loom)]
pub(crate) use self::loom_lock::{BucketGuard, BucketLock};

#[cfg(not(loom))]
mod futex_lock {
    use crate::loom::UnsafeCell;
    use crate::loom::process::{AtomicU32, Ordering};
    use crate::sys::futex::{self, Deadline};
    use std::marker::PhantomData;
    use std::ops::{Deref, DerefMut};
    use std::time::Duration;

    const UNLOCKED: u32 = 0;
    const LOCKED: u32 = 1;
    const CONTENDED: u32 = 2;
    /// Loads of the word before a waiter sleeps on it.
    const SPINS: u32 = 100;
    /// Loads of the word after a waiter announced its sleep, for an
    /// uncontended unlock's store in flight to land (module docs, "Unlock
    /// without a read-modify-write").
    const SETTLE_SPINS: u32 = 64;
    /// A waiter's first sleep ends after this at the latest; each next one
    /// after twice as long, up to `BACKSTOP`: the bound on the wake an
    /// uncontended unlock can miss (module docs).
    const FIRST_BACKSTOP: Duration = Duration::from_micros(100);
    /// The longest a waiter sleeps before it looks at the word again.
    const BACKSTOP: Duration = Duration::from_millis(1);

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
            BucketGuard { lock: self, _not_send: PhantomData }
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
            // docs). Then the watch and the deadlines, in case an
            // uncontended unlock overwrote the announcement (module docs).
            let mut backstop = FIRST_BACKSTOP;
            while self.state.swap(CONTENDED, Ordering::Acquire) != UNLOCKED {
                let mut watched = 0;
                while self.state.load(Ordering::Relaxed) == CONTENDED && watched < SETTLE_SPINS {
                    std::hint::spin_loop();
                    watched += 1;
                }
                if self.state.load(Ordering::Relaxed) != CONTENDED {
                    continue; // freed (or taken anew) over our announcement: again
                }
                futex::wait(&self.state, CONTENDED, Some(Deadline::after(backstop)));
                backstop = (backstop * 2).min(BACKSTOP);
            }
        }

        #[inline]
        fn unlock(&self) {
            // Nobody announced a sleep: a store suffices (module docs,
            // "Unlock without a read-modify-write"). Release: publishes the
            // holder's changes to the next holder (its Acquire in `lock`).
            if self.state.load(Ordering::Relaxed) == LOCKED {
                self.state.store(UNLOCKED, Ordering::Release);
            } else {
                // A sleeper announced itself: free the word and wake one.
                self.state.swap(UNLOCKED, Ordering::Release);
                futex::wake(&self.state, 1);
            }
        }

        /// Test support: takes the lock and forgets it was taken (no guard).
        #[cfg(test)]
        pub(super) fn lock_and_forget(&self) {
            std::mem::forget(self.lock());
        }

        /// Test support: what an uncontended unlock's store does when it
        /// lands after a waiter announced its sleep (module docs): the word
        /// goes to UNLOCKED and nobody is woken.
        #[cfg(test)]
        pub(super) fn release_without_wake(&self) {
            self.state.store(UNLOCKED, Ordering::Release);
        }

        /// Test support: whether a waiter announced a sleep.
        #[cfg(test)]
        pub(super) fn is_contended(&self) -> bool {
            self.state.load(Ordering::Relaxed) == CONTENDED
        }
    }

    /// The holder's access to the data; unlocks on drop (also when a panic
    /// unwinds through the holder: the caller keeps the data consistent at
    /// every point where code it calls could panic).
    ///
    /// `!Send`, as std's guards: the lock is released by the thread that
    /// took it.
    pub(crate) struct BucketGuard<'a, T> {
        lock: &'a BucketLock<T>,
        _not_send: PhantomData<*const ()>,
    }

    // SAFETY: a shared guard gives out only `&T`, so sharing it between
    // threads is sharing `&T`: sound exactly when `T: Sync`. (The field
    // `&BucketLock<T>` alone would make it `Sync` for any `T: Send`.)
    unsafe impl<T: Sync> Sync for BucketGuard<'_, T> {}

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

#[cfg(all(test, not(loom)))]
mod tests {
    use super::BucketLock;
    use std::sync::{Arc, Barrier, mpsc};
    use std::time::Duration;

    /// Runs `body` on a thread of its own and waits for it at most `limit`:
    /// a lost wake fails the test instead of hanging it.
    fn within<T: Send + 'static>(limit: Duration, body: impl FnOnce() -> T + Send + 'static) -> T {
        let (done, finished) = mpsc::channel();
        std::thread::spawn(move || done.send(body()));
        finished.recv_timeout(limit).expect("finished in time (a sleeper left without its wake?)")
    }

    /// Four threads add to a plain counter under the lock, now and then
    /// holding it through a 200 µs sleep so that the others spin out and
    /// sleep on the futex: every increment is there (mutual exclusion), and
    /// the test ends in time (no sleeper is left without its wake).
    #[test]
    fn four_threads_lose_no_increment_across_spins_and_sleeps() {
        within(Duration::from_secs(60), four_threads_increment);
    }

    fn four_threads_increment() {
        const THREADS: u64 = 4;
        const EACH: u64 = 50_000;
        let lock = Arc::new(BucketLock::new(0u64));
        let start = Arc::new(Barrier::new(THREADS as usize));
        let threads: Vec<_> = (0..THREADS)
            .map(|t| {
                let (lock, start) = (Arc::clone(&lock), Arc::clone(&start));
                std::thread::spawn(move || {
                    start.wait();
                    for i in 0..EACH {
                        let mut count = lock.lock();
                        // A read and a write, not one add: a second holder
                        // would lose increments.
                        let seen = *count;
                        if (i + t) % 5_000 == 0 {
                            std::thread::sleep(Duration::from_micros(200));
                        }
                        *count = seen + 1;
                    }
                })
            })
            .collect();
        threads.into_iter().for_each(|t| t.join().expect("no panic"));
        assert_eq!(*lock.lock(), THREADS * EACH);
    }

    /// A waiter that finds the lock held for long sleeps on the word and is
    /// woken by the unlock; then the lock is free again (the state went
    /// back to unlocked, not stuck at contended).
    #[test]
    fn a_sleeping_waiter_is_woken_by_the_unlock() {
        let lock = Arc::new(BucketLock::new(Vec::new()));
        let guard = lock.lock();
        let (done, finished) = mpsc::channel();
        {
            let lock = Arc::clone(&lock);
            std::thread::spawn(move || {
                lock.lock().push("waiter");
                done.send(()).expect("the test waits");
            });
        }
        // Long past its spins: it sleeps on the futex meanwhile.
        std::thread::sleep(Duration::from_millis(50));
        drop(guard);
        finished.recv_timeout(Duration::from_secs(30)).expect("the unlock woke the sleeping waiter");
        lock.lock().push("main");
        assert_eq!(*lock.lock(), ["waiter", "main"]);
    }

    /// The race an uncontended unlock leaves open (module docs, "Unlock
    /// without a read-modify-write"), made to happen: a waiter announces its
    /// sleep, then the holder's store frees the word over the announcement
    /// and wakes nobody. The sleeper still gets the lock, at its next look
    /// (within BACKSTOP), not never.
    #[test]
    fn a_sleeper_whose_announcement_an_unlock_overwrote_still_gets_the_lock() {
        let lock = Arc::new(BucketLock::new(0u32));
        lock.lock_and_forget();
        let (done, finished) = mpsc::channel();
        {
            let lock = Arc::clone(&lock);
            std::thread::spawn(move || {
                *lock.lock() += 1;
                done.send(()).expect("the test waits");
            });
        }
        // The waiter spins out, announces its sleep and sleeps.
        let start = std::time::Instant::now();
        while !lock.is_contended() {
            assert!(start.elapsed() < Duration::from_secs(30), "the waiter never announced a sleep");
            std::thread::sleep(Duration::from_millis(1));
        }
        std::thread::sleep(Duration::from_millis(20));
        lock.release_without_wake();
        finished.recv_timeout(Duration::from_secs(30)).expect("the sleeper took the lock at its next look");
        assert_eq!(*lock.lock(), 1);
    }

    /// A panic while the lock is held releases it.
    #[test]
    fn a_panic_while_held_unlocks() {
        let lock = BucketLock::new(1);
        let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let _guard = lock.lock();
            panic!("while holding the bucket lock");
        }));
        assert!(caught.is_err());
        assert_eq!(*lock.lock(), 1);
    }
}
