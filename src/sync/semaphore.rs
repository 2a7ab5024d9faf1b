//! `Semaphore`: a counting semaphore with strict FIFO hand-off, for
//! coroutines and OS threads alike (they can wait on the same semaphore).
//!
//! # State word
//!
//! ```text
//!   usize:  [ permits (63 bits) | WAITING (bit 0) ]
//!
//!  permits   WAITING   meaning
//!  -------   -------   ---------------------------------------------------
//!  n > 0     0         n permits free, nobody queued
//!  0         0         none free, nobody queued
//!  0         1         none free, waiters queued (or one about to queue):
//!                      a release must hand its permit to the oldest waiter
//!  n > 0     1         never: a release with WAITING set hands its permit
//!                      over instead of banking it (see "Invariant")
//! ```
//!
//! - Fast paths: `try_acquire`/`acquire` take a permit with one CAS
//!   (permits -= 1) when WAITING is clear; a release adds with one CAS
//!   when WAITING is clear.
//! - Slow path of `acquire` (`#[cold]`): spin briefly while nobody is
//!   queued, then set WAITING and park on the state word's address,
//!   validating under the bucket lock that WAITING is still set.
//! - Slow path of a release (`#[cold]`): WAITING is set, so the permit goes
//!   straight to the oldest waiter: `unpark_one` takes it off the queue and
//!   hands it [`TOKEN_PERMIT`], "you were handed a permit"; the waiter
//!   returns owning it without touching the counter. The callback clears
//!   WAITING when that was the last waiter (it runs under the bucket lock,
//!   so no waiter can validate in between). If no waiter was queued after
//!   all (WAITING was set by an acquirer that has not validated yet), it
//!   clears WAITING and the release banks its permit with the fast-path CAS
//!   instead, which sees WAITING again if that acquirer set it anew.
//! - A waiter whose deadline passes removes itself (the parking lot does it
//!   under the bucket lock) and clears WAITING if it was the last one.
//!
//! # Invariant: WAITING => no free permits
//!
//! An acquirer sets WAITING only on a state with 0 permits; permits are
//! banked only by a CAS that saw WAITING clear; the hand-off never banks.
//! So a free permit and a queued waiter never coexist, and that is what
//! makes the semaphore FIFO: an acquirer that finds WAITING set queues
//! behind the waiters even when it arrives at the very moment a permit is
//! released, because that permit is already on its way to the oldest
//! waiter. `acquire` never overtakes an earlier waiter.
//!
//! Rejected alternative: waking the oldest waiter and letting it compete
//! for a banked permit (barging, as `Mutex` does). It is faster under
//! contention but lets a newcomer overtake the woken waiter, which breaks
//! the FIFO promise.
//!
//! # Limits
//!
//! At most [`Semaphore::MAX_PERMITS`] (`usize::MAX >> 1`) permits; adding
//! past it panics with a message instead of wrapping.
//!
//! Orderings: taking a permit is Acquire and banking one is Release, so
//! whatever a releaser did before releasing is visible to the acquirer that
//! gets its permit (as with tokio's semaphore); a handed-over permit is
//! published by the parking lot's `removed` Release/Acquire pair.

use super::spinlock::SpinWait;
use crate::loom::{AtomicUsize, Ordering};
use crate::park::lot::{self, DEFAULT_TOKEN, ParkResult};
use crate::sys::futex::Deadline;
use std::fmt;
use std::time::Duration;

const WAITING: usize = 0b1;
/// One permit in the state word.
const ONE_PERMIT: usize = 0b10;

/// Token for a waiter that was handed a permit (it returns owning it).
const TOKEN_PERMIT: usize = 1;

