//! `Mutex<T>`: a futex-style lock in one 32-bit word that works from
//! coroutines and OS threads alike (they can wait on the same lock).
//!
//! # State word
//!
//! ```text
//!  bit      name     set means
//!  -------  -------  ------------------------------------------------------
//!  0b001    LOCKED   someone holds the lock
//!  0b010    PARKED   waiters may be queued in the parking lot
//!  0b100    WOKEN    an unlock woke a waiter that has not yet come back to
//!                    compete: later unlocks wake nobody until it has
//! ```
//!
//! - Fast path: `lock` sets LOCKED with one `fetch_or` (`lock bts` on
//!   x86-64, which needs a 16-, 32- or 64-bit word: hence not a byte), and
//!   owns the lock if LOCKED was clear, whatever else was set. `unlock`
//!   loads the word and, if it is exactly LOCKED, clears it with one CAS;
//!   anything else (or a CAS that finds a waiter's PARKED since the load)
//!   goes to the slow path with the value it saw.
//!
//!   Both fast paths make one atomic read-modify-write (RMW) with PARKED or
//!   WOKEN set too, and that matters under contention. A woken waiter
//!   sits in its worker's run queue until the coroutine running there
//!   switches out, which a coroutine that takes the lock at once in a loop
//!   does not do for a long while: PARKED and WOKEN then stay set for
//!   thousands of critical sections. A fast path that expects 0 (a CAS
//!   0 -> LOCKED, a CAS LOCKED -> 0) fails on every one of them, and the
//!   slow path's retry makes two RMWs per lock and two per unlock where one
//!   each does. Measured on a 2-CPU AMD EPYC, 2026-12-06 (256 coroutines x
//!   10 000 increments of one `Mutex<u64>` on 2 workers, `WEFT_SYNC_COUNT=
//!   contended_many:10000` of `benches/sync.rs`, 8 runs of each build in
//!   turns): 105-131 ms with the CAS fast paths, 53-56 ms with these (one
//!   worker, uncontended: 55 ms); the same with the `unlock` change alone:
//!   76-100 ms. Two coroutines on two workers (`contended:1000000`, where
//!   the flags are rarely set) did not move beyond the run-to-run spread:
//!   medians of 70 ms before and 65 ms after, runs from 46 to 77 ms. A
//!   lock that loads before it sets (load, then CAS) takes the line twice
//!   under contention (shared, then exclusive) and made that row 2x
//!   slower; `fetch_or` on a byte compiles to such a loop.
//! - Slow path (`#[cold]`): spin briefly while nobody is parked (the holder
//!   may be about to leave, on another thread), then set PARKED and park on
//!   the lock's address in the parking lot, validating under the bucket lock
//!   that LOCKED and PARKED are still both set. A coroutine whose worker has
//!   nothing else queued spins longer first ([`IDLE_WORKER_SPIN_ROUNDS`]):
//!   parking would only leave its CPU idle, and its wake would come from
//!   another thread (Go's runtime lets a goroutine spin on a mutex only
//!   while its P's run queue is empty, for the same reason).
//! - Unlock with PARKED set and WOKEN clear wakes the oldest waiter and sets
//!   WOKEN. Barging: normally the lock is released and the woken waiter
//!   competes for it (throughput). Eventual fairness: if the woken waiter has
//!   waited more than [`FAIR_AFTER`] (about 1 ms) since its `lock` call
//!   first parked, the lock is handed over directly (it stays LOCKED, WOKEN
//!   stays clear, and the waiter returns owning it), so a waiter behind a
//!   thread or coroutine that re-locks at once gets in after about
//!   `FAIR_AFTER` plus one critical section; at most one such hand-over per
//!   `FAIR_AFTER` per parking-lot bucket (`lot::unpark_one_fair`: with
//!   hundreds of waiters, each waits that long, and a hand-over at every
//!   unlock would make the lock move at the speed of cross-worker wakes;
//!   the exact guarantee is in lot.rs, "Fair hand-overs").
//! - One `lock` call is one wait however often it parks (`lot::FairWait`):
//!   a woken waiter that loses the race re-parks at the front of the queue
//!   and keeps its wait's start, so its wait keeps counting towards
//!   `FAIR_AFTER` (stamped per park, it restarted from zero at every
//!   re-park and never reached 1 ms behind short critical sections).
//! - WOKEN (Go's `mutexWoken`) keeps one woken waiter in flight, not one per
//!   unlock. Without it, a holder that re-locks at once (a loop of short
//!   critical sections) wakes a waiter at every unlock; each wakes to find
//!   the lock taken and parks again, and with many workers the lock spends
//!   its time in the parking lot (measured on 16 workers: 1.4 parks and one
//!   wake per increment, 8x slower than OS threads). The woken waiter clears
//!   WOKEN in the CAS that takes the lock, or in the CAS that re-sets PARKED
//!   before it parks again (then the next unlock wakes the next waiter); it
//!   may spin first although PARKED is set. A woken waiter that a runtime's
//!   shutdown unwinds before it runs clears WOKEN and passes the wake on
//!   (`pass_on`). Condvar waiters that `notify_all` moved onto the lock's
//!   queue are woken the same way, and re-lock with `lock_woken`.
//! - `PARKED` is cleared only under the bucket lock by whoever sees the last
//!   waiter leave (the unlocker, or a waiter that timed out), so it never
//!   hides a waiter.
//!
//! Orderings: acquiring RMWs are Acquire and releasing CASes and swaps are
//! Release, pairing lock holders one after another; a handed-over lock is
//! published by the parking lot's `removed` Release/Acquire pair.

