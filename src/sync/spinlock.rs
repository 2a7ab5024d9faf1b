//! `SpinLock<T>`: a one-flag lock that spins and never parks.
//!
//! # When to use it
//!
//! For critical sections of a few instructions, where the cost of the
//! parking lot (a bucket lock, a queue node, a wake) would dwarf the wait.
//! For anything longer, or anything that may block inside the critical
//! section, use [`Mutex`](super::Mutex): a spinning waiter burns its CPU for
//! as long as the holder keeps the lock.
//!
//! # State
//!
//! ```text
//!  locked   meaning
//!  ------   ------------------------------------------
//!  false    free
//!  true     held; waiters (if any) spin on a plain load
//! ```
//!
//! - Fast path: `lock` is one CAS false -> true; `unlock` one store false.
//! - Slow path (`#[cold]`): test-and-test-and-set. Waiters read the flag with
//!   plain loads (the cache line stays shared while it is held) and only try
//!   the CAS once they saw it free.
//!
//! # Waiting without deadlocking a worker
//!
//! A coroutine that spins must not spin forever: if the holder is another
//! coroutine of the *same* worker, it cannot run (and so cannot unlock) until
//! the spinner gives the worker back. So the wait is bounded adaptive
//! spinning ([`SpinWait`]: a few rounds of `spin_loop` hints, never an OS
//! yield, which would stall the whole worker), and once that budget is
//! spent each further round calls [`crate::yield_now`]: inside a coroutine
//! it lets the worker's other coroutines (the holder among them) run; on a
//! plain OS thread it is `std::thread::yield_now`. Under loom every round
//! yields to loom's scheduler instead (see [`yield_to_holder`]), which is
//! what lets the model checker explore the spin loop.
//!
//! No waiter queue means no fairness: a waiter can lose the race
//! indefinitely to others that re-lock at once. That is the price of never
//! parking; [`Mutex`](super::Mutex) has the fairness.
//!
//! Orderings: the CAS that takes the lock is Acquire and the store that
//! frees it is Release, so each holder sees the previous holder's writes.

use crate::loom::{AtomicBool, Ordering, UnsafeCell, negative_control};
use crossbeam_utils::Backoff;
use std::fmt;
use std::marker::PhantomData;
use std::ops::{Deref, DerefMut};

/// Bounded adaptive spinning, for a waiter that will park (or, in
/// [`SpinLock`], yield) once the budget is spent. Shared by the primitives
/// of `sync` that spin before parking.
///
/// Each round is one [`Backoff::spin`]: 1, 2, 4, ... 64 `spin_loop` hints,
/// a few microseconds in all, which covers a holder that is about to leave
/// on another core. It never yields the OS thread: in a coroutine that
/// would stall every coroutine of the worker.
///
/// The budget is counted here, not with [`Backoff::is_completed`]:
/// `Backoff::spin` stops advancing its step at 7 while `is_completed` waits
/// for a step above 10 (which only `snooze`, an OS yield, reaches), so a
/// loop of `spin` guarded by `!is_completed()` never ends.
pub(crate) struct SpinWait {
    backoff: Backoff,
    rounds: u32,
}

impl SpinWait {
    /// Rounds of spinning before the waiter should park.
    const ROUNDS: u32 = 7;

    pub(crate) fn new() -> SpinWait {
        SpinWait { backoff: Backoff::new(), rounds: 0 }
    }

    /// Spins one round and returns `true`, or returns `false` at once when
    /// the budget is spent (the caller should stop spinning).
    #[inline]
    pub(crate) fn spin(&mut self) -> bool {
        // No spinning under loom: a round only re-reads the state word,
        // every path it leads to is also reached without it, and each extra
        // load multiplies the interleavings loom has to explore.
        if cfg!(loom) || self.rounds >= Self::ROUNDS {
            return false;
        }
        self.rounds += 1;
        self.backoff.spin();
        true
    }