/// A counting semaphore, FIFO: `acquire` never overtakes an earlier waiter.
///
/// Works from coroutines (a waiting coroutine parks and its worker runs
/// others) and from OS threads (a waiting thread blocks on a futex).
///
/// A [`SemaphorePermit`] gives its permit back when dropped; [`forget`]
/// keeps it taken, which gives the classic P/V operations:
///
/// ```
/// use std::sync::Arc;
/// use weft::sync::Semaphore;
///
/// // At most two coroutines in the section at a time.
/// let slots = Arc::new(Semaphore::new(2));
/// let handles: Vec<_> = (0..6)
///     .map(|_| {
///         let slots = Arc::clone(&slots);
///         weft::spawn(move || {
///             let _permit = slots.acquire();
///             assert!(slots.available_permits() <= 1);
///         })
///     })
///     .collect();
/// for h in handles {
///     h.join().unwrap();
/// }
/// assert_eq!(slots.available_permits(), 2);
///
/// // P/V style: a signal from one side to the other.
/// let ready = Semaphore::new(0);
/// ready.add_permits(1); // V
/// ready.acquire().forget(); // P
/// assert_eq!(ready.available_permits(), 0);
/// ```
///
/// [`forget`]: SemaphorePermit::forget
pub struct Semaphore {
    /// `permits << 1 | WAITING`; see the module docs.
    state: AtomicUsize,
}

impl Semaphore {
    /// The most permits a semaphore can hold.
    pub const MAX_PERMITS: usize = usize::MAX >> 1;

    /// A semaphore with `permits` free permits.
    ///
    /// # Panics
    ///
    /// If `permits` exceeds [`MAX_PERMITS`](Self::MAX_PERMITS).
    #[cfg(not(loom))]
    pub const fn new(permits: usize) -> Semaphore {
        assert!(permits <= Self::MAX_PERMITS, "Semaphore::new: more permits than Semaphore::MAX_PERMITS");
        Semaphore { state: AtomicUsize::new(permits << 1) }
    }

    /// A semaphore with `permits` free permits.
    #[cfg(loom)]
    pub fn new(permits: usize) -> Semaphore {
        assert!(permits <= Self::MAX_PERMITS, "Semaphore::new: more permits than Semaphore::MAX_PERMITS");
        Semaphore { state: AtomicUsize::new(permits << 1) }
    }

    /// The parking-lot key of this semaphore.
    fn key(&self) -> usize {
        &self.state as *const AtomicUsize as usize
    }

