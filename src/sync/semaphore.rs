//! `Semaphore`: a counting semaphore with strict FIFO hand-off, for
//! coroutines and OS threads alike (they can wait on the same semaphore).
//! A waiter may ask for several permits at once (`acquire_many`); it keeps
//! its place, and those behind it wait until it is served.
//!
//! # State word
//!
//! ```text
//!   usize:  [ permits (63 bits) | WAITING (bit 0) ]
//!
//!  permits   WAITING   meaning
//!  -------   -------   ---------------------------------------------------
//!  n         0         n permits free, nobody queued
//!  r         1         waiters queued (or one about to queue); the r permits
//!                      are set aside for the waiter at the head of the
//!                      queue, and are fewer than it asked for (see
//!                      "Invariant"); nobody else may take them
//! ```
//!
//! Beside the word, `queued` counts the waiters on the queue; it is read
//! and written only under the key's bucket lock.
//!
//! ```text
//!  transition                           who                      bucket lock
//!  -----------------------------------  -----------------------  -----------
//!  n -> n - k           (WAITING clear)  an acquirer of k <= n    no
//!  n -> n + k           (WAITING clear)  a release of k           no
//!  n -> n | WAITING     (n < k)          an acquirer of k,        no
//!                                        before it parks
//!  r|W -> (r + k - served)|W or, with    a release of k serves    yes
//!         the queue emptied, no W        the head while it can
//!  r|W -> (r - k), no W (queued == 0)    an acquirer of k <= r    yes (its
//!                                        that would be the head   validate)
//!  r|W -> r, no W                        the last waiter leaves   yes
//!                                        by a timeout, or a
//!                                        release finds no waiter
//!  r|W -> 0|W  (r given back at once)    a waiter that leaves by  yes
//!                                        a timeout, not last
//! ```
//!
//! - Fast paths: `try_acquire`/`acquire` take with one CAS when WAITING is
//!   clear and enough permits are free; a release adds with one CAS when
//!   WAITING is clear.
//! - Slow path of an acquire (`#[cold]`): spin briefly while nobody is
//!   queued, then set WAITING and park on the state word's address with a
//!   park token saying how many permits it wants (`lot::park_with_token`),
//!   validating under the bucket lock that WAITING is still set. A waiter
//!   that finds, at that moment, nobody queued and enough permits set aside
//!   takes them instead of parking (someone who set WAITING asking for more
//!   has not queued yet; it retries).
//! - Slow path of a release (`#[cold]`): WAITING is set, so the permits go
//!   to the queue (`lot::unpark_filter`): under the bucket lock, they are
//!   added to those set aside, and the waiter at the head is served (taken
//!   off the queue and handed [`TOKEN_PERMIT`], "your permits are yours")
//!   while they cover what it asked for; then the next, and so on. The first
//!   waiter they do not cover stops the serving: it keeps them set aside,
//!   and every waiter behind it keeps waiting, however few permits it asked
//!   for. WAITING is cleared with the last waiter served; if no waiter was
//!   queued after all (WAITING was set by an acquirer that has not
//!   validated yet), it is cleared and the release banks its permits with
//!   the fast-path CAS instead, which sees WAITING again if that acquirer
//!   set it anew.
//! - A waiter whose deadline passes removes itself (the parking lot does it
//!   under the bucket lock). If it was the last, WAITING is cleared and the
//!   permits set aside become free. Otherwise it may have been the head, and
//!   the permits set aside for it may cover the next waiter: it takes them
//!   out of the word and gives them back through a release once the bucket
//!   is unlocked, which serves the queue as any release does. So a waiter
//!   that gives up leaves the semaphore as if it had never waited. A runtime
//!   unwinding a parked coroutine leaves the same way.
//!
//! # Invariant: WAITING => the permits set aside do not cover the head
//!
//! An acquirer sets WAITING only on a state with fewer permits than it asks
//! for; permits are banked only by a CAS that saw WAITING clear; a release
//! with WAITING set serves the queue until the head is not covered. So a
//! waiter is never left queued behind permits that would serve it, and no
//! newcomer takes permits while anyone waits. That is what makes the
//! semaphore FIFO: an acquirer that finds WAITING set queues behind the
//! waiters even when it arrives at the very moment permits are released,
//! because those permits are already on their way to the waiters before it.
//! `acquire` never overtakes an earlier waiter, and a waiter for many
//! permits is never overtaken by later waiters for fewer.
//!
//! Rejected alternative: waking the oldest waiter and letting it compete
//! for a banked permit (barging, as `Mutex` does). It is faster under
//! contention but lets a newcomer overtake the woken waiter, which breaks
//! the FIFO promise.
//!
//! # Limits
//!
//! At most [`Semaphore::MAX_PERMITS`] (`usize::MAX >> 1`) permits; adding
//! past it panics with a message instead of wrapping, and so does asking for
//! more at once than a semaphore can ever hold.
//!
//! Orderings: taking a permit is Acquire and banking one is Release, so
//! whatever a releaser did before releasing is visible to the acquirer that
//! gets its permit (as with tokio's semaphore); a handed-over permit is
//! published by the parking lot's `removed` Release/Acquire pair, and every
//! change of the word is a read-modify-write, so no release sequence is
//! broken by the changes made under the bucket lock.