    /// Whether `spin` would still spin (always `false` under loom).
    #[inline]
    pub(crate) fn has_budget(&self) -> bool {
        !cfg!(loom) && self.rounds < Self::ROUNDS
    }

    /// A fresh budget (after a wake-up).
    pub(crate) fn reset(&mut self) {
        self.backoff.reset();
        self.rounds = 0;
    }
}

/// Gives the lock holder a chance to run, once spinning is spent: inside a
/// coroutine, [`crate::yield_now`] runs the worker's other coroutines (the
/// holder may be one of them); on an OS thread it is
/// `std::thread::yield_now`.
#[cfg(not(loom))]
#[inline]
fn yield_to_holder() {
    crate::yield_now();
}

/// Under loom: loom's own yield. Loom must see a yield in every busy loop
/// (it would otherwise explore the loop forever), and `crate::yield_now`
/// outside a coroutine is std's yield, which loom does not see.
#[cfg(loom)]
#[inline]
fn yield_to_holder() {
    crate::loom::thread::yield_now();
}

/// A mutual-exclusion lock that waits by spinning, never by parking.
///
/// Works from coroutines and OS threads alike. Meant for critical sections
/// of a few instructions; use [`Mutex`](super::Mutex) for anything longer or
/// anything that may wait inside. A waiter spins briefly, then calls
/// [`crate::yield_now`] between tries: in a coroutine that lets the other
/// coroutines of its worker run (the holder may be one of them, so the
/// wait cannot deadlock the worker); on an OS thread it is
/// `std::thread::yield_now`. There is no queue and no fairness: a waiter
/// can lose the race to others indefinitely. Does not poison: a panic while
/// the lock is held releases it during unwinding.
///
/// ```
/// use std::sync::Arc;
/// use weft::sync::SpinLock;
///
/// let hits = Arc::new(SpinLock::new(0u32));
/// let handles: Vec<_> = (0..4)
///     .map(|_| {
///         let hits = Arc::clone(&hits);
///         weft::spawn(move || {
///             for _ in 0..100 {
///                 *hits.lock() += 1;
///             }
///         })
///     })
///     .collect();
/// for h in handles {
///     h.join().unwrap();
/// }
/// assert_eq!(*hits.lock(), 400);
/// ```
pub struct SpinLock<T: ?Sized> {
    locked: AtomicBool,
    data: UnsafeCell<T>,
}

// SAFETY: the lock hands `data` to one owner at a time, so sharing the lock
// across threads only moves T between them: T: Send.
unsafe impl<T: ?Sized + Send> Send for SpinLock<T> {}
// SAFETY: as above.
unsafe impl<T: ?Sized + Send> Sync for SpinLock<T> {}

impl<T> SpinLock<T> {
    /// A new, unlocked spin lock.
    ///
    /// ```
    /// use weft::sync::SpinLock;
    ///
    /// static NEXT_ID: SpinLock<u64> = SpinLock::new(1);
    /// let id = {
    ///     let mut next = NEXT_ID.lock();
    ///     *next += 1;
    ///     *next - 1
    /// };
    /// assert_eq!(id, 1);
    /// ```
    #[cfg(not(loom))]
    pub const fn new(value: T) -> SpinLock<T> {
        SpinLock { locked: AtomicBool::new(false), data: UnsafeCell::new(value) }
    }

    /// A new, unlocked spin lock.
    #[cfg(loom)]
    pub fn new(value: T) -> SpinLock<T> {
        SpinLock { locked: AtomicBool::new(false), data: UnsafeCell::new(value) }
    }

    /// Consumes the lock and returns its value.
    ///
    /// ```
    /// use weft::sync::SpinLock;
    ///
    /// let lock = SpinLock::new(vec![1]);
    /// lock.lock().push(2);
    /// assert_eq!(lock.into_inner(), [1, 2]);
    /// ```
    pub fn into_inner(self) -> T {
        self.data.into_inner()
    }
}