    /// Takes a permit, waiting (parking the coroutine, or blocking the
    /// thread) until one is free and every earlier waiter has been served.
    #[inline]
    pub fn acquire(&self) -> SemaphorePermit<'_> {
        if !self.try_take() {
            let acquired = self.acquire_contended(None);
            debug_assert!(acquired, "Semaphore: an untimed acquire gave up");
        }
        SemaphorePermit { semaphore: self }
    }

    /// Takes a permit if one is free right now and nobody is queued for one
    /// (FIFO: it does not overtake waiters); never waits.
    #[inline]
    pub fn try_acquire(&self) -> Option<SemaphorePermit<'_>> {
        self.try_take().then(|| SemaphorePermit { semaphore: self })
    }

    /// Takes a permit, waiting at most `timeout`; `None` if none came in
    /// time. Never returns `None` before `timeout` has passed (the deadline
    /// is on `CLOCK_MONOTONIC`); it may return a little after.
    pub fn acquire_timeout(&self, timeout: Duration) -> Option<SemaphorePermit<'_>> {
        let deadline = Deadline::after(timeout);
        (self.try_take() || self.acquire_contended(Some(deadline))).then(|| SemaphorePermit { semaphore: self })
    }

    /// Adds `n` permits: hands them to queued waiters first, oldest first,
    /// and banks the rest. This is V (a release) when `n` is 1.
    ///
    /// # Panics
    ///
    /// If the free permits would exceed [`MAX_PERMITS`](Self::MAX_PERMITS).
    #[inline]
    pub fn add_permits(&self, n: usize) {
        self.release(n);
    }

    /// The free permits right now (a snapshot: others may change it at once).
    pub fn available_permits(&self) -> usize {
        self.state.load(Ordering::Relaxed) >> 1
    }

    /// One CAS loop: takes a permit if one is free and WAITING is clear.
    #[inline]
    fn try_take(&self) -> bool {
        let mut state = self.state.load(Ordering::Relaxed);
        loop {
            if state & WAITING != 0 || state < ONE_PERMIT {
                return false;
            }
            // Acquire: pairs with the Release of the release that banked
            // this permit.
            match self.state.compare_exchange_weak(state, state - ONE_PERMIT, Ordering::Acquire, Ordering::Relaxed) {
                Ok(_) => return true,
                Err(actual) => state = actual,
            }
        }
    }

    /// Waits for a permit (until `deadline`, if any); `false` on timeout.
    #[cold]
    fn acquire_contended(&self, deadline: Option<Deadline>) -> bool {
        let mut spin = SpinWait::new();
        let mut state = self.state.load(Ordering::Relaxed);
        loop {
            debug_assert!(
                state & WAITING == 0 || state == WAITING,
                "Semaphore: free permits while waiters are queued (state {state:#x})"
            );
            if state & WAITING == 0 && state >= ONE_PERMIT {
                // Acquire: as in try_take.
                match self.state.compare_exchange_weak(state, state - ONE_PERMIT, Ordering::Acquire, Ordering::Relaxed)
                {
                    Ok(_) => return true,
                    Err(actual) => state = actual,
                }
                continue;
            }
            if deadline.is_some_and(|d| d.has_passed()) {
                return false;
            }
            // Spin while nobody is queued: a permit may come back at once.
            if state & WAITING == 0 && spin.spin() {
                state = self.state.load(Ordering::Relaxed);
                continue;
            }
            // Relaxed: WAITING carries no data; the bucket lock orders it
            // with the releaser's unpark.
            if state & WAITING == 0 {
                if let Err(actual) =
                    self.state.compare_exchange_weak(state, WAITING, Ordering::Relaxed, Ordering::Relaxed)
                {
                    state = actual;
                    continue;
                }
            }
            crate::park::waiting_on(crate::park::ParkedOn::Semaphore(self.key()));
            let result = lot::park_passing_on(
                self.key(),
                // Park only while WAITING is set: then every release goes to
                // `release_contended`, which will find us in the queue.
                || self.state.load(Ordering::Relaxed) & WAITING != 0,
                || {},
                |_, was_last| {
                    // Under the bucket lock: the last waiter leaves, so a
                    // release may bank again. WAITING => 0 permits, so this
                    // leaves the state at exactly 0.
                    if was_last {
                        self.state.fetch_and(!WAITING, Ordering::Relaxed);
                    }
                },
                // Unwound by a shutdown after a release handed us a permit,
                // before we ran: give it back (to the next waiter, if any).
                |_, token| {
                    if token == TOKEN_PERMIT {
                        self.release(1);
                    }
                },
                deadline,
            );
            match result {
                ParkResult::Unparked(TOKEN_PERMIT) => return true,
                // Only after the deadline passed (the parking lot checks).
                ParkResult::TimedOut => return false,
                ParkResult::Unparked(_) | ParkResult::Invalid => {}
            }
            spin.reset();
            state = self.state.load(Ordering::Relaxed);
        }
    }

    /// Gives `n` permits back: to waiters first, then to the counter.
    #[inline]
    fn release(&self, n: usize) {
        if n == 0 {
            return;
        }
        let state = self.state.load(Ordering::Relaxed);
        if state & WAITING == 0 {
            let banked = checked_add_permits(state, n);
            // Release: pairs with the Acquire of whoever takes these permits.
            if self.state.compare_exchange_weak(state, banked, Ordering::Release, Ordering::Relaxed).is_ok() {
                return;
            }
        }
        self.release_contended(n);
    }

    /// The release loop: hand one permit to the oldest waiter while WAITING
    /// is set, bank the rest once it is clear.
    #[cold]
    fn release_contended(&self, mut n: usize) {
        let mut state = self.state.load(Ordering::Relaxed);
        while n > 0 {
            if state & WAITING == 0 {
                let banked = checked_add_permits(state, n);
                // Release: as in `release`.
                match self.state.compare_exchange_weak(state, banked, Ordering::Release, Ordering::Relaxed) {
                    Ok(_) => return,
                    Err(actual) => state = actual,
                }
                continue;
            }
            let woken = lot::unpark_one(self.key(), |result| {
                // Under the bucket lock. The last waiter leaves (or none was
                // queued after all): clear WAITING so releases bank again.
                // An acquirer that set WAITING but has not validated yet sees
                // it clear and retries instead of parking.
                if result.unparked == 0 || !result.have_more {
                    self.state.fetch_and(!WAITING, Ordering::Relaxed);
                }
                if result.unparked > 0 { TOKEN_PERMIT } else { DEFAULT_TOKEN }
            });
            n -= woken.unparked;
            state = self.state.load(Ordering::Relaxed);
        }
    }
}