use super::spinlock::SpinWait;
use crate::loom::{AtomicUsize, Ordering, negative_control};
use crate::park::lot::{self, FilterOp, ParkResult};
use crate::sys::futex::Deadline;
use std::cell::Cell;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

const WAITING: usize = 0b1;

/// Token for a waiter that was handed its permits (it returns owning them).
const TOKEN_PERMIT: usize = 1;

/// The free permits in `state` (none while waiters are queued: those in the
/// word are set aside for the head of the queue).
fn free_permits(state: usize) -> usize {
    if state & WAITING != 0 { 0 } else { state >> 1 }
}

/// A counting semaphore, FIFO: `acquire` never overtakes an earlier waiter,
/// and a waiter for several permits ([`acquire_many`](Self::acquire_many))
/// is served before everyone who came after it.
///
/// Works from coroutines (a waiting coroutine parks and its worker runs
/// others) and from OS threads (a waiting thread blocks on a futex).
///
/// A [`SemaphorePermit`] gives its permits back when dropped; [`forget`]
/// keeps them taken, which gives the classic P/V operations:
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
    /// Waiters on the queue. Read and written only under the key's bucket
    /// lock (so Relaxed): +1 in a waiter's validation, -1 when a release
    /// serves one or one leaves by a timeout.
    queued: AtomicUsize,
}

impl Semaphore {
    /// The most permits a semaphore can hold.
    ///
    /// ```
    /// use weft::sync::Semaphore;
    ///
    /// let sem = Semaphore::new(Semaphore::MAX_PERMITS);
    /// assert_eq!(sem.available_permits(), usize::MAX >> 1);
    /// ```
    pub const MAX_PERMITS: usize = usize::MAX >> 1;

    /// A semaphore with `permits` free permits.
    ///
    /// # Panics
    ///
    /// If `permits` exceeds [`MAX_PERMITS`](Self::MAX_PERMITS).
    ///
    /// ```
    /// use weft::sync::Semaphore;
    ///
    /// static CONNECTIONS: Semaphore = Semaphore::new(4);
    /// let _permit = CONNECTIONS.acquire();
    /// assert_eq!(CONNECTIONS.available_permits(), 3);
    /// ```
    #[cfg(not(loom))]
    pub const fn new(permits: usize) -> Semaphore {
        assert!(permits <= Self::MAX_PERMITS, "Semaphore::new: more permits than Semaphore::MAX_PERMITS");
        Semaphore { state: AtomicUsize::new(permits << 1), queued: AtomicUsize::new(0) }
    }

    /// A semaphore with `permits` free permits.
    #[cfg(loom)]
    pub fn new(permits: usize) -> Semaphore {
        assert!(permits <= Self::MAX_PERMITS, "Semaphore::new: more permits than Semaphore::MAX_PERMITS");
        Semaphore { state: AtomicUsize::new(permits << 1), queued: AtomicUsize::new(0) }
    }

    /// The parking-lot key of this semaphore.
    fn key(&self) -> usize {
        &self.state as *const AtomicUsize as usize
    }