use crate::loom::{AtomicU32, Ordering, UnsafeCell, negative_control};
use crate::park::lot::{self, DEFAULT_TOKEN, ParkResult};
use crate::sys::futex::Deadline;
use crossbeam_utils::Backoff;
use std::fmt;
use std::marker::PhantomData;
use std::ops::{Deref, DerefMut};
use std::ptr::NonNull;
use std::time::{Duration, Instant};

const LOCKED: u32 = 0b001;
const PARKED: u32 = 0b010;
const WOKEN: u32 = 0b100;

/// Token for a waiter that is handed the lock (it returns owning it).
pub(crate) const TOKEN_HANDOFF: usize = 1;
/// Token for a waiter woken to compete for the lock: it owns WOKEN and
/// must clear it (`lock_woken`, or `pass_on` if it never runs again).
pub(crate) const TOKEN_WOKEN: usize = 2;
const _: () = assert!(TOKEN_WOKEN != DEFAULT_TOKEN && TOKEN_WOKEN != TOKEN_HANDOFF, "Mutex: tokens must differ");

/// Spin rounds before parking (`Backoff::spin` doubles each round, up to 64
/// `spin_loop` hints). `Backoff::is_completed` cannot bound this loop: only
/// `snooze` advances it that far, so a `spin`-only loop never completes and
/// a waiter would spin for as long as the holder keeps the lock — forever
/// when the holder is a suspended coroutine of the spinner's own worker.
/// Under loom a single round keeps the models small.
const SPIN_ROUNDS: u32 = if cfg!(loom) { 1 } else { 7 };
/// Spin rounds before parking for a coroutine whose worker has nothing else
/// to run (`park::parking_would_idle_worker`): 703 `spin_loop` hints against
/// `SPIN_ROUNDS`' 127 (rounds past the seventh spin 64 hints each), about
/// 19 µs on the 2-CPU AMD EPYC where a hint took 26.5 ns. Measured there
/// with two coroutines on two workers incrementing one Mutex (in turns,
/// three runs each): 41-43 ns per increment and 5 000-8 700 parks per 4 M
/// increments with 7 rounds; 10 rounds 34-38 ns, 13 rounds 33-35 ns, 20
/// rounds 29-34 ns and a few hundred parks. Each park there costs a
/// cross-worker wake, which a spin that outlasts the holder's critical
/// section avoids; a spin that does not costs an otherwise idle CPU 19 µs.
const IDLE_WORKER_SPIN_ROUNDS: u32 = if cfg!(loom) { 1 } else { 16 };

/// A woken waiter that waited longer than this is handed the lock directly
/// (eventual fairness: a waiter behind a holder that re-locks at once still
/// gets in, about this long after it started waiting).
pub(crate) const FAIR_AFTER: Duration = Duration::from_millis(1);

/// The lock without data: the state word and its protocol.
pub(crate) struct RawMutex {
    state: AtomicU32,
}

impl RawMutex {
    #[cfg(not(loom))]
    pub(crate) const fn new() -> RawMutex {
        RawMutex { state: AtomicU32::new(0) }
    }

    #[cfg(loom)]
    pub(crate) fn new() -> RawMutex {
        RawMutex { state: AtomicU32::new(0) }
    }

    /// The parking-lot key of this lock.
    pub(crate) fn key(&self) -> usize {
        RawMutex::key_of(self)
    }

    /// The parking-lot key of the lock at `raw`, computed from the address
    /// alone: Condvar knows its mutex by address and must not dereference a
    /// mutex that may be gone by the time it looks.
    pub(crate) fn key_of(raw: *const RawMutex) -> usize {
        raw as usize
    }

    #[inline]
    pub(crate) fn lock(&self) {
        // Acquire: pairs with the Release of the unlock that freed the lock
        // (the previous holder's critical section happens before ours).
        if self.state.fetch_or(LOCKED, Ordering::Acquire) & LOCKED != 0 {
            self.lock_contended(None, false);
        }
    }

    /// Locks, for a waiter that an unlock woke with [`TOKEN_WOKEN`] (a
    /// Condvar waiter moved onto this lock's queue): clears WOKEN on the way.
    pub(crate) fn lock_woken(&self) {
        self.lock_contended(None, true);
    }

    #[inline]
    pub(crate) fn try_lock(&self) -> bool {
        let mut state = self.state.load(Ordering::Relaxed);
        loop {
            if state & LOCKED != 0 {
                return false;
            }
            match self.state.compare_exchange_weak(state, state | LOCKED, Ordering::Acquire, Ordering::Relaxed) {
                Ok(_) => return true,
                Err(actual) => state = actual,
            }
        }
    }