impl<T: ?Sized> SpinLock<T> {
    /// Locks, spinning (and, once the backoff is exhausted, yielding) while
    /// another holder has it.
    ///
    /// ```
    /// use weft::sync::SpinLock;
    ///
    /// let lock = SpinLock::new(0);
    /// std::thread::scope(|s| {
    ///     for _ in 0..2 {
    ///         s.spawn(|| *lock.lock() += 1);
    ///     }
    /// });
    /// assert_eq!(*lock.lock(), 2);
    /// ```
    #[inline]
    pub fn lock(&self) -> SpinLockGuard<'_, T> {
        // Acquire: pairs with the Release store in `unlock` of the previous
        // holder, so its writes to `data` are visible to us. (The loom
        // negative control takes it Relaxed: the holders' writes race.)
        let acquire = if negative_control::broken("spinlock") { Ordering::Relaxed } else { Ordering::Acquire };
        if self.locked.compare_exchange_weak(false, true, acquire, Ordering::Relaxed).is_err() {
            self.lock_contended();
        }
        SpinLockGuard { lock: self, _not_send: PhantomData }
    }

    /// Locks if it is free right now; never waits.
    ///
    /// ```
    /// use weft::sync::SpinLock;
    ///
    /// let lock = SpinLock::new(());
    /// let guard = lock.try_lock().expect("free");
    /// assert!(lock.try_lock().is_none());
    /// drop(guard);
    /// ```
    #[inline]
    pub fn try_lock(&self) -> Option<SpinLockGuard<'_, T>> {
        // Acquire: as in `lock`. A strong CAS: a free lock is always taken.
        let taken = !self.locked.load(Ordering::Relaxed)
            && self.locked.compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed).is_ok();
        // `then`, not `then_some`: an eagerly built guard would be dropped
        // on failure, unlocking the lock someone else holds.
        taken.then(|| SpinLockGuard { lock: self, _not_send: PhantomData })
    }

    #[cold]
    fn lock_contended(&self) {
        let mut spin = SpinWait::new();
        loop {
            // Test before test-and-set: wait on plain loads, which keep the
            // cache line shared, and try the CAS only when it looks free.
            while self.locked.load(Ordering::Relaxed) {
                if !spin.spin() {
                    yield_to_holder();
                }
            }
            // Acquire: as in `lock` (and broken as there by the control).
            let acquire = if negative_control::broken("spinlock") { Ordering::Relaxed } else { Ordering::Acquire };
            if self.locked.compare_exchange_weak(false, true, acquire, Ordering::Relaxed).is_ok() {
                return;
            }
        }
    }

    /// # Safety
    ///
    /// - The caller holds the lock.
    #[inline]
    unsafe fn unlock(&self) {
        debug_assert!(self.locked.load(Ordering::Relaxed), "SpinLock: unlock of a lock that is not held");
        // Release: pairs with the Acquire CAS of the next holder.
        self.locked.store(false, Ordering::Release);
    }

    /// The value, through `&mut self` (no locking needed).
    ///
    /// ```
    /// use weft::sync::SpinLock;
    ///
    /// let mut lock = SpinLock::new(1);
    /// *lock.get_mut() = 2;
    /// assert_eq!(*lock.lock(), 2);
    /// ```
    pub fn get_mut(&mut self) -> &mut T {
        // SAFETY: `&mut self` proves no guard and no other reference exists.
        self.data.with_mut(|p| unsafe { &mut *p })
    }
}

impl<T: Default> Default for SpinLock<T> {
    fn default() -> Self {
        SpinLock::new(T::default())
    }
}

impl<T: ?Sized + fmt::Debug> fmt::Debug for SpinLock<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.try_lock() {
            Some(guard) => f.debug_struct("SpinLock").field("data", &&*guard).finish(),
            None => f.debug_struct("SpinLock").field("data", &format_args!("<locked>")).finish(),
        }
    }
}