    /// Takes a permit, waiting (parking the coroutine, or blocking the
    /// thread) until one is free and every earlier waiter has been served.
    ///
    /// ```
    /// use weft::sync::Semaphore;
    ///
    /// let sem = Semaphore::new(1);
    /// let permit = sem.acquire();
    /// assert_eq!(sem.available_permits(), 0);
    /// drop(permit);
    /// assert_eq!(sem.available_permits(), 1);
    /// ```
    #[inline]
    pub fn acquire(&self) -> SemaphorePermit<'_> {
        if !self.try_take(1) {
            let acquired = self.acquire_contended(1, None);
            debug_assert!(acquired, "Semaphore: an untimed acquire gave up");
        }
        SemaphorePermit { semaphore: self, permits: 1 }
    }

    /// Takes a permit if one is free right now and nobody is queued for one
    /// (FIFO: it does not overtake waiters); never waits.
    ///
    /// ```
    /// use weft::sync::Semaphore;
    ///
    /// let sem = Semaphore::new(1);
    /// let permit = sem.try_acquire().expect("one is free");
    /// assert!(sem.try_acquire().is_none());
    /// drop(permit);
    /// ```
    #[inline]
    pub fn try_acquire(&self) -> Option<SemaphorePermit<'_>> {
        self.try_take(1).then(|| SemaphorePermit { semaphore: self, permits: 1 })
    }

    /// Takes a permit, waiting at most `timeout`; `None` if none came in
    /// time. Never returns `None` before `timeout` has passed (the deadline
    /// is on `CLOCK_MONOTONIC`); it may return a little after. A waiter that
    /// gives up leaves the semaphore as if it had never waited.
    ///
    /// ```
    /// use std::time::{Duration, Instant};
    /// use weft::sync::Semaphore;
    ///
    /// let sem = Semaphore::new(0);
    /// let start = Instant::now();
    /// assert!(sem.acquire_timeout(Duration::from_millis(10)).is_none());
    /// assert!(start.elapsed() >= Duration::from_millis(10));
    /// ```
    pub fn acquire_timeout(&self, timeout: Duration) -> Option<SemaphorePermit<'_>> {
        self.acquire_many_timeout(1, timeout)
    }

    /// Takes `n` permits at once, waiting until they are free and every
    /// earlier waiter has been served. While it waits at the head of the
    /// queue, permits released are set aside for it until there are `n`;
    /// waiters behind it, even for a single permit, wait until it is served
    /// (so a request for more permits than will ever be free waits for ever,
    /// and so does everyone behind it). `n == 0` returns an empty permit at
    /// once.
    ///
    /// # Panics
    ///
    /// If `n` exceeds [`MAX_PERMITS`](Self::MAX_PERMITS): the semaphore
    /// could never hold that many.
    ///
    /// ```
    /// use std::sync::Arc;
    /// use weft::sync::Semaphore;
    ///
    /// let budget = Arc::new(Semaphore::new(1));
    /// let b = Arc::clone(&budget);
    /// let big = weft::spawn(move || b.acquire_many(3).num_permits());
    /// budget.add_permits(2); // 3 free in all: the waiter for 3 gets them
    /// assert_eq!(big.join().unwrap(), 3);
    /// assert_eq!(budget.available_permits(), 3, "given back on drop");
    /// ```
    #[inline]
    pub fn acquire_many(&self, n: usize) -> SemaphorePermit<'_> {
        check_request(n);
        if n > 0 && !self.try_take(n) {
            let acquired = self.acquire_contended(n, None);
            debug_assert!(acquired, "Semaphore: an untimed acquire gave up");
        }
        SemaphorePermit { semaphore: self, permits: n }
    }

    /// Takes `n` permits if they are free right now and nobody is queued
    /// (FIFO: it does not overtake waiters); never waits. `n == 0` always
    /// succeeds.
    ///
    /// # Panics
    ///
    /// If `n` exceeds [`MAX_PERMITS`](Self::MAX_PERMITS).
    ///
    /// ```
    /// use weft::sync::Semaphore;
    ///
    /// let sem = Semaphore::new(3);
    /// let two = sem.try_acquire_many(2).expect("3 free");
    /// assert!(sem.try_acquire_many(2).is_none(), "1 free");
    /// assert_eq!(two.num_permits(), 2);
    /// ```
    #[inline]
    pub fn try_acquire_many(&self, n: usize) -> Option<SemaphorePermit<'_>> {
        check_request(n);
        (n == 0 || self.try_take(n)).then(|| SemaphorePermit { semaphore: self, permits: n })
    }

    /// Takes `n` permits at once, waiting at most `timeout` (FIFO, as
    /// [`acquire_many`](Self::acquire_many)); `None` if they did not come
    /// in time, never before `timeout` has passed. A waiter that gives up
    /// leaves the semaphore as if it had never waited: permits set aside
    /// for it go to the waiters behind it, or become free.
    ///
    /// # Panics
    ///
    /// If `n` exceeds [`MAX_PERMITS`](Self::MAX_PERMITS).
    ///
    /// ```
    /// use std::time::{Duration, Instant};
    /// use weft::sync::Semaphore;
    ///
    /// let sem = Semaphore::new(2);
    /// let start = Instant::now();
    /// assert!(sem.acquire_many_timeout(3, Duration::from_millis(10)).is_none());
    /// assert!(start.elapsed() >= Duration::from_millis(10));
    /// assert_eq!(sem.available_permits(), 2, "the two stayed free");
    /// ```
    pub fn acquire_many_timeout(&self, n: usize, timeout: Duration) -> Option<SemaphorePermit<'_>> {
        check_request(n);
        let deadline = Deadline::after(timeout);
        let acquired = n == 0 || self.try_take(n) || self.acquire_contended(n, Some(deadline));
        acquired.then(|| SemaphorePermit { semaphore: self, permits: n })
    }

    /// [`acquire`](Self::acquire) for a semaphore in an [`Arc`]: the permit
    /// keeps the `Arc`, so it can move into a coroutine or thread and be
    /// given back there (see [`OwnedSemaphorePermit`]). Clone the `Arc` to
    /// keep one: `Arc::clone(&sem).acquire_owned()`.
    pub fn acquire_owned(self: Arc<Self>) -> OwnedSemaphorePermit {
        self.acquire_many_owned(1)
    }

    /// [`acquire_many`](Self::acquire_many), owned (see
    /// [`acquire_owned`](Self::acquire_owned)).
    ///
    /// # Panics
    ///
    /// As `acquire_many`: if `n` exceeds [`MAX_PERMITS`](Self::MAX_PERMITS).
    pub fn acquire_many_owned(self: Arc<Self>, n: usize) -> OwnedSemaphorePermit {
        self.acquire_many(n).forget();
        OwnedSemaphorePermit { semaphore: self, permits: n }
    }

    /// [`try_acquire`](Self::try_acquire), owned (see
    /// [`acquire_owned`](Self::acquire_owned)); `None` (and the `Arc`
    /// dropped) if no permit is free.
    pub fn try_acquire_owned(self: Arc<Self>) -> Option<OwnedSemaphorePermit> {
        self.try_acquire_many_owned(1)
    }

    /// [`try_acquire_many`](Self::try_acquire_many), owned (see
    /// [`acquire_owned`](Self::acquire_owned)).
    ///
    /// # Panics
    ///
    /// As `try_acquire_many`: if `n` exceeds [`MAX_PERMITS`](Self::MAX_PERMITS).
    pub fn try_acquire_many_owned(self: Arc<Self>, n: usize) -> Option<OwnedSemaphorePermit> {
        let taken = self.try_acquire_many(n).map(SemaphorePermit::forget).is_some();
        taken.then(|| OwnedSemaphorePermit { semaphore: self, permits: n })
    }

    /// Adds `n` permits: hands them to queued waiters first, oldest first,
    /// and banks the rest. This is V (a release) when `n` is 1.
    ///
    /// # Panics
    ///
    /// If the permits would exceed [`MAX_PERMITS`](Self::MAX_PERMITS).
    ///
    /// ```
    /// use weft::sync::Semaphore;
    ///
    /// let sem = Semaphore::new(0);
    /// sem.add_permits(2);
    /// assert_eq!(sem.available_permits(), 2);
    /// ```
    #[inline]
    pub fn add_permits(&self, n: usize) {
        self.release(n);
    }

    /// The free permits right now (a snapshot: others may change it at
    /// once). Permits set aside for a waiter at the head of the queue (one
    /// that asked for more than have come so far) are not free.
    ///
    /// ```
    /// use weft::sync::Semaphore;
    ///
    /// let sem = Semaphore::new(5);
    /// let _three = sem.acquire_many(3);
    /// assert_eq!(sem.available_permits(), 2);
    /// ```
    pub fn available_permits(&self) -> usize {
        free_permits(self.state.load(Ordering::Relaxed))
    }

    /// One CAS loop: takes `n` (1..=MAX_PERMITS) permits if that many are
    /// free and WAITING is clear.
    #[inline]
    fn try_take(&self, n: usize) -> bool {
        let mut state = self.state.load(Ordering::Relaxed);
        loop {
            if state & WAITING != 0 || state >> 1 < n {
                return false;
            }
            // Acquire: pairs with the Release of the releases that banked
            // these permits.
            match self.state.compare_exchange_weak(state, state - (n << 1), Ordering::Acquire, Ordering::Relaxed) {
                Ok(_) => return true,
                Err(actual) => state = actual,
            }
        }
    }

    /// Waits for `n` (1..=MAX_PERMITS) permits (until `deadline`, if any);
    /// `false` on timeout.
    #[cold]
    fn acquire_contended(&self, n: usize, deadline: Option<Deadline>) -> bool {
        debug_assert!(n > 0 && n <= Self::MAX_PERMITS, "Semaphore: waiting for {n} permits");
        let mut spin = SpinWait::new();
        // Permits a timed-out waiter took out of the word to give back once
        // the bucket is unlocked (module docs); dropped on every exit, so an
        // unwind gives them back too.
        let give_back = GiveBack { semaphore: self, permits: Cell::new(0) };
        let mut state = self.state.load(Ordering::Relaxed);
        loop {
            if state & WAITING == 0 && state >> 1 >= n {
                // Acquire: as in try_take.
                match self.state.compare_exchange_weak(state, state - (n << 1), Ordering::Acquire, Ordering::Relaxed) {
                    Ok(_) => return true,
                    Err(actual) => state = actual,
                }
                continue;
            }
            // Nothing of ours is in the word here (a WAITING we set before
            // an earlier park is the queue's now): giving up leaves no trace.
            if deadline.is_some_and(lot::deadline_passed) {
                return false;
            }
            // Spin while nobody is queued: permits may come back at once.
            if state & WAITING == 0 && spin.spin() {
                state = self.state.load(Ordering::Relaxed);
                continue;
            }
            // Relaxed: WAITING carries no data; the bucket lock orders it
            // with the releaser's unpark.
            if state & WAITING == 0 {
                if let Err(actual) =
                    self.state.compare_exchange_weak(state, state | WAITING, Ordering::Relaxed, Ordering::Relaxed)
                {
                    state = actual;
                    continue;
                }
            }
            let mut took = false;
            crate::park::waiting_on(crate::park::ParkedOn::Semaphore(self.key()));
            let result = lot::park_with_token(
                self.key(),
                n,
                || {
                    let state = self.state.load(Ordering::Relaxed);
                    // Park only while WAITING is set: then every release
                    // goes to `release_contended`, which will find us.
                    if state & WAITING == 0 {
                        return false;
                    }
                    // Nobody queued and enough set aside: ours, instead of
                    // parking at the head with nobody to serve us. The queue
                    // is empty, so WAITING goes too.
                    if self.queued.load(Ordering::Relaxed) == 0 && state >> 1 >= n {
                        // Acquire: as in try_take. The word only changes
                        // under this bucket lock while WAITING is set.
                        let taken = self.state.compare_exchange(
                            state,
                            ((state >> 1) - n) << 1,
                            Ordering::Acquire,
                            Ordering::Relaxed,
                        );
                        debug_assert!(taken.is_ok(), "Semaphore: the word changed under the bucket lock");
                        took = taken.is_ok();
                        return false;
                    }
                    self.queued.fetch_add(1, Ordering::Relaxed);
                    true
                },
                || {},
                // Timed out, or unwound by a runtime while parked (under
                // the bucket lock): see the module docs.
                |_, was_last| {
                    self.queued.fetch_sub(1, Ordering::Relaxed);
                    if was_last {
                        // The permits set aside become free.
                        self.state.fetch_and(!WAITING, Ordering::Relaxed);
                    } else {
                        // We may have been the head: what was set aside for
                        // us may serve the next one. Acquire: we give these
                        // permits back with a Release of our own.
                        let state = self.state.swap(WAITING, Ordering::Acquire);
                        give_back.permits.set(state >> 1);
                    }
                },
                // Unwound by a shutdown after a release served us, before
                // we ran: give the permits back (to the next waiters).
                |_, token| {
                    if token == TOKEN_PERMIT {
                        self.release(n);
                    }
                },
                deadline,
            );
            match result {
                ParkResult::Unparked(TOKEN_PERMIT) => return true,
                ParkResult::Invalid if took => return true,
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

    /// The release loop: serve the queue while WAITING is set, bank once it
    /// is clear.
    #[cold]
    fn release_contended(&self, n: usize) {
        if n > Self::MAX_PERMITS {
            permit_overflow(self.state.load(Ordering::Relaxed) >> 1, n);
        }
        let mut state = self.state.load(Ordering::Relaxed);
        loop {
            // (The loom negative control banks the permits past queued
            // waiters, who then sleep on.)
            if state & WAITING == 0 || negative_control::broken("semaphore") {
                let banked = checked_add_permits(state, n);
                // Release: as in `release`.
                match self.state.compare_exchange_weak(state, banked, Ordering::Release, Ordering::Relaxed) {
                    Ok(_) => return,
                    Err(actual) => state = actual,
                }
                continue;
            }
            if self.serve_queue(n) {
                return;
            }
            state = self.state.load(Ordering::Relaxed);
        }
    }

    /// Adds `n` (at most MAX_PERMITS) permits to those set aside for the
    /// queue and serves waiters from the head while they cover what each
    /// asked for (module docs). `false` if nobody was queued: WAITING is
    /// then cleared, nothing added, and the caller banks the permits.
    fn serve_queue(&self, n: usize) -> bool {
        // The permits for the queue, read at the first waiter (under the
        // bucket lock, where the word holds still while WAITING is set).
        let for_queue: Cell<Option<usize>> = Cell::new(None);
        let mut overflow = None;
        lot::unpark_filter(
            self.key(),
            |wants| {
                // No overflow: set aside < MAX_PERMITS, and n <= MAX_PERMITS.
                let left = for_queue.get().unwrap_or_else(|| (self.state.load(Ordering::Relaxed) >> 1) + n);
                if left < wants {
                    for_queue.set(Some(left));
                    return FilterOp::Stop; // the head waits on; so does everyone behind it
                }
                for_queue.set(Some(left - wants));
                self.queued.fetch_sub(1, Ordering::Relaxed);
                FilterOp::Unpark
            },
            |result| {
                match for_queue.get() {
                    None => {
                        // Nobody queued: WAITING was set by an acquirer that
                        // has not validated yet (it sees it clear and
                        // retries), or the last waiter just left. Let
                        // releases bank again.
                        self.state.fetch_and(!WAITING, Ordering::Relaxed);
                    }
                    Some(left) => {
                        // Never panic here (waiters are off the queue and
                        // the bucket lock is held): keep what fits and
                        // panic once unlocked.
                        if left > Self::MAX_PERMITS {
                            overflow = Some(left);
                        }
                        let waiting = if result.have_more { WAITING } else { 0 };
                        // AcqRel: Acquire takes in the releases that banked
                        // the permits we hand over; Release publishes ours
                        // to whoever takes the rest once WAITING is clear.
                        let previous = self.state.swap(left.min(Self::MAX_PERMITS) << 1 | waiting, Ordering::AcqRel);
                        debug_assert!(previous & WAITING != 0, "Semaphore: served a queue without WAITING");
                    }
                }
                TOKEN_PERMIT
            },
        );
        if let Some(total) = overflow {
            permit_overflow(total - n, n);
        }
        for_queue.get().is_some()
    }
}

/// Panics for a request of more permits than a semaphore can hold.
#[inline]
fn check_request(n: usize) {
    if n > Semaphore::MAX_PERMITS {
        too_many_requested(n);
    }
}

#[cold]
#[inline(never)]
fn too_many_requested(n: usize) -> ! {
    panic!(
        "Semaphore: {n} permits requested at once, more than Semaphore::MAX_PERMITS ({}): \
         the request could never be served",
        Semaphore::MAX_PERMITS
    )
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

/// Permits a timed-out waiter took out of the word (module docs), given
/// back when its wait ends, however it ends.
struct GiveBack<'a> {
    semaphore: &'a Semaphore,
    permits: Cell<usize>,
}

impl Drop for GiveBack<'_> {
    fn drop(&mut self) {
        // Under loom a detected deadlock unwinds every model thread after
        // loom has torn the execution down (as in the parking lot's guard).
        if cfg!(loom) && std::thread::panicking() {
            return;
        }
        self.semaphore.release(self.permits.get());
    }
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
            .field("available_permits", &free_permits(state))
            .field("waiters", &(state & WAITING != 0))
            .finish()
    }
}