    /// Locks unless `deadline` passes first; `false` on timeout.
    pub(crate) fn lock_until(&self, deadline: Deadline) -> bool {
        self.state.fetch_or(LOCKED, Ordering::Acquire) & LOCKED == 0 || self.lock_contended(Some(deadline), false)
    }

    /// The slow path; `woken`: we own WOKEN (an unlock woke us), so we clear
    /// it when we take the lock or park again.
    #[cold]
    fn lock_contended(&self, deadline: Option<Deadline>, mut woken: bool) -> bool {
        let backoff = Backoff::new();
        let mut spins = 0;
        // This call's wait, across its parks: a re-park after losing the
        // race keeps the wait's start (FAIR_AFTER counts from the first
        // park) and its place at the front of the queue.
        let mut wait = lot::FairWait::new();
        let mut state = self.state.load(Ordering::Relaxed);
        loop {
            let clear = if woken { WOKEN } else { 0 };
            if state & LOCKED == 0 {
                match self.state.compare_exchange_weak(
                    state,
                    (state | LOCKED) & !clear,
                    Ordering::Acquire,
                    Ordering::Relaxed,
                ) {
                    Ok(_) => return true,
                    Err(actual) => state = actual,
                }
                continue;
            }
            // Spin (never yield the OS thread: in a coroutine that would stall
            // the worker) while nobody is parked yet, or while we are the
            // woken waiter (the others stay parked meanwhile).
            if (state & PARKED == 0 || woken)
                && (spins < SPIN_ROUNDS
                    || (spins < IDLE_WORKER_SPIN_ROUNDS && crate::park::parking_would_idle_worker()))
            {
                spins += 1;
                backoff.spin();
                state = self.state.load(Ordering::Relaxed);
                continue;
            }
            if state & PARKED == 0 || woken {
                if let Err(actual) = self.state.compare_exchange_weak(
                    state,
                    (state | PARKED) & !clear,
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                ) {
                    state = actual;
                    continue;
                }
                woken = false;
            }
            // park_fair: the unlocker needs how long we waited (FAIR_AFTER).
            // Another waiter's WOKEN may be set: its return wakes us.
            crate::park::waiting_on(crate::park::ParkedOn::Mutex(self.key()));
            let result = lot::park_fair(
                self.key(),
                &mut wait,
                || self.state.load(Ordering::Relaxed) & (LOCKED | PARKED) == LOCKED | PARKED,
                || {},
                |_, was_last| {
                    if was_last {
                        self.state.fetch_and(!PARKED, Ordering::Relaxed);
                    }
                },
                |_, token| self.pass_on(token),
                deadline,
            );
            match result {
                ParkResult::Unparked(TOKEN_HANDOFF) => return true,
                ParkResult::TimedOut => return false,
                ParkResult::Unparked(TOKEN_WOKEN) => woken = true,
                ParkResult::Unparked(_) | ParkResult::Invalid => {}
            }
            backoff.reset();
            spins = 0;
            state = self.state.load(Ordering::Relaxed);
        }
    }

    /// # Safety
    ///
    /// - The caller holds the lock.
    #[inline]
    pub(crate) unsafe fn unlock(&self) {
        let state = self.state.load(Ordering::Relaxed);
        if state == LOCKED {
            // Release: the next owner's Acquire sees our critical section.
            match self.state.compare_exchange(LOCKED, 0, Ordering::Release, Ordering::Relaxed) {
                Ok(_) => return,
                // A waiter set PARKED since the load: go on from its value.
                Err(actual) => return self.unlock_slow(actual),
            }
        }
        self.unlock_slow(state);
    }

    #[cold]
    fn unlock_slow(&self, mut state: u32) {
        // A woken waiter is on its way (WOKEN), or nobody is parked: release
        // without waking anyone.
        // (The loom negative control releases without waking, stranding a
        // parked waiter.)
        while state & WOKEN != 0 || state & PARKED == 0 || negative_control::broken("mutex") {
            // Release: the next owner's Acquire RMW sees our critical section.
            match self.state.compare_exchange_weak(state, state & !LOCKED, Ordering::Release, Ordering::Relaxed) {
                Ok(_) => return,
                Err(actual) => state = actual,
            }
        }
        // PARKED and not WOKEN: only the holder (us) sets WOKEN, so it stays
        // clear until the swap below, made under the bucket lock.
        //
        // A swap, not a store: while we hold the lock, another thread's
        // `lock` still writes the word (its `fetch_or` sets the LOCKED bit
        // that is set already), and loom leaves a plain store unordered
        // with a read-modify-write its thread has not seen. The woken
        // waiter, whose wake happens after our store, could then load the
        // `fetch_or`'s older value, CAS it back and park for good: a
        // "deadlock" in the models (three_threads_increment) that no C++
        // execution has, since the `fetch_or` read the value before ours
        // and so comes before our store in the word's modification order,
        // and a load that happens after our store reads it or a later
        // value. A swap reads the latest value and is ordered after it.
        // Only this slow path pays for it.
        lot::unpark_one_fair(self.key(), FAIR_AFTER, |result| {
            if result.be_fair {
                // Hand over: the lock stays LOCKED, now owned by the waiter.
                if !result.have_more {
                    self.state.swap(LOCKED, Ordering::Relaxed);
                }
                return TOKEN_HANDOFF;
            }
            let parked = if result.have_more { PARKED } else { 0 };
            let woken = if result.unparked > 0 { WOKEN } else { 0 };
            // Release: the next owner's Acquire sees our critical section.
            self.state.swap(parked | woken, Ordering::Release);
            TOKEN_WOKEN
        });
    }