/// Proof of holding a [`SpinLock`]; unlocks on drop (also during unwinding).
/// `!Send`: a lock is released by the coroutine or thread that took it.
///
/// ```
/// use weft::sync::{SpinLock, SpinLockGuard};
///
/// fn reset(mut guard: SpinLockGuard<'_, u8>) {
///     *guard = 0;
/// }
///
/// let lock = SpinLock::new(9);
/// reset(lock.lock());
/// assert_eq!(*lock.lock(), 0);
/// ```
#[must_use = "the lock is released as soon as the guard is dropped"]
pub struct SpinLockGuard<'a, T: ?Sized> {
    lock: &'a SpinLock<T>,
    _not_send: PhantomData<*const ()>,
}

// SAFETY: sharing a guard only shares `&T`: T: Sync suffices.
unsafe impl<T: ?Sized + Sync> Sync for SpinLockGuard<'_, T> {}

impl<T: ?Sized> Deref for SpinLockGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: holding the guard means holding the lock: no one else
        // touches the data until we unlock.
        self.lock.data.with(|p| unsafe { &*p })
    }
}

impl<T: ?Sized> DerefMut for SpinLockGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: as in deref, and `&mut self` makes this the only reference.
        self.lock.data.with_mut(|p| unsafe { &mut *p })
    }
}

impl<T: ?Sized> Drop for SpinLockGuard<'_, T> {
    #[inline]
    fn drop(&mut self) {
        // SAFETY: the guard proves we hold the lock.
        unsafe { self.lock.unlock() };
    }
}

impl<T: ?Sized + fmt::Debug> fmt::Debug for SpinLockGuard<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&**self, f)
    }
}