/// Permits of a [`Semaphore`] (one from `acquire`, `n` from
/// `acquire_many(n)`); given back when dropped (also during unwinding), or
/// kept taken with [`forget`](Self::forget).
///
/// Unlike lock guards it is `Send`: a permit is a count, not an ownership
/// of data, and may be given back from another coroutine or thread.
///
/// ```
/// use weft::sync::{Semaphore, SemaphorePermit};
///
/// let sem = Semaphore::new(2);
/// let permit: SemaphorePermit<'_> = sem.acquire();
/// std::thread::scope(|s| {
///     s.spawn(move || drop(permit)); // given back on another thread
/// });
/// assert_eq!(sem.available_permits(), 2);
/// ```
#[must_use = "the permit is given back as soon as it is dropped"]
pub struct SemaphorePermit<'a> {
    semaphore: &'a Semaphore,
    permits: usize,
}

impl SemaphorePermit<'_> {
    /// Keeps the permits taken: they are not given back on drop (P without
    /// V). [`Semaphore::add_permits`] gives permits back explicitly.
    ///
    /// ```
    /// use weft::sync::Semaphore;
    ///
    /// let sem = Semaphore::new(3);
    /// sem.acquire_many(2).forget();
    /// assert_eq!(sem.available_permits(), 1);
    /// ```
    pub fn forget(self) {
        std::mem::forget(self);
    }

    /// How many permits this holds.
    ///
    /// ```
    /// use weft::sync::Semaphore;
    ///
    /// let sem = Semaphore::new(5);
    /// assert_eq!(sem.acquire().num_permits(), 1);
    /// assert_eq!(sem.acquire_many(4).num_permits(), 4);
    /// ```
    pub fn num_permits(&self) -> usize {
        self.permits
    }
}