    /// What a waiter that a runtime's shutdown unwinds after an unlock woke
    /// it, before it ran, does with `token` (`lot::park_passing_on`): a
    /// handed-over lock is unlocked; a plain wake (compete for the lock) is
    /// passed to the next waiter by clearing WOKEN if it was ours, taking the
    /// lock if it is free and unlocking it, which wakes the next one if
    /// PARKED is set (a holder's unlock does, if the lock is taken).
    /// Otherwise the waiters would sleep on a free lock.
    #[cold]
    pub(crate) fn pass_on(&self, token: usize) {
        if token == TOKEN_WOKEN {
            self.state.fetch_and(!WOKEN, Ordering::Relaxed);
        }
        if token == TOKEN_HANDOFF || self.try_lock() {
            // SAFETY: handed to us, or just taken.
            unsafe { self.unlock() };
        }
    }

    /// Marks that waiters were moved onto this lock's queue (Condvar's
    /// requeue), so the next unlock wakes one. Called with the bucket locked.
    pub(crate) fn mark_parked(&self) {
        self.state.fetch_or(PARKED, Ordering::Relaxed);
    }

    /// Sets PARKED if the lock is held and returns whether it did (Condvar's
    /// `notify_all` then moves every waiter onto this lock instead of waking
    /// one only to see it park again). Called with this lock's bucket locked:
    /// an unlock that races it either ran first (we see it unlocked) or sees
    /// PARKED and waits for the bucket in `unlock_slow`.
    pub(crate) fn mark_parked_if_locked(&self) -> bool {
        let mut state = self.state.load(Ordering::Relaxed);
        loop {
            if state & LOCKED == 0 {
                return false;
            }
            match self.state.compare_exchange_weak(state, state | PARKED, Ordering::Relaxed, Ordering::Relaxed) {
                Ok(_) => return true,
                Err(actual) => state = actual,
            }
        }
    }

    /// Whether the lock is held (for debug assertions and Debug).
    pub(crate) fn is_locked(&self) -> bool {
        self.state.load(Ordering::Relaxed) & LOCKED != 0
    }
}

/// A mutual-exclusion lock for coroutines and OS threads, like
/// [`std::sync::Mutex`] but without poisoning: a panic while the lock is held
/// releases it during unwinding.
///
/// A coroutine that waits parks (its worker runs other coroutines); an OS
/// thread that waits blocks on a futex. Both can wait on the same lock.
///
/// Unlock does not hand the lock to a waiter: it wakes one, and a caller
/// that arrives meanwhile may take the lock first (throughput). A waiter
/// spins briefly before it parks. No waiter starves: a woken waiter that
/// has waited more than about 1 ms since it called `lock` is handed the
/// lock directly (about one such hand-over per millisecond at most, so
/// behind many waiters each waits longer).
///
/// ```
/// use std::sync::Arc;
/// use weft::sync::Mutex;
///
/// let counter = Arc::new(Mutex::new(0u64));
/// let handles: Vec<_> = (0..8)
///     .map(|_| {
///         let counter = Arc::clone(&counter);
///         weft::spawn(move || {
///             for _ in 0..1000 {
///                 *counter.lock() += 1;
///             }
///         })
///     })
///     .collect();
/// for h in handles {
///     h.join().unwrap();
/// }
/// assert_eq!(*counter.lock(), 8000);
/// ```
pub struct Mutex<T: ?Sized> {
    raw: RawMutex,
    data: UnsafeCell<T>,
}

// SAFETY: the lock hands out access to `data` to one owner at a time, so
// sharing the Mutex across threads only moves T between them: T: Send.
unsafe impl<T: ?Sized + Send> Send for Mutex<T> {}
// SAFETY: as above.
unsafe impl<T: ?Sized + Send> Sync for Mutex<T> {}

impl<T> Mutex<T> {
    /// A new, unlocked mutex.
    ///
    /// ```
    /// use weft::sync::Mutex;
    ///
    /// static COUNTER: Mutex<u32> = Mutex::new(0);
    /// *COUNTER.lock() += 1;
    /// assert_eq!(*COUNTER.lock(), 1);
    /// ```
    #[cfg(not(loom))]
    pub const fn new(value: T) -> Mutex<T> {
        Mutex { raw: RawMutex::new(), data: UnsafeCell::new(value) }
    }

    /// A new, unlocked mutex.
    #[cfg(loom)]
    pub fn new(value: T) -> Mutex<T> {
        Mutex { raw: RawMutex::new(), data: UnsafeCell::new(value) }
    }