/// The state word with `n` more permits banked (WAITING clear in `state`).
///
/// # Panics
///
/// On overflow past [`Semaphore::MAX_PERMITS`], with a message. Never
/// called with a bucket lock held, so the panic strands no waiter.
#[inline]
fn checked_add_permits(state: usize, n: usize) -> usize {
    debug_assert_eq!(state & WAITING, 0, "Semaphore: banking permits while waiters are queued");
    let permits = state >> 1;
    match permits.checked_add(n) {
        Some(total) if total <= Semaphore::MAX_PERMITS => total << 1,
        _ => permit_overflow(permits, n),
    }
}

#[cold]
#[inline(never)]
fn permit_overflow(permits: usize, n: usize) -> ! {
    panic!(
        "Semaphore permit count overflow: {permits} free + {n} added exceeds Semaphore::MAX_PERMITS ({})",
        Semaphore::MAX_PERMITS
    )
}

impl Default for Semaphore {
    /// A semaphore with no free permits.
    fn default() -> Self {
        Semaphore::new(0)
    }
}

impl fmt::Debug for Semaphore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = self.state.load(Ordering::Relaxed);
        f.debug_struct("Semaphore")
            .field("available_permits", &(state >> 1))
            .field("waiters", &(state & WAITING != 0))
            .finish()
    }
}

/// One permit of a [`Semaphore`]; given back when dropped (also during
/// unwinding), or kept taken with [`forget`](Self::forget).
///
/// Unlike lock guards it is `Send`: a permit is a count, not an ownership
/// of data, and may be given back from another coroutine or thread.
#[must_use = "the permit is given back as soon as it is dropped"]
pub struct SemaphorePermit<'a> {
    semaphore: &'a Semaphore,
}

impl SemaphorePermit<'_> {
    /// Keeps the permit taken: it is not given back on drop (P without V).
    /// [`Semaphore::add_permits`] gives permits back explicitly.
    pub fn forget(self) {
        std::mem::forget(self);
    }
}

impl Drop for SemaphorePermit<'_> {
    #[inline]
    fn drop(&mut self) {
        self.semaphore.release(1);
    }
}