/// Permits taken from a semaphore held in an [`Arc`], which this permit
/// keeps: it owns its semaphore reference, so it can be moved into a
/// spawned coroutine (or thread) and is given back when that one drops it.
/// Made by [`Semaphore::acquire_owned`] and its variants.
///
/// ```
/// use std::sync::Arc;
/// use weft::sync::Semaphore;
///
/// let slots = Arc::new(Semaphore::new(2));
/// let workers: Vec<_> = (0..8)
///     .map(|i| {
///         // Wait for a slot here, before spawning: at most two run at once.
///         let permit = Arc::clone(&slots).acquire_owned();
///         weft::spawn(move || {
///             let _permit = permit; // given back when this coroutine ends
///             i * 2
///         })
///     })
///     .collect();
/// let sum: u32 = workers.into_iter().map(|w| w.join().unwrap()).sum();
/// assert_eq!(sum, 56);
/// assert_eq!(slots.available_permits(), 2);
/// ```
#[must_use = "the permit is given back as soon as it is dropped"]
pub struct OwnedSemaphorePermit {
    semaphore: Arc<Semaphore>,
    permits: usize,
}

impl OwnedSemaphorePermit {
    /// Keeps the permits taken: they are not given back on drop (see
    /// [`SemaphorePermit::forget`]).
    pub fn forget(mut self) {
        // Nothing to give back; the semaphore's `Arc` is still dropped.
        self.permits = 0;
    }