    /// Consumes the mutex and returns its value.
    ///
    /// ```
    /// use weft::sync::Mutex;
    ///
    /// let mutex = Mutex::new(String::from("weft"));
    /// mutex.lock().push('!');
    /// assert_eq!(mutex.into_inner(), "weft!");
    /// ```
    pub fn into_inner(self) -> T {
        self.data.into_inner()
    }
}

impl<T: ?Sized> Mutex<T> {
    /// Locks, waiting (parking the coroutine, or blocking the thread) while
    /// another holder has it.
    ///
    /// Locking a mutex the caller already holds deadlocks (it is not
    /// reentrant).
    ///
    /// ```
    /// use std::sync::Arc;
    /// use weft::sync::Mutex;
    ///
    /// let log = Arc::new(Mutex::new(Vec::new()));
    /// let log2 = Arc::clone(&log);
    /// weft::spawn(move || log2.lock().push("coroutine")).join().unwrap();
    /// log.lock().push("thread");
    /// assert_eq!(*log.lock(), ["coroutine", "thread"]);
    /// ```
    #[inline]
    pub fn lock(&self) -> MutexGuard<'_, T> {
        self.raw.lock();
        MutexGuard { mutex: self, _not_send: PhantomData }
    }

    /// Locks if it is free right now; never waits.
    ///
    /// ```
    /// use weft::sync::Mutex;
    ///
    /// let mutex = Mutex::new(1);
    /// let guard = mutex.try_lock().expect("free");
    /// assert!(mutex.try_lock().is_none(), "held");
    /// drop(guard);
    /// assert!(mutex.try_lock().is_some());
    /// ```
    #[inline]
    pub fn try_lock(&self) -> Option<MutexGuard<'_, T>> {
        // `then`, not `then_some`: a guard built eagerly on failure would be
        // dropped at once and unlock the mutex its real holder owns.
        self.raw.try_lock().then(|| MutexGuard { mutex: self, _not_send: PhantomData })
    }

    /// Locks, waiting at most `timeout`; `None` if it did not get the lock.
    /// The time is measured on `CLOCK_MONOTONIC` and `None` never comes
    /// before `timeout` has passed; a waiter that gives up leaves the lock as
    /// if it had never waited.
    ///
    /// ```
    /// use std::time::{Duration, Instant};
    /// use weft::sync::Mutex;
    ///
    /// let mutex = Mutex::new(());
    /// let _held = mutex.lock();
    /// let start = Instant::now();
    /// assert!(mutex.try_lock_for(Duration::from_millis(10)).is_none());
    /// assert!(start.elapsed() >= Duration::from_millis(10));
    /// ```
    pub fn try_lock_for(&self, timeout: Duration) -> Option<MutexGuard<'_, T>> {
        self.try_lock_deadline(Deadline::after(timeout))
    }

    /// Locks, waiting until `deadline` at the latest; `None` if it did not
    /// get the lock by then (never before `deadline`). An instant already
    /// past tries once, like [`try_lock`](Self::try_lock).
    ///
    /// ```
    /// use std::time::{Duration, Instant};
    /// use weft::sync::Mutex;
    ///
    /// let mutex = Mutex::new(0);
    /// let deadline = Instant::now() + Duration::from_millis(10);
    /// // Free: taken at once.
    /// *mutex.try_lock_until(deadline).unwrap() += 1;
    /// // Held: waits until the deadline, then gives up.
    /// let _held = mutex.lock();
    /// assert!(mutex.try_lock_until(deadline).is_none());
    /// assert!(Instant::now() >= deadline);
    /// ```
    pub fn try_lock_until(&self, deadline: Instant) -> Option<MutexGuard<'_, T>> {
        self.try_lock_deadline(super::deadline_at(deadline))
    }

    fn try_lock_deadline(&self, deadline: Deadline) -> Option<MutexGuard<'_, T>> {
        // `then`, not `then_some`: see try_lock.
        self.raw.lock_until(deadline).then(|| MutexGuard { mutex: self, _not_send: PhantomData })
    }

    /// Whether the mutex is held right now, by anyone. Only a snapshot (it
    /// may change at once): for assertions and diagnostics, not for
    /// deciding whether to lock.
    ///
    /// ```
    /// use weft::sync::Mutex;
    ///
    /// let mutex = Mutex::new(());
    /// assert!(!mutex.is_locked());
    /// let guard = mutex.lock();
    /// assert!(mutex.is_locked());
    /// drop(guard);
    /// assert!(!mutex.is_locked());
    /// ```
    pub fn is_locked(&self) -> bool {
        self.raw.is_locked()
    }

    /// The value, through `&mut self` (no locking needed).
    ///
    /// ```
    /// use weft::sync::Mutex;
    ///
    /// let mut mutex = Mutex::new(1);
    /// *mutex.get_mut() += 1;
    /// assert_eq!(*mutex.lock(), 2);
    /// ```
    pub fn get_mut(&mut self) -> &mut T {
        // SAFETY: `&mut self` proves no guard and no other reference exists.
        self.data.with_mut(|p| unsafe { &mut *p })
    }

    pub(crate) fn raw(&self) -> &RawMutex {
        &self.raw
    }
}