impl fmt::Debug for SemaphorePermit<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SemaphorePermit").finish_non_exhaustive()
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use crate::loom::process::{AtomicUsize as StdAtomicUsize, Ordering as StdOrdering};
    use crate::sync::Mutex;
    use crate::test_rng::{self, TestRng};
    use std::sync::Arc;
    use std::thread;
    use std::time::Instant;

    #[test]
    fn counts_and_try_acquire() {
        let sem = Semaphore::new(2);
        let a = sem.try_acquire().expect("two free");
        let b = sem.try_acquire().expect("one free");
        assert!(sem.try_acquire().is_none());
        assert_eq!(sem.available_permits(), 0);
        drop(a);
        assert_eq!(sem.available_permits(), 1);
        b.forget();
        assert_eq!(sem.available_permits(), 1);
        sem.add_permits(3);
        assert_eq!(sem.available_permits(), 4);
        sem.add_permits(0);
        assert_eq!(format!("{sem:?}"), "Semaphore { available_permits: 4, waiters: false }");
        assert_eq!(Semaphore::default().available_permits(), 0);
    }

    #[test]
    #[should_panic(expected = "Semaphore permit count overflow")]
    fn add_permits_overflow_panics() {
        let sem = Semaphore::new(Semaphore::MAX_PERMITS - 1);
        sem.add_permits(1); // exactly MAX_PERMITS: fine
        assert_eq!(sem.available_permits(), Semaphore::MAX_PERMITS);
        sem.add_permits(1);
    }

    #[test]
    #[should_panic(expected = "Semaphore permit count overflow")]
    fn add_permits_overflow_of_usize_panics() {
        let sem = Semaphore::new(1);
        sem.add_permits(usize::MAX);
    }

    #[test]
    #[should_panic(expected = "more permits than Semaphore::MAX_PERMITS")]
    fn new_beyond_max_panics() {
        let _ = Semaphore::new(Semaphore::MAX_PERMITS + 1);
    }

    /// Waits until `sem` has its WAITING bit set, then a little longer, so
    /// the waiter that set it has validated and is queued. (The lot has no
    /// "how many are queued" query; the margin is generous.)
    fn wait_until_queued(sem: &Semaphore) {
        let start = Instant::now();
        while sem.state.load(Ordering::Relaxed) & WAITING == 0 {
            assert!(start.elapsed() < Duration::from_secs(10), "no waiter queued");
            thread::sleep(Duration::from_millis(1));
        }
        thread::sleep(Duration::from_millis(30));
    }

    /// A permit freed while a waiter is queued goes to that waiter: a
    /// newcomer's try_acquire must not get it (no overtaking).
    #[test]
    fn release_hands_over_to_queued_waiter() {
        let sem = Arc::new(Semaphore::new(0));
        let s = Arc::clone(&sem);
        let waiter = thread::spawn(move || s.acquire().forget());
        wait_until_queued(&sem);
        sem.add_permits(1);
        assert!(sem.try_acquire().is_none(), "the released permit must go to the queued waiter");
        assert_eq!(sem.available_permits(), 0);
        waiter.join().unwrap();
        assert_eq!(sem.state.load(Ordering::Relaxed), 0, "WAITING is cleared when the last waiter leaves");
    }

    /// FIFO with waiters of both kinds: coroutines and OS threads queue
    /// alternately; permits released one by one reach them in queue order.
    #[test]
    fn fifo_across_coroutines_and_threads() {
        const WAITERS: usize = 8;
        let rt = crate::Runtime::builder().workers(2).build().unwrap();
        let sem = Arc::new(Semaphore::new(0));
        let order = Arc::new(Mutex::new(Vec::new()));
        let served = Arc::new(StdAtomicUsize::new(0));
        let mut coroutines = Vec::new();
        let mut threads = Vec::new();
        for i in 0..WAITERS {
            let (sem2, order2, served2) = (Arc::clone(&sem), Arc::clone(&order), Arc::clone(&served));
            let body = move || {
                sem2.acquire().forget();
                order2.lock().push(i);
                served2.fetch_add(1, StdOrdering::Release);
            };
            if i % 2 == 0 {
                coroutines.push(rt.spawn(body));
            } else {
                threads.push(thread::spawn(body));
            }
            // Queue them strictly one after another.
            wait_until_queued(&sem);
        }
        for i in 0..WAITERS {
            sem.add_permits(1);
            let start = Instant::now();
            while served.load(StdOrdering::Acquire) <= i {
                assert!(start.elapsed() < Duration::from_secs(10), "waiter {i} was never served");
                thread::sleep(Duration::from_millis(1));
            }
        }
        for c in coroutines {
            c.join().unwrap();
        }
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(*order.lock(), (0..WAITERS).collect::<Vec<_>>());
        assert_eq!(sem.available_permits(), 0);
    }

    /// `add_permits(n)` serves n queued waiters at once and banks the rest.
    #[test]
    fn add_many_serves_waiters_then_banks() {
        let sem = Arc::new(Semaphore::new(0));
        let waiters: Vec<_> = (0..3)
            .map(|_| {
                let s = Arc::clone(&sem);
                let handle = thread::spawn(move || s.acquire().forget());
                wait_until_queued(&sem);
                handle
            })
            .collect();
        sem.add_permits(5);
        for w in waiters {
            w.join().unwrap();
        }
        assert_eq!(sem.available_permits(), 2);
    }

    #[test]
    fn acquire_timeout_never_returns_early() {
        let sem = Semaphore::new(0);
        for ms in [0, 1, 2, 5, 20] {
            let timeout = Duration::from_millis(ms);
            let start = Instant::now();
            assert!(sem.acquire_timeout(timeout).is_none());
            let waited = start.elapsed();
            assert!(waited >= timeout, "returned after {waited:?}, before the {timeout:?} timeout");
        }
        assert_eq!(sem.state.load(Ordering::Relaxed), 0, "a timed-out last waiter clears WAITING");
        let rt = crate::Runtime::builder().workers(2).build().unwrap();
        let sem = Arc::new(sem);
        let s = Arc::clone(&sem);
        rt.block_on(move || {
            for ms in [0, 1, 3, 10] {
                let timeout = Duration::from_millis(ms);
                let start = Instant::now();
                assert!(s.acquire_timeout(timeout).is_none());
                let waited = start.elapsed();
                assert!(waited >= timeout, "coroutine: returned after {waited:?}, before {timeout:?}");
            }
        });
    }

    #[test]
    fn acquire_timeout_succeeds_when_a_permit_comes() {
        let sem = Arc::new(Semaphore::new(0));
        let s = Arc::clone(&sem);
        let releaser = thread::spawn(move || {
            thread::sleep(Duration::from_millis(20));
            s.add_permits(1);
        });
        let permit = sem.acquire_timeout(Duration::from_secs(30));
        assert!(permit.is_some(), "a permit released in time is taken");
        drop(permit);
        releaser.join().unwrap();
        assert_eq!(sem.available_permits(), 1);
    }

    /// A timed-out waiter in the middle of the queue leaves it without
    /// disturbing the order of the others, and the bit stays set for them.
    #[test]
    fn timed_out_waiter_leaves_queue_intact() {
        let sem = Arc::new(Semaphore::new(0));
        let s = Arc::clone(&sem);
        let first = thread::spawn(move || s.acquire().forget());
        wait_until_queued(&sem);
        let s = Arc::clone(&sem);
        let timed = thread::spawn(move || s.acquire_timeout(Duration::from_millis(50)).is_some());
        assert!(!timed.join().unwrap(), "nothing was released: it times out");
        assert_eq!(sem.state.load(Ordering::Relaxed), WAITING, "the first waiter still waits");
        sem.add_permits(1);
        first.join().unwrap();
        assert_eq!(sem.state.load(Ordering::Relaxed), 0);
    }

    /// Never more holders than permits, under threads and coroutines mixed.
    #[test]
    fn bounds_concurrency_mixed() {
        const PERMITS: usize = 3;
        const ROUNDS: usize = 2_000;
        let rt = crate::Runtime::builder().workers(2).build().unwrap();
        let sem = Arc::new(Semaphore::new(PERMITS));
        let active = Arc::new(StdAtomicUsize::new(0));
        let body = |sem: Arc<Semaphore>, active: Arc<StdAtomicUsize>| {
            move || {
                for i in 0..ROUNDS {
                    let permit = if i % 7 == 0 {
                        loop {
                            if let Some(p) = sem.acquire_timeout(Duration::from_micros(50)) {
                                break p;
                            }
                        }
                    } else {
                        sem.acquire()
                    };
                    let now = active.fetch_add(1, StdOrdering::SeqCst) + 1;
                    assert!(now <= PERMITS, "{now} holders of {PERMITS} permits");
                    if i % 16 == 0 {
                        crate::yield_now();
                    }
                    active.fetch_sub(1, StdOrdering::SeqCst);
                    drop(permit);
                }
            }
        };
        let coroutines: Vec<_> = (0..6).map(|_| rt.spawn(body(Arc::clone(&sem), Arc::clone(&active)))).collect();
        let threads: Vec<_> = (0..3).map(|_| thread::spawn(body(Arc::clone(&sem), Arc::clone(&active)))).collect();
        for c in coroutines {
            c.join().unwrap();
        }
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(sem.available_permits(), PERMITS);
        assert_eq!(sem.state.load(Ordering::Relaxed), PERMITS << 1);
    }

    /// A permit can be given back from another thread than the taker's.
    #[test]
    fn permit_is_send() {
        let sem = Arc::new(Semaphore::new(1));
        let s = Arc::clone(&sem);
        thread::scope(|scope| {
            let permit = s.acquire();
            scope.spawn(move || drop(permit));
        });
        assert_eq!(sem.available_permits(), 1);
    }

    #[derive(Debug, Clone)]
    enum Op {
        TryAcquire,
        Release(usize),
        Forget(usize),
        AddPermits(usize),
        Available,
    }

    /// Up to 63 operations, weighted 3:2:1:1:1.
    fn random_ops(rng: &mut TestRng) -> Vec<Op> {
        (0..rng.below(64))
            .map(|_| match rng.weighted(&[3, 2, 1, 1, 1]) {
                0 => Op::TryAcquire,
                1 => Op::Release(rng.next_u64() as usize),
                2 => Op::Forget(rng.next_u64() as usize),
                3 => Op::AddPermits(rng.below(4)),
                _ => Op::Available,
            })
            .collect()
    }

    /// Single-threaded random operations against a counter: every
    /// `try_acquire` result and every count matches the model exactly
    /// (`test_rng::CASES` seeded cases; a failure names its case and ops).
    #[test]
    fn matches_sequential_model() {
        for case in 0..test_rng::CASES {
            let mut rng = TestRng::new(case);
            let initial = rng.below(4);
            let ops = random_ops(&mut rng);
            let sem = Semaphore::new(initial);
            let mut free = initial;
            let mut held = Vec::new();
            for (i, op) in ops.iter().enumerate() {
                let at = || format!("case {case} (initial {initial}), op {i} of {ops:?}");
                match *op {
                    Op::TryAcquire => {
                        let got = sem.try_acquire();
                        assert_eq!(got.is_some(), free > 0, "try_acquire, {}", at());
                        if let Some(permit) = got {
                            free -= 1;
                            held.push(permit);
                        }
                    }
                    Op::Release(i) if !held.is_empty() => {
                        drop(held.swap_remove(i % held.len()));
                        free += 1;
                    }
                    Op::Forget(i) if !held.is_empty() => held.swap_remove(i % held.len()).forget(),
                    Op::AddPermits(n) => {
                        sem.add_permits(n);
                        free += n;
                    }
                    Op::Release(_) | Op::Forget(_) | Op::Available => {}
                }
                assert_eq!(sem.available_permits(), free, "available_permits, {}", at());
                assert_eq!(sem.state.load(Ordering::Relaxed) & WAITING, 0, "WAITING bit, {}", at());
            }
            drop(held);
        }
    }
}