    /// How many permits this holds.
    pub fn num_permits(&self) -> usize {
        self.permits
    }

    /// The semaphore these permits came from.
    pub fn semaphore(&self) -> &Arc<Semaphore> {
        &self.semaphore
    }
}

impl Drop for OwnedSemaphorePermit {
    #[inline]
    fn drop(&mut self) {
        if self.permits != 0 {
            self.semaphore.release(self.permits);
        }
    }
}

impl fmt::Debug for OwnedSemaphorePermit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OwnedSemaphorePermit").field("permits", &self.permits).finish_non_exhaustive()
    }
}

impl Drop for SemaphorePermit<'_> {
    #[inline]
    fn drop(&mut self) {
        self.semaphore.release(self.permits);
    }
}

impl fmt::Debug for SemaphorePermit<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SemaphorePermit").field("permits", &self.permits).finish_non_exhaustive()
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
    /// Waits until `n` waiters are queued on `sem` (the parking lot's
    /// count: waiters spawned one after another then queue in that order,
    /// however slow the machine is).
    fn wait_until_queued(sem: &Semaphore, n: usize) {
        let start = Instant::now();
        while crate::park::lot::queued(sem.key()) < n {
            assert!(start.elapsed() < Duration::from_secs(10), "{n} waiters never queued");
            thread::sleep(Duration::from_millis(1));
        }
        assert!(sem.state.load(Ordering::Relaxed) & WAITING != 0, "queued waiters without the WAITING bit");
    }

    /// A permit freed while a waiter is queued goes to that waiter: a
    /// newcomer's try_acquire must not get it (no overtaking).
    #[test]
    fn release_hands_over_to_queued_waiter() {
        let sem = Arc::new(Semaphore::new(0));
        let s = Arc::clone(&sem);
        let waiter = thread::spawn(move || s.acquire().forget());
        wait_until_queued(&sem, 1);
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
            wait_until_queued(&sem, i + 1);
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
            .map(|i| {
                let s = Arc::clone(&sem);
                let handle = thread::spawn(move || s.acquire().forget());
                wait_until_queued(&sem, i + 1);
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

    /// A waiter for many at the head holds permits set aside; when it times
    /// out, they go to the waiter behind it, and the word and the queued
    /// count end exact.
    #[test]
    fn timed_out_head_leaves_exact_counts() {
        let sem = Arc::new(Semaphore::new(0));
        let s = Arc::clone(&sem);
        let head = thread::spawn(move || s.acquire_many_timeout(4, Duration::from_millis(300)).is_none());
        wait_until_queued(&sem, 1);
        let s = Arc::clone(&sem);
        let behind = thread::spawn(move || s.acquire_many(3).forget());
        wait_until_queued(&sem, 2);
        sem.add_permits(3);
        assert_eq!(sem.state.load(Ordering::Relaxed), 3 << 1 | WAITING, "3 set aside for the head");
        assert_eq!(sem.queued.load(Ordering::Relaxed), 2);
        assert_eq!(sem.available_permits(), 0);
        assert!(head.join().unwrap(), "the head got 4 of 3 permits");
        behind.join().unwrap();
        assert_eq!(sem.state.load(Ordering::Relaxed), 0);
        assert_eq!(sem.queued.load(Ordering::Relaxed), 0);
    }

    /// A waiter that would be the head finds enough permits set aside for a
    /// bigger waiter that set WAITING but has not queued: it takes them
    /// instead of parking with nobody to serve it.
    #[test]
    fn validate_takes_permits_set_aside_when_nobody_is_queued() {
        let sem = Semaphore::new(0);
        // As if a waiter for 5 had set WAITING over 2 free permits and not
        // queued yet.
        sem.state.store(2 << 1 | WAITING, Ordering::Relaxed);
        assert!(sem.acquire_many_timeout(2, Duration::from_secs(10)).map(SemaphorePermit::forget).is_some());
        assert_eq!(sem.state.load(Ordering::Relaxed), 0, "took the two and cleared WAITING");
        assert_eq!(sem.queued.load(Ordering::Relaxed), 0);
    }

    /// A timed-out waiter in the middle of the queue leaves it without
    /// disturbing the order of the others, and the bit stays set for them.
    #[test]
    fn timed_out_waiter_leaves_queue_intact() {
        let sem = Arc::new(Semaphore::new(0));
        let s = Arc::clone(&sem);
        let first = thread::spawn(move || s.acquire().forget());
        wait_until_queued(&sem, 1);
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

    /// Negative control: a release that banks its permit although a waiter
    /// is queued leaves that waiter parked, and loom must report the
    /// deadlock. std's `Arc`, not loom's: loom's would panic again when
    /// dropped while loom unwinds the deadlocked model.
    #[test]
    #[should_panic(expected = "deadlock")]
    fn negative_control_a_release_that_banks_past_a_waiter_strands_it() {
        let _broken = crate::loom::negative_control::break_until_dropped("semaphore");
        loom::model(|| {
            let sem = std::sync::Arc::new(Semaphore::new(1));
            let other = {
                let sem = std::sync::Arc::clone(&sem);
                thread::spawn(move || drop(sem.acquire()))
            };
            drop(sem.acquire());
            other.join().unwrap();
        });
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

    /// FIFO with many: a waiter for two permits and a timed waiter for one
    /// (which may give up at any moment), while permits come back one at a
    /// time. Every wait ends (a permit stranded in the word, set aside for
    /// a head that left, is a loom deadlock), and the count ends exact with
    /// WAITING clear and nobody counted as queued.
    #[test]
    fn many_and_timed_one() {
        loom::model(|| {
            let sem = Arc::new(Semaphore::new(0));
            let many = {
                let sem = sem.clone();
                thread::spawn(move || assert_eq!(sem.acquire_many(2).num_permits(), 2))
            };
            let timed = {
                let sem = sem.clone();
                thread::spawn(move || drop(sem.acquire_many_timeout(1, Duration::from_secs(3600))))
            };
            sem.add_permits(1);
            sem.add_permits(1);
            many.join().unwrap();
            timed.join().unwrap();
            assert_eq!(sem.state.load(Ordering::Relaxed), 2 << 1, "a permit was lost or WAITING left set");
            assert_eq!(sem.queued.load(Ordering::Relaxed), 0);
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
            assert_eq!(sem.queued.load(Ordering::Relaxed), 0);
        });
    }
}