impl<T: Default> Default for Mutex<T> {
    fn default() -> Self {
        Mutex::new(T::default())
    }
}

impl<T: ?Sized + fmt::Debug> fmt::Debug for Mutex<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.try_lock() {
            Some(guard) => f.debug_struct("Mutex").field("data", &&*guard).finish(),
            None => f.debug_struct("Mutex").field("data", &format_args!("<locked>")).finish(),
        }
    }
}

/// Proof of holding a [`Mutex`]; unlocks on drop (also during unwinding).
/// `!Send`: a lock is released by the coroutine or thread that took it.
///
/// ```
/// use weft::sync::{Mutex, MutexGuard};
///
/// fn bump(guard: &mut MutexGuard<'_, u32>) {
///     **guard += 1;
/// }
///
/// let mutex = Mutex::new(0);
/// let mut guard = mutex.lock();
/// bump(&mut guard);
/// drop(guard); // unlocks
/// assert_eq!(*mutex.lock(), 1);
/// ```
#[must_use = "the lock is released as soon as the guard is dropped"]
pub struct MutexGuard<'a, T: ?Sized> {
    mutex: &'a Mutex<T>,
    _not_send: PhantomData<*const ()>,
}

// SAFETY: sharing a guard only shares `&T`: T: Sync suffices.
unsafe impl<T: ?Sized + Sync> Sync for MutexGuard<'_, T> {}

impl<'a, T: ?Sized> MutexGuard<'a, T> {
    /// The mutex this guard locks (Condvar uses it).
    pub(crate) fn mutex(guard: &Self) -> &'a Mutex<T> {
        guard.mutex
    }

    /// Turns the guard into one for a part of the data (a field, an
    /// element), still holding the whole lock; it is released when the
    /// mapped guard drops. An associated function (`MutexGuard::map(guard,
    /// f)`), so that it does not hide a method of `T`.
    ///
    /// A mapped guard cannot be used with a [`Condvar`](super::Condvar):
    /// waiting needs the whole mutex.
    ///
    /// If `f` panics, the lock is released as the guard unwinds.
    ///
    /// ```
    /// use weft::sync::{MappedMutexGuard, Mutex, MutexGuard};
    ///
    /// struct Account {
    ///     name: String,
    ///     balance: i64,
    /// }
    ///
    /// let account = Mutex::new(Account { name: "a".into(), balance: 10 });
    /// let mut balance: MappedMutexGuard<'_, i64> = MutexGuard::map(account.lock(), |a| &mut a.balance);
    /// *balance -= 3;
    /// assert!(account.try_lock().is_none(), "still locked through the mapped guard");
    /// drop(balance);
    /// assert_eq!(account.lock().balance, 7);
    /// assert_eq!(account.lock().name, "a");
    /// ```
    pub fn map<U: ?Sized, F>(guard: Self, f: F) -> MappedMutexGuard<'a, U>
    where
        F: FnOnce(&mut T) -> &mut U,
    {
        let mutex: &'a Mutex<T> = guard.mutex;
        let raw = &mutex.raw;
        // SAFETY: the guard proves we hold the lock, and it lives (owned
        // here) until `f` returns: no one else touches the data meanwhile.
        let data = NonNull::from(f(mutex.data.with_mut(|p| unsafe { &mut *p })));
        // The mapped guard takes over the unlock.
        std::mem::forget(guard);
        MappedMutexGuard { raw, data, _marker: PhantomData }
    }

    /// Like [`map`](Self::map), for a part that may be absent: if `f`
    /// returns `None`, the original guard comes back in `Err`, still
    /// holding the lock.
    ///
    /// ```
    /// use weft::sync::{Mutex, MutexGuard};
    ///
    /// let slots = Mutex::new(vec![1, 2, 3]);
    /// let second = MutexGuard::try_map(slots.lock(), |v| v.get_mut(1)).expect("present");
    /// assert_eq!(*second, 2);
    /// drop(second);
    /// let guard = MutexGuard::try_map(slots.lock(), |v| v.get_mut(10)).expect_err("absent");
    /// assert_eq!(guard.len(), 3, "the lock is still held by the returned guard");
    /// ```
    pub fn try_map<U: ?Sized, F>(guard: Self, f: F) -> Result<MappedMutexGuard<'a, U>, Self>
    where
        F: FnOnce(&mut T) -> Option<&mut U>,
    {
        let mutex: &'a Mutex<T> = guard.mutex;
        let raw = &mutex.raw;
        // SAFETY: as in `map`.
        match f(mutex.data.with_mut(|p| unsafe { &mut *p })) {
            Some(data) => {
                let data = NonNull::from(data);
                std::mem::forget(guard);
                Ok(MappedMutexGuard { raw, data, _marker: PhantomData })
            }
            None => Err(guard),
        }
    }
}

impl<T: ?Sized> Deref for MutexGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: holding the guard means holding the lock: no one else
        // touches the data until we unlock.
        self.mutex.data.with(|p| unsafe { &*p })
    }
}

impl<T: ?Sized> DerefMut for MutexGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: as in deref, and `&mut self` makes this the only reference.
        self.mutex.data.with_mut(|p| unsafe { &mut *p })
    }
}