#[cfg(all(test, loom))]
mod loom_models {
    use super::*;
    use crate::loom::thread;
    use loom::sync::Arc;

    /// `threads` parties (the main thread included) each take a permit,
    /// count themselves in, check the bound, and give it back.
    fn holders_never_exceed_permits(permits: usize, threads: usize) {
        loom::model(move || {
            let sem = Arc::new(Semaphore::new(permits));
            let active = Arc::new(AtomicUsize::new(0));
            let party = {
                let (sem, active) = (sem.clone(), active.clone());
                move || {
                    let permit = sem.acquire();
                    let now = active.fetch_add(1, Ordering::Relaxed) + 1;
                    assert!(now <= permits, "{now} holders of {permits} permits");
                    active.fetch_sub(1, Ordering::Relaxed);
                    drop(permit);
                }
            };
            let others: Vec<_> = (1..threads).map(|_| thread::spawn(party.clone())).collect();
            party();
            for other in others {
                other.join().unwrap();
            }
            assert_eq!(sem.available_permits(), permits, "a permit was lost or made up");
            assert_eq!(sem.state.load(Ordering::Relaxed), permits << 1, "WAITING left set");
        });
    }

    #[test]
    fn one_permit_three_threads() {
        holders_never_exceed_permits(1, 3);
    }