impl<T: ?Sized + fmt::Display> fmt::Display for SpinLockGuard<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&**self, f)
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::thread;
    use std::time::Duration;

    #[test]
    fn try_lock_is_exclusive() {
        let lock = SpinLock::new(5);
        let guard = lock.try_lock().expect("a free lock is taken");
        assert!(lock.try_lock().is_none(), "a held lock must not be taken twice");
        assert_eq!(format!("{lock:?}"), "SpinLock { data: <locked> }");
        drop(guard);
        assert_eq!(*lock.try_lock().unwrap(), 5);
        assert_eq!(format!("{lock:?}"), "SpinLock { data: 5 }");
    }

    #[test]
    fn get_mut_and_into_inner() {
        let mut lock = SpinLock::<Vec<u8>>::default();
        lock.get_mut().push(1);
        lock.lock().push(2);
        assert_eq!(lock.into_inner(), vec![1, 2]);
    }

    #[test]
    fn unlocks_on_panic() {
        let lock = Arc::new(SpinLock::new(0));
        let l = Arc::clone(&lock);
        let result = thread::spawn(move || {
            let _guard = l.lock();
            panic!("boom while holding the spin lock");
        })
        .join();
        assert!(result.is_err());
        assert!(lock.try_lock().is_some(), "unwinding must release the lock (no poisoning)");
    }

    /// Threads: a counter incremented without atomics stays exact.
    #[test]
    fn threads_count_exactly() {
        const THREADS: usize = 4;
        const ROUNDS: usize = 20_000;
        let lock = Arc::new(SpinLock::new(0usize));
        let handles: Vec<_> = (0..THREADS)
            .map(|_| {
                let lock = Arc::clone(&lock);
                thread::spawn(move || {
                    for _ in 0..ROUNDS {
                        *lock.lock() += 1;
                    }
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
        assert_eq!(*lock.lock(), THREADS * ROUNDS);
    }

    /// The deadlock the yield exists for: one worker, the holder is a
    /// coroutine of that worker that sleeps while holding the lock, and
    /// another coroutine of the same worker waits. Without the yield in the
    /// spin loop the waiter would spin forever and the holder never run.
    /// Runs on a helper thread under a watchdog, so a deadlock fails the
    /// test instead of hanging it.
    #[test]
    fn coroutines_on_one_worker_do_not_deadlock() {
        let lock = Arc::new(SpinLock::new(Vec::new()));
        let l = Arc::clone(&lock);
        let (done, finished) = std::sync::mpsc::channel();
        thread::spawn(move || {
            let rt = crate::Runtime::builder().workers(1).build().unwrap();
            rt.block_on(move || one_worker_body(&l));
            let _ = done.send(());
            // A deadlocked runtime is leaked with this thread, not dropped.
        });
        let result = finished.recv_timeout(Duration::from_secs(20));
        assert!(result.is_ok(), "deadlock: the waiting coroutine never let the holder run");
        assert_eq!(*lock.lock(), ["waiter", "holder"]);
    }

    fn one_worker_body(l: &Arc<SpinLock<Vec<&'static str>>>) {
        let guard = l.lock();
        let l2 = Arc::clone(l);
        let waiter = crate::spawn(move || l2.lock().push("waiter"));
        // Let the waiter start spinning, still holding the lock.
        crate::sleep(Duration::from_millis(20));
        drop(guard);
        waiter.join().unwrap();
        l.lock().push("holder");
    }

    /// Coroutines on two workers and OS threads, all on one lock.
    #[test]
    fn coroutines_and_threads_mixed() {
        const ROUNDS: usize = 5_000;
        let rt = Arc::new(crate::Runtime::builder().workers(2).build().unwrap());
        let lock = Arc::new(SpinLock::new(0usize));
        let mut coroutines = Vec::new();
        for _ in 0..8 {
            let lock = Arc::clone(&lock);
            coroutines.push(rt.spawn(move || {
                for i in 0..ROUNDS {
                    *lock.lock() += 1;
                    if i % 64 == 0 {
                        crate::yield_now();
                    }
                }
            }));
        }
        let threads: Vec<_> = (0..2)
            .map(|_| {
                let lock = Arc::clone(&lock);
                thread::spawn(move || {
                    for _ in 0..ROUNDS {
                        *lock.lock() += 1;
                    }
                })
            })
            .collect();
        for c in coroutines {
            c.join().unwrap();
        }
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(*lock.lock(), 10 * ROUNDS);
    }
}

#[cfg(all(test, loom))]
mod loom_models {
    use super::*;
    use crate::loom::thread;
    use loom::sync::Arc;

    /// Two threads increment a plain counter under the lock: no increment
    /// is lost, and loom checks every access to `data` for races.
    #[test]
    fn two_threads_increment() {
        loom::model(|| {
            let lock = Arc::new(SpinLock::new(0usize));
            let other = {
                let lock = lock.clone();
                thread::spawn(move || *lock.lock() += 1)
            };
            *lock.lock() += 1;
            other.join().unwrap();
            assert_eq!(*lock.lock(), 2);
        });
    }

    /// Negative control: a lock taken with a Relaxed CAS does not see the
    /// previous holder's writes to `data`, and loom must report the race
    /// on its cell.
    #[test]
    #[should_panic(expected = "Causality violation")]
    fn negative_control_a_relaxed_lock_races_on_the_data() {
        let _broken = crate::loom::negative_control::break_until_dropped("spinlock");
        loom::model(|| {
            let lock = std::sync::Arc::new(SpinLock::new(0usize));
            let other = {
                let lock = std::sync::Arc::clone(&lock);
                thread::spawn(move || *lock.lock() += 1)
            };
            *lock.lock() += 1;
            other.join().unwrap();
        });
    }

    /// `try_lock` never hands out a second guard while one is held.
    #[test]
    fn try_lock_races_lock() {
        loom::model(|| {
            let lock = Arc::new(SpinLock::new(0usize));
            let other = {
                let lock = lock.clone();
                thread::spawn(move || {
                    if let Some(mut guard) = lock.try_lock() {
                        *guard += 1;
                    }
                })
            };
            *lock.lock() += 1;
            other.join().unwrap();
            let total = *lock.lock();
            assert!(total == 1 || total == 2, "count {total}");
        });
    }
}