impl<T: ?Sized> Drop for MutexGuard<'_, T> {
    #[inline]
    fn drop(&mut self) {
        // SAFETY: the guard proves we hold the lock.
        unsafe { self.mutex.raw.unlock() };
    }
}

impl<T: ?Sized + fmt::Debug> fmt::Debug for MutexGuard<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&**self, f)
    }
}

impl<T: ?Sized + fmt::Display> fmt::Display for MutexGuard<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&**self, f)
    }
}

/// A [`MutexGuard`] mapped to a part of the data ([`MutexGuard::map`]); it
/// holds the whole lock and unlocks on drop (also during unwinding).
/// `!Send`, like every guard.
///
/// ```
/// use weft::sync::{MappedMutexGuard, Mutex, MutexGuard};
///
/// let pair = Mutex::new((1, String::from("x")));
/// let mut text: MappedMutexGuard<'_, String> = MutexGuard::map(pair.lock(), |p| &mut p.1);
/// text.push('y');
/// drop(text);
/// assert_eq!(pair.lock().1, "xy");
/// ```
#[must_use = "the lock is released as soon as the guard is dropped"]
pub struct MappedMutexGuard<'a, T: ?Sized> {
    raw: &'a RawMutex,
    /// The mapped part; valid and ours while the lock is held.
    data: NonNull<T>,
    /// Borrows the data mutably for `'a` (invariant in `T`, as `&mut T`);
    /// the pointer also makes the guard `!Send`.
    _marker: PhantomData<&'a mut T>,
}

// SAFETY: sharing a guard only shares `&T`: T: Sync suffices.
unsafe impl<T: ?Sized + Sync> Sync for MappedMutexGuard<'_, T> {}

impl<'a, T: ?Sized> MappedMutexGuard<'a, T> {
    /// Maps further, to a part of this part (see [`MutexGuard::map`]).
    ///
    /// ```
    /// use weft::sync::{MappedMutexGuard, Mutex, MutexGuard};
    ///
    /// let nested = Mutex::new(((0, 1), 2));
    /// let inner = MutexGuard::map(nested.lock(), |n| &mut n.0);
    /// let mut one = MappedMutexGuard::map(inner, |i| &mut i.1);
    /// *one = 10;
    /// drop(one);
    /// assert_eq!(*nested.lock(), ((0, 10), 2));
    /// ```
    pub fn map<U: ?Sized, F>(guard: Self, f: F) -> MappedMutexGuard<'a, U>
    where
        F: FnOnce(&mut T) -> &mut U,
    {
        let raw = guard.raw;
        let mut ptr = guard.data;
        // SAFETY: the guard holds the lock and lives until `f` returns; the
        // pointer is the data it guards, borrowed mutably only here.
        let data = NonNull::from(f(unsafe { ptr.as_mut() }));
        std::mem::forget(guard);
        MappedMutexGuard { raw, data, _marker: PhantomData }
    }

    /// Like [`map`](Self::map), for a part that may be absent; `Err` gives
    /// this guard back.
    ///
    /// ```
    /// use weft::sync::{MappedMutexGuard, Mutex, MutexGuard};
    ///
    /// let lists = Mutex::new((vec![1], vec![2, 3]));
    /// let second = MutexGuard::map(lists.lock(), |l| &mut l.1);
    /// let last = MappedMutexGuard::try_map(second, |v| v.last_mut()).expect("present");
    /// assert_eq!(*last, 3);
    /// ```
    pub fn try_map<U: ?Sized, F>(guard: Self, f: F) -> Result<MappedMutexGuard<'a, U>, Self>
    where
        F: FnOnce(&mut T) -> Option<&mut U>,
    {
        let raw = guard.raw;
        let mut ptr = guard.data;
        // SAFETY: as in `map`.
        match f(unsafe { ptr.as_mut() }) {
            Some(data) => {
                let data = NonNull::from(data);
                std::mem::forget(guard);
                Ok(MappedMutexGuard { raw, data, _marker: PhantomData })
            }
            None => Err(guard),
        }
    }
}

impl<T: ?Sized> Deref for MappedMutexGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: the guard holds the lock, and `data` points into the
        // locked data (see `MutexGuard::map`).
        unsafe { self.data.as_ref() }
    }
}

impl<T: ?Sized> DerefMut for MappedMutexGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: as in deref, and `&mut self` makes this the only reference.
        unsafe { self.data.as_mut() }
    }
}

impl<T: ?Sized> Drop for MappedMutexGuard<'_, T> {
    #[inline]
    fn drop(&mut self) {
        // SAFETY: the guard holds the lock (taken over from a MutexGuard).
        unsafe { self.raw.unlock() };
    }
}

impl<T: ?Sized + fmt::Debug> fmt::Debug for MappedMutexGuard<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&**self, f)
    }
}