    #[test]
    fn two_permits_three_threads() {
        holders_never_exceed_permits(2, 3);
    }

    /// P/V: a V racing a P is never lost, and what the V side wrote before
    /// its V is visible after the P (Release/Acquire through the permit).
    #[test]
    fn signal_is_not_lost() {
        loom::model(|| {
            let sem = Arc::new(Semaphore::new(0));
            let data = Arc::new(AtomicUsize::new(0));
            let signaller = {
                let (sem, data) = (sem.clone(), data.clone());
                thread::spawn(move || {
                    data.store(42, Ordering::Relaxed);
                    sem.add_permits(1);
                })
            };
            sem.acquire().forget();
            assert_eq!(data.load(Ordering::Relaxed), 42);
            signaller.join().unwrap();
            assert_eq!(sem.state.load(Ordering::Relaxed), 0);
        });
    }

    /// An already expired timed acquire racing a release: it either gets
    /// the permit or gives up, and in both cases the count ends exact and
    /// WAITING clear. (Loom has no clock, so only a zero timeout is
    /// deterministic; a timeout inside the queue is tested without loom.)
    #[test]
    fn zero_timeout_races_release() {
        loom::model(|| {
            let sem = Arc::new(Semaphore::new(0));
            let releaser = {
                let sem = sem.clone();
                thread::spawn(move || sem.add_permits(1))
            };
            let got = sem.acquire_timeout(Duration::ZERO).map(SemaphorePermit::forget).is_some();
            releaser.join().unwrap();
            let expected = if got { 0 } else { 1 };
            assert_eq!(sem.state.load(Ordering::Relaxed), expected << 1);
        });
    }
}