impl<T: ?Sized + fmt::Display> fmt::Display for MappedMutexGuard<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&**self, f)
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    /// The fast paths on a word with PARKED and WOKEN set (a woken waiter
    /// on its way, another parked): a free lock is taken at once, without
    /// parking (nobody would wake this thread: no unlock is coming), and
    /// with its flags kept; an unlock with WOKEN set releases without a
    /// wake and keeps them too. A fast path that cleared PARKED would
    /// strand the parked waiter (no later unlock would wake it); one that
    /// cleared WOKEN would let the next unlock wake a second waiter while
    /// the first is on its way.
    #[test]
    fn a_flagged_free_lock_is_taken_and_left_with_its_flags() {
        let raw = RawMutex::new();
        raw.state.store(PARKED | WOKEN, Ordering::Relaxed);
        raw.lock();
        assert_eq!(raw.state.load(Ordering::Relaxed), LOCKED | PARKED | WOKEN);
        assert!(!raw.try_lock(), "taken twice");
        // SAFETY: locked just above.
        unsafe { raw.unlock() };
        assert_eq!(raw.state.load(Ordering::Relaxed), PARKED | WOKEN);
        assert!(raw.lock_until(Deadline::after(Duration::from_secs(3600))), "a free lock is taken at once");
        assert_eq!(raw.state.load(Ordering::Relaxed), LOCKED | PARKED | WOKEN);
        // SAFETY: locked just above.
        unsafe { raw.unlock() };
        assert_eq!(raw.state.load(Ordering::Relaxed), PARKED | WOKEN);
    }
}

#[cfg(all(test, loom))]
mod loom_models {
    //! The Mutex protocol under loom: the fast path, the PARKED bit, parking
    //! and waking through the parking lot, with OS-thread waiters.
    use super::*;
    use crate::loom::thread;
    use loom::sync::Arc;

    /// Two or three threads increment under the lock: no increment is lost
    /// and no one is left parked (the model would report a deadlock).
    fn increments(threads: usize) {
        loom::model(move || {
            let mutex = Arc::new(Mutex::new(0usize));
            let handles: Vec<_> = (1..threads)
                .map(|_| {
                    let mutex = Arc::clone(&mutex);
                    thread::spawn(move || *mutex.lock() += 1)
                })
                .collect();
            *mutex.lock() += 1;
            for handle in handles {
                handle.join().unwrap();
            }
            assert_eq!(*mutex.lock(), threads);
            assert!(!mutex.raw().is_locked());
        });
    }

    #[test]
    fn two_threads_increment() {
        increments(2);
    }

    /// Negative control: an unlock that releases without waking the parked
    /// waiter strands it, and loom must report the deadlock (the model's
    /// schedules include one where the second thread parks first). std's
    /// `Arc`, not loom's: loom's would panic again when dropped while loom
    /// unwinds the deadlocked model, aborting the test binary.
    #[test]
    #[should_panic(expected = "deadlock")]
    fn negative_control_an_unlock_that_skips_the_wake_strands_a_waiter() {
        let _broken = crate::loom::negative_control::break_until_dropped("mutex");
        loom::model(|| {
            let mutex = std::sync::Arc::new(Mutex::new(0usize));
            let other = {
                let mutex = std::sync::Arc::clone(&mutex);
                thread::spawn(move || *mutex.lock() += 1)
            };
            *mutex.lock() += 1;
            other.join().unwrap();
            assert_eq!(*mutex.lock(), 2);
        });
    }

    #[test]
    fn three_threads_increment() {
        increments(3);
    }

    /// A timed lock (which may give up at any moment) and an untimed one
    /// queue behind the holder: the untimed one always gets in (a PARKED
    /// bit cleared under it, or a wake lost to the timed-out waiter, is a
    /// loom deadlock), no increment is lost, and the word ends clear.
    #[test]
    fn timed_lock_leaves_no_trace() {
        loom::model(|| {
            let mutex = Arc::new(Mutex::new(0usize));
            let held = mutex.lock();
            let timed = {
                let mutex = Arc::clone(&mutex);
                thread::spawn(move || {
                    if let Some(mut guard) = mutex.try_lock_for(Duration::from_secs(3600)) {
                        *guard += 1;
                    }
                })
            };
            let untimed = {
                let mutex = Arc::clone(&mutex);
                thread::spawn(move || *mutex.lock() += 10)
            };
            drop(held);
            timed.join().unwrap();
            untimed.join().unwrap();
            let total = *mutex.lock();
            assert!(total == 10 || total == 11, "an increment was lost: {total}");
            assert_eq!(mutex.raw().state.load(Ordering::Relaxed), 0, "the word is not clear");
        });
    }

    /// A failed try_lock never disturbs the holder: if it released the
    /// holder's lock, this thread's next `lock` would get in while the holder
    /// still writes, and loom reports the unsynchronised access.
    #[test]
    fn try_lock_never_releases_the_holders_lock() {
        loom::model(|| {
            let mutex = Arc::new(Mutex::new(0usize));
            let other = {
                let mutex = Arc::clone(&mutex);
                thread::spawn(move || {
                    drop(mutex.try_lock());
                    *mutex.lock() += 1;
                })
            };
            {
                let mut guard = mutex.lock();
                *guard += 10;
                thread::yield_now();
                *guard += 10;
            }
            other.join().unwrap();
            assert_eq!(*mutex.lock(), 21);
        });
    }
}
