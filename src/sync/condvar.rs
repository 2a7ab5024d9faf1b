//! `Condvar`: a condition variable for weft's [`Mutex`](super::Mutex), usable from
//! coroutines and OS threads alike (a coroutine may wait while a thread
//! notifies, and the other way round).
//!
//! # Design
//!
//! The shape of parking_lot's condvar. The condvar is one word: the address
//! of the mutex its current waiters use, or null when nobody waits. Waiters
//! queue in the parking lot on the condvar's own address.
//!
//! ```text
//!  state            meaning
//!  ---------------  ------------------------------------------------------
//!  null             no waiter is queued on the condvar's key
//!  m (&RawMutex)    waiters are queued on the condvar's key, and every one
//!                   of them re-locks m when it wakes; m is alive, because
//!                   each queued waiter holds a guard that borrows it
//!
//!  transition       who                                  holding
//!  ---------------  -----------------------------------  -------------------
//!  null -> m        a waiter, in `park`'s validate       condvar bucket lock
//!  m -> null        notify_one, when it takes the last   condvar bucket lock
//!                   notify_all, which takes them all     both bucket locks
//!                   the last waiter, timing out          condvar bucket lock
//!  m -> m' != m     never: that waiter panics instead
//! ```
//!
//! Invariant: under the condvar's bucket lock, the state is non-null exactly
//! when waiters are queued on the condvar's key. Every access to the state
//! except the notify fast path's first look happens under that lock.
//!
//! # Wait
//!
//! 1. `park` on the condvar's key. Its validate step (bucket locked) claims
//!    the state for our mutex, or finds it already ours, or finds another
//!    mutex: then it declines to park and `wait` panics — still holding the
//!    lock, so unwinding the guard releases it.
//! 2. `before_sleep` unlocks the mutex. We are already queued, so a notifier
//!    that takes the mutex after this point finds us: **no lost wakeup**.
//! 3. Once woken, re-lock the mutex — unless `notify_all` moved us onto the
//!    mutex's queue and the mutex's unlock handed the lock straight to us
//!    (`TOKEN_HANDOFF`, its eventual-fairness path): then we already own it.
//!
//! # Notify
//!
//! Both say how many waiters they reached: `notify_one` whether its
//! `unpark_one` took a waiter off the queue, `notify_all` how many it woke
//! plus how many it moved onto the mutex (each of those returns from its
//! wait as notified, never as timed out).
//!
//! - `notify_one` wakes the oldest waiter; the one that takes the last waiter
//!   clears the state. (parking_lot requeues that one waiter onto a locked
//!   mutex instead; our parking lot has no "requeue one" operation, so the
//!   woken waiter may park once more, on the mutex.)
//! - `notify_all` avoids the thundering herd: it wakes at most one waiter and
//!   *requeues* the rest onto the mutex's key (`unpark_requeue`), setting the
//!   mutex's PARKED bit so that each later unlock wakes the next one. If the
//!   mutex is locked (typically by the notifier itself) it wakes nobody and
//!   requeues everyone: the first would only find the lock taken and park
//!   again. The waiters go through the mutex one at a time instead of all
//!   waking to fight over it.
//!
//! # Why Relaxed suffices
//!
//! The state is read and written under the condvar's bucket lock, whose
//! acquire and release order those accesses. The one exception is the notify
//! fast path's `state == null` test, which may skip the parking lot: a waiter
//! stores the state (step 1) before it unlocks the mutex (step 2, Release);
//! a notifier that changed the condition under the mutex locked it after
//! that (Acquire), so its load happens after the store and cannot see the
//! null before it. (Seeing null *later* means every waiter has already been
//! woken or has timed out.) A notifier that never takes the mutex gets no
//! such promise — as with every condition variable.
//!
//! # Timeouts and unwinding
//!
//! A waiter whose deadline passes while queued on the condvar takes itself
//! off the queue and, if it was the last, clears the state. One that
//! `notify_all` had already moved onto the mutex's queue was notified: it
//! reports no timeout. The mutex's PARKED bit may then stay set with nobody
//! queued, which costs the next unlock one trip through its slow path.
//!
//! From `before_sleep` until the re-lock the lock is not ours, so the guard
//! waits in a `ManuallyDrop`: if the park unwinds (a runtime unwinding a
//! coroutine it cancels), the guard does not unlock a mutex someone else
//! may hold.

use super::MutexGuard;
use super::mutex::{RawMutex, TOKEN_HANDOFF, TOKEN_WOKEN};
use crate::loom::{AtomicPtr, Ordering};
use crate::park::lot::{self, DEFAULT_TOKEN, ParkResult, RequeueOp};
use crate::sys::futex::Deadline;
use std::fmt;
use std::mem::ManuallyDrop;
use std::ptr;
use std::time::{Duration, Instant};

/// The token a notify hands the waiter it wakes: "re-lock the mutex".
const TOKEN_NOTIFIED: usize = DEFAULT_TOKEN;
const _: () = assert!(
    TOKEN_NOTIFIED != TOKEN_HANDOFF && TOKEN_NOTIFIED != TOKEN_WOKEN,
    "Condvar: a notify must not look like a mutex's wake"
);

/// The panic message for a condvar used with two mutexes at once.
const TWO_MUTEXES: &str = "a weft Condvar was used with two different Mutexes at the same time; \
                           every waiter of one Condvar must use the same Mutex";

/// A condition variable: waits for a condition guarded by a weft
/// [`Mutex`](super::Mutex), like [`std::sync::Condvar`].
///
/// A coroutine that waits parks (its worker runs other coroutines
/// meanwhile); an OS thread that waits blocks on a futex; both may wait on
/// the same condvar, and either may notify.
///
/// - No wakeup is lost: a notify issued after the waiter's `wait` released
///   the mutex (for example by a notifier that changed the condition under
///   the mutex) wakes it.
/// - Wakeups may be spurious, so wait in a loop or use
///   [`wait_while`](Self::wait_while).
/// - [`notify_all`](Self::notify_all) moves the waiters onto the mutex
///   instead of waking them all at once, so they take the lock in turn.
/// - Timeouts are measured on `CLOCK_MONOTONIC` and never end early.
///
/// # Panics
///
/// A condvar serves one mutex at a time: waiting with a second mutex while
/// waiters of the first are still queued panics (with the lock released).
///
/// # Examples
///
/// A coroutine announces that it started; the OS thread that spawned it
/// waits for the announcement.
///
/// ```
/// use std::sync::Arc;
/// use weft::sync::{Condvar, Mutex};
///
/// let pair = Arc::new((Mutex::new(false), Condvar::new()));
/// let pair2 = Arc::clone(&pair);
/// let handle = weft::spawn(move || {
///     let (started, condvar) = &*pair2;
///     *started.lock() = true;
///     condvar.notify_one();
/// });
///
/// let (started, condvar) = &*pair;
/// let mut guard = started.lock();
/// while !*guard {
///     guard = condvar.wait(guard);
/// }
/// drop(guard);
/// handle.join().unwrap();
/// ```
pub struct Condvar {
    /// The mutex the queued waiters use, or null; see the module docs.
    state: AtomicPtr<RawMutex>,
}

/// Whether a timed wait ended because its time ran out, as returned by
/// [`Condvar::wait_timeout`], [`Condvar::wait_until`] and their `_while`
/// forms.
///
/// ```
/// use std::time::Duration;
/// use weft::sync::{Condvar, Mutex, WaitTimeoutResult};
///
/// let (lock, condvar) = (Mutex::new(()), Condvar::new());
/// let (_guard, result): (_, WaitTimeoutResult) = condvar.wait_timeout(lock.lock(), Duration::ZERO);
/// assert!(result.timed_out());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WaitTimeoutResult(bool);

impl WaitTimeoutResult {
    /// `true` if the wait ended because the timeout passed (for the
    /// `_while` forms: and the condition still held).
    ///
    /// ```
    /// use std::time::Duration;
    /// use weft::sync::{Condvar, Mutex};
    ///
    /// let (flag, condvar) = (Mutex::new(true), Condvar::new());
    /// // The condition is already false: no wait, no timeout.
    /// let (_guard, result) = condvar.wait_timeout_while(flag.lock(), Duration::ZERO, |flag| !*flag);
    /// assert!(!result.timed_out());
    /// ```
    pub fn timed_out(&self) -> bool {
        self.0
    }
}

impl Condvar {
    /// A new condition variable with no waiters.
    ///
    /// ```
    /// use weft::sync::{Condvar, Mutex};
    ///
    /// static READY: (Mutex<bool>, Condvar) = (Mutex::new(false), Condvar::new());
    /// *READY.0.lock() = true;
    /// assert_eq!(READY.1.notify_all(), 0);
    /// ```
    #[cfg(not(loom))]
    pub const fn new() -> Condvar {
        Condvar { state: AtomicPtr::new(ptr::null_mut()) }
    }

    /// A new condition variable with no waiters.
    #[cfg(loom)]
    pub fn new() -> Condvar {
        Condvar { state: AtomicPtr::new(ptr::null_mut()) }
    }

    /// The parking-lot key of the condvar's own queue.
    fn key(&self) -> usize {
        &self.state as *const AtomicPtr<RawMutex> as usize
    }

    /// Releases the guard's lock, waits for a notification, re-locks, and
    /// returns the guard. May wake spuriously.
    ///
    /// ```
    /// use weft::sync::{Condvar, Mutex};
    ///
    /// let queue = Mutex::new(Vec::<u32>::new());
    /// let condvar = Condvar::new();
    /// std::thread::scope(|s| {
    ///     s.spawn(|| {
    ///         queue.lock().push(7);
    ///         condvar.notify_one();
    ///     });
    ///     let mut items = queue.lock();
    ///     while items.is_empty() {
    ///         items = condvar.wait(items);
    ///     }
    ///     assert_eq!(items.pop(), Some(7));
    /// });
    /// ```
    ///
    /// # Panics
    ///
    /// If other waiters of this condvar use a different mutex.
    pub fn wait<'a, T: ?Sized>(&self, guard: MutexGuard<'a, T>) -> MutexGuard<'a, T> {
        self.wait_deadline(guard, None).0
    }

    /// Waits until `condition` returns `false`, checking it under the lock
    /// before each wait and after each wakeup (so spurious wakeups are
    /// absorbed).
    ///
    /// ```
    /// use std::sync::Arc;
    /// use weft::sync::{Condvar, Mutex};
    ///
    /// let state = Arc::new((Mutex::new(0u32), Condvar::new()));
    /// let workers: Vec<_> = (0..4)
    ///     .map(|_| {
    ///         let state = Arc::clone(&state);
    ///         weft::spawn(move || {
    ///             let (finished, condvar) = &*state;
    ///             *finished.lock() += 1;
    ///             condvar.notify_all();
    ///         })
    ///     })
    ///     .collect();
    /// let (finished, condvar) = &*state;
    /// let guard = condvar.wait_while(finished.lock(), |n| *n < 4);
    /// assert_eq!(*guard, 4);
    /// drop(guard);
    /// for w in workers {
    ///     w.join().unwrap();
    /// }
    /// ```
    ///
    /// # Panics
    ///
    /// If other waiters of this condvar use a different mutex.
    pub fn wait_while<'a, T: ?Sized, F>(&self, mut guard: MutexGuard<'a, T>, mut condition: F) -> MutexGuard<'a, T>
    where
        F: FnMut(&mut T) -> bool,
    {
        while condition(&mut *guard) {
            guard = self.wait(guard);
        }
        guard
    }

    /// Like [`wait`](Self::wait), but gives up once `timeout` has passed
    /// (measured on `CLOCK_MONOTONIC`; it never returns early). The result
    /// says whether it timed out; either way the lock is held again.
    ///
    /// ```
    /// use std::time::{Duration, Instant};
    /// use weft::sync::{Condvar, Mutex};
    ///
    /// let lock = Mutex::new(());
    /// let condvar = Condvar::new();
    /// let start = Instant::now();
    /// let (_guard, result) = condvar.wait_timeout(lock.lock(), Duration::from_millis(20));
    /// assert!(result.timed_out());
    /// assert!(start.elapsed() >= Duration::from_millis(20));
    /// ```
    ///
    /// # Panics
    ///
    /// If other waiters of this condvar use a different mutex.
    pub fn wait_timeout<'a, T: ?Sized>(
        &self,
        guard: MutexGuard<'a, T>,
        timeout: Duration,
    ) -> (MutexGuard<'a, T>, WaitTimeoutResult) {
        let (guard, timed_out) = self.wait_deadline(guard, Some(Deadline::after(timeout)));
        (guard, WaitTimeoutResult(timed_out))
    }

    /// Like [`wait_while`](Self::wait_while), but gives up once `timeout`
    /// has passed. The result reports a timeout only if the condition still
    /// held when the time ran out.
    ///
    /// ```
    /// use std::time::Duration;
    /// use weft::sync::{Condvar, Mutex};
    ///
    /// let ready = Mutex::new(false);
    /// let condvar = Condvar::new();
    /// let (guard, result) = condvar.wait_timeout_while(ready.lock(), Duration::from_millis(5), |ready| !*ready);
    /// assert!(result.timed_out());
    /// assert!(!*guard);
    /// ```
    ///
    /// # Panics
    ///
    /// If other waiters of this condvar use a different mutex.
    pub fn wait_timeout_while<'a, T: ?Sized, F>(
        &self,
        guard: MutexGuard<'a, T>,
        timeout: Duration,
        condition: F,
    ) -> (MutexGuard<'a, T>, WaitTimeoutResult)
    where
        F: FnMut(&mut T) -> bool,
    {
        self.wait_while_deadline(guard, condition, Deadline::after(timeout))
    }

    /// Like [`wait_timeout`](Self::wait_timeout), with the time limit given
    /// as an instant: gives up once `deadline` has passed (never before).
    /// The result says whether it timed out; either way the lock is held
    /// again. May wake spuriously, before the deadline, like
    /// [`wait`](Self::wait).
    ///
    /// ```
    /// use std::time::{Duration, Instant};
    /// use weft::sync::{Condvar, Mutex};
    ///
    /// let lock = Mutex::new(0);
    /// let condvar = Condvar::new();
    /// let deadline = Instant::now() + Duration::from_millis(20);
    /// let mut guard = lock.lock();
    /// loop {
    ///     let (g, result) = condvar.wait_until(guard, deadline);
    ///     guard = g;
    ///     if result.timed_out() {
    ///         break;
    ///     }
    /// }
    /// assert!(Instant::now() >= deadline);
    /// assert_eq!(*guard, 0);
    /// ```
    ///
    /// # Panics
    ///
    /// If other waiters of this condvar use a different mutex.
    pub fn wait_until<'a, T: ?Sized>(
        &self,
        guard: MutexGuard<'a, T>,
        deadline: Instant,
    ) -> (MutexGuard<'a, T>, WaitTimeoutResult) {
        let (guard, timed_out) = self.wait_deadline(guard, Some(super::deadline_at(deadline)));
        (guard, WaitTimeoutResult(timed_out))
    }

    /// Like [`wait_while`](Self::wait_while), but gives up once `deadline`
    /// has passed (never before). The result reports a timeout only if the
    /// condition still held when the time ran out.
    ///
    /// ```
    /// use std::sync::Arc;
    /// use std::time::{Duration, Instant};
    /// use weft::sync::{Condvar, Mutex};
    ///
    /// let state = Arc::new((Mutex::new(None), Condvar::new()));
    /// let state2 = Arc::clone(&state);
    /// weft::spawn(move || {
    ///     let (answer, condvar) = &*state2;
    ///     *answer.lock() = Some(42);
    ///     condvar.notify_all();
    /// });
    /// let (answer, condvar) = &*state;
    /// let deadline = Instant::now() + Duration::from_secs(10);
    /// let (guard, result) = condvar.wait_while_until(answer.lock(), |a| a.is_none(), deadline);
    /// assert!(!result.timed_out());
    /// assert_eq!(*guard, Some(42));
    /// ```
    ///
    /// # Panics
    ///
    /// If other waiters of this condvar use a different mutex.
    pub fn wait_while_until<'a, T: ?Sized, F>(
        &self,
        guard: MutexGuard<'a, T>,
        condition: F,
        deadline: Instant,
    ) -> (MutexGuard<'a, T>, WaitTimeoutResult)
    where
        F: FnMut(&mut T) -> bool,
    {
        self.wait_while_deadline(guard, condition, super::deadline_at(deadline))
    }

    /// The loop of the timed `wait_*while*`: waits while `condition` holds,
    /// until `deadline`.
    fn wait_while_deadline<'a, T: ?Sized, F>(
        &self,
        mut guard: MutexGuard<'a, T>,
        mut condition: F,
        deadline: Deadline,
    ) -> (MutexGuard<'a, T>, WaitTimeoutResult)
    where
        F: FnMut(&mut T) -> bool,
    {
        loop {
            if !condition(&mut *guard) {
                return (guard, WaitTimeoutResult(false));
            }
            if lot::deadline_passed(deadline) {
                return (guard, WaitTimeoutResult(true));
            }
            let (next, timed_out) = self.wait_deadline(guard, Some(deadline));
            guard = next;
            // The park reports a timeout only once the deadline has passed
            // (under loom, where there is no clock, whenever it chose to).
            if timed_out {
                let still = condition(&mut *guard);
                return (guard, WaitTimeoutResult(still));
            }
        }
    }

    /// Wakes one waiter, if any waits, and returns whether it woke one.
    /// Holding the mutex while notifying is allowed but not required.
    ///
    /// ```
    /// use weft::sync::{Condvar, Mutex};
    ///
    /// // With nobody waiting, a notification is a single atomic load.
    /// let condvar = Condvar::new();
    /// assert!(!condvar.notify_one());
    ///
    /// let done = Mutex::new(false);
    /// std::thread::scope(|s| {
    ///     s.spawn(|| drop(condvar.wait_while(done.lock(), |done| !*done)));
    ///     // `true` once the waiter was queued and this notify reached it.
    ///     while !condvar.notify_one() {
    ///         std::thread::yield_now();
    ///     }
    ///     *done.lock() = true;
    ///     condvar.notify_one();
    /// });
    /// ```
    #[inline]
    pub fn notify_one(&self) -> bool {
        // Relaxed: see "Why Relaxed suffices" in the module docs.
        if self.state.load(Ordering::Relaxed).is_null() {
            return false;
        }
        self.notify_one_slow()
    }

    #[cold]
    fn notify_one_slow(&self) -> bool {
        let result = lot::unpark_one(self.key(), |result| {
            if !result.have_more {
                // The last waiter leaves (or all left before we looked).
                self.state.store(ptr::null_mut(), Ordering::Relaxed);
            }
            TOKEN_NOTIFIED
        });
        result.unparked > 0
    }

    /// Wakes every waiter and returns how many there were. They re-take the
    /// mutex one after another: all but (at most) one are moved onto the
    /// mutex's queue instead of being woken at once; the count includes
    /// them, since each of them returns from its wait as notified.
    ///
    /// ```
    /// use std::sync::Arc;
    /// use weft::sync::{Condvar, Mutex};
    ///
    /// let gate = Arc::new((Mutex::new(false), Condvar::new()));
    /// let waiters: Vec<_> = (0..8)
    ///     .map(|_| {
    ///         let gate = Arc::clone(&gate);
    ///         weft::spawn(move || {
    ///             let (open, condvar) = &*gate;
    ///             drop(condvar.wait_while(open.lock(), |open| !*open));
    ///         })
    ///     })
    ///     .collect();
    /// let (open, condvar) = &*gate;
    /// *open.lock() = true;
    /// let reached = condvar.notify_all(); // those already waiting
    /// assert!(reached <= 8);
    /// for w in waiters {
    ///     w.join().unwrap();
    /// }
    /// assert_eq!(condvar.notify_all(), 0, "nobody waits any more");
    /// ```
    #[inline]
    pub fn notify_all(&self) -> usize {
        // Relaxed: see "Why Relaxed suffices" in the module docs.
        let mutex = self.state.load(Ordering::Relaxed);
        if mutex.is_null() {
            return 0;
        }
        self.notify_all_slow(mutex)
    }

    #[cold]
    fn notify_all_slow(&self, mutex: *mut RawMutex) -> usize {
        let result = lot::unpark_requeue(
            self.key(),
            RawMutex::key_of(mutex),
            || {
                if self.state.load(Ordering::Relaxed) != mutex {
                    // Our waiters all left (and perhaps new ones came with
                    // another mutex, after our notify began): nothing is ours
                    // to wake.
                    return RequeueOp::Abort;
                }
                // Every waiter leaves the condvar's queue now.
                self.state.store(ptr::null_mut(), Ordering::Relaxed);
                // The state still names `mutex` under the condvar's bucket
                // lock, so waiters are queued (the module docs' invariant).
                // (A waiter that leaves without a wake, by timeout or by a
                // shutdown's unwind, goes through `timed_out`, which clears
                // the state when it was the last.)
                // SAFETY: each queued waiter's guard borrows the mutex: alive.
                let raw = unsafe { &*mutex };
                if raw.mark_parked_if_locked() { RequeueOp::RequeueAll } else { RequeueOp::UnparkOneRequeueRest }
            },
            |op, result| {
                if op == RequeueOp::UnparkOneRequeueRest && result.have_more {
                    // SAFETY: waiters were just moved onto the mutex's queue
                    // (both buckets are still locked) and each holds a guard
                    // borrowing the mutex: it is alive.
                    unsafe { &*mutex }.mark_parked();
                }
                TOKEN_NOTIFIED
            },
        );
        result.unparked + result.requeued
    }

    /// The wait protocol (module docs, "Wait"); returns the guard and
    /// whether the deadline passed without a notification. Inline, so the
    /// coroutine's switch sits in the caller's loop (see `weft::yield_now`).
    #[inline]
    fn wait_deadline<'a, T: ?Sized>(
        &self,
        guard: MutexGuard<'a, T>,
        deadline: Option<Deadline>,
    ) -> (MutexGuard<'a, T>, bool) {
        let raw: &RawMutex = MutexGuard::mutex(&guard).raw();
        debug_assert!(raw.is_locked(), "Condvar: waiting with a guard whose mutex is unlocked");
        let ours = raw as *const RawMutex as *mut RawMutex;
        let key = self.key();
        let mut other_mutex = false;
        let mut requeued = false;
        // From `before_sleep` until the re-lock the lock is not ours: an
        // unwind out of `park` must not unlock it (module docs).
        let guard = ManuallyDrop::new(guard);
        crate::park::waiting_on(crate::park::ParkedOn::Condvar(key));
        let result = lot::park_passing_on(
            key,
            || {
                let current = self.state.load(Ordering::Relaxed);
                if current.is_null() {
                    self.state.store(ours, Ordering::Relaxed);
                } else if current != ours {
                    other_mutex = true;
                    return false;
                }
                true
            },
            || {
                // SAFETY: the guard proves we hold the lock, and nothing
                // unlocks it again before the re-lock below: the guard sits
                // in `ManuallyDrop` until then.
                unsafe { raw.unlock() }
            },
            // `self.key()`, not `key`: each capture is a store on the way
            // into every park (the unwind guard keeps these closures).
            |node_key, was_last| {
                // On the mutex's key: notify_all moved us there, so we were
                // notified, and the condvar's state is not ours to touch.
                requeued = node_key != self.key();
                if !requeued && was_last {
                    self.state.store(ptr::null_mut(), Ordering::Relaxed);
                }
            },
            // Unwound by a shutdown after a wake, before running again: a
            // notify goes to another waiter; on the mutex's key (requeued),
            // the mutex's wake is passed on as a mutex waiter would.
            |node_key, token| {
                if node_key == self.key() {
                    self.notify_one();
                    // notify_all may have woken us alone and requeued the
                    // others onto the mutex (PARKED set), for the unlock
                    // after our re-lock to wake: re-lock and unlock for us.
                    raw.pass_on(TOKEN_NOTIFIED);
                } else {
                    raw.pass_on(token);
                }
            },
            deadline,
        );
        match result {
            // Notified (the common case first): re-lock.
            ParkResult::Unparked(TOKEN_NOTIFIED) => raw.lock(),
            ParkResult::Invalid => {
                debug_assert!(other_mutex, "Condvar: park declined for no reason");
                // We never parked and still hold the lock: the guard unlocks
                // it as the panic unwinds.
                let _guard = ManuallyDrop::into_inner(guard);
                panic!("{TWO_MUTEXES}");
            }
            // Requeued onto the mutex, whose unlock handed the lock to us.
            ParkResult::Unparked(TOKEN_HANDOFF) => {
                debug_assert!(raw.is_locked(), "Condvar: handed a mutex that is unlocked");
            }
            // Requeued onto the mutex and woken by its unlock: we own its
            // WOKEN bit.
            ParkResult::Unparked(TOKEN_WOKEN) => raw.lock_woken(),
            ParkResult::Unparked(_) | ParkResult::TimedOut => raw.lock(),
        }
        let timed_out = result == ParkResult::TimedOut && !requeued;
        (ManuallyDrop::into_inner(guard), timed_out)
    }
}

impl Default for Condvar {
    fn default() -> Condvar {
        Condvar::new()
    }
}

impl fmt::Debug for Condvar {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Condvar").finish_non_exhaustive()
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use crate::runtime::Runtime;
    use crate::sync::Mutex;
    use std::panic::{self, AssertUnwindSafe};
    use std::sync::Arc;
    use std::thread;
    use std::time::Instant;

    fn runtime() -> Runtime {
        Runtime::builder().workers(2).build().expect("a runtime")
    }

    /// Waits (spinning, with a generous bound) until `cv` has waiters.
    fn until_waiters(cv: &Condvar) {
        let start = Instant::now();
        while cv.state.load(Ordering::Relaxed).is_null() {
            assert!(start.elapsed() < Duration::from_secs(10), "no waiter arrived");
            thread::yield_now();
        }
    }

    type Shared = Arc<(Mutex<u32>, Condvar)>;

    fn shared() -> Shared {
        Arc::new((Mutex::new(0), Condvar::new()))
    }

    /// Waits until the counter reaches `target`.
    fn wait_for(s: &Shared, target: u32) {
        let (lock, cv) = &**s;
        drop(cv.wait_while(lock.lock(), |n| *n < target));
    }

    /// Adds one and wakes everybody.
    fn bump(s: &Shared) {
        let (lock, cv) = &**s;
        *lock.lock() += 1;
        cv.notify_all();
    }

    #[test]
    fn threads_wait_and_notify() {
        let s = shared();
        let waiters: Vec<_> = (0..4)
            .map(|_| {
                let s = Arc::clone(&s);
                thread::spawn(move || wait_for(&s, 1))
            })
            .collect();
        until_waiters(&s.1);
        bump(&s);
        for w in waiters {
            w.join().unwrap();
        }
        assert!(s.1.state.load(Ordering::Relaxed).is_null(), "state left set with no waiters");
    }

    #[test]
    fn coroutines_wait_and_notify() {
        let rt = runtime();
        let s = shared();
        let s2 = Arc::clone(&s);
        rt.block_on(move || {
            let waiters: Vec<_> = (0..50)
                .map(|_| {
                    let s = Arc::clone(&s2);
                    crate::spawn(move || wait_for(&s, 1))
                })
                .collect();
            let notifier = {
                let s = Arc::clone(&s2);
                crate::spawn(move || {
                    crate::sleep(Duration::from_millis(5));
                    bump(&s);
                })
            };
            for w in waiters {
                w.join().unwrap();
            }
            notifier.join().unwrap();
        });
        assert!(s.1.state.load(Ordering::Relaxed).is_null());
    }

    #[test]
    fn coroutine_waits_thread_notifies() {
        let rt = runtime();
        let s = shared();
        let waiter = {
            let s = Arc::clone(&s);
            rt.spawn(move || wait_for(&s, 1))
        };
        until_waiters(&s.1);
        bump(&s);
        waiter.join().unwrap();
    }

    #[test]
    fn thread_waits_coroutine_notifies() {
        let rt = runtime();
        let s = shared();
        let waiter = {
            let s = Arc::clone(&s);
            thread::spawn(move || wait_for(&s, 1))
        };
        until_waiters(&s.1);
        let s2 = Arc::clone(&s);
        rt.block_on(move || bump(&s2));
        waiter.join().unwrap();
    }

    /// Ping-pong between a coroutine and a thread, each waiting for the
    /// other's turn with notify_one: a lost wakeup hangs the test.
    #[test]
    fn ping_pong_mixed() {
        const ROUNDS: u32 = 2000;
        let rt = runtime();
        let s = shared();
        let coroutine = {
            let s = Arc::clone(&s);
            rt.spawn(move || {
                let (lock, cv) = &*s;
                for i in 0..ROUNDS {
                    let mut turn = cv.wait_while(lock.lock(), |n| *n != 2 * i);
                    *turn += 1;
                    cv.notify_one();
                }
            })
        };
        let (lock, cv) = &*s;
        for i in 0..ROUNDS {
            let mut turn = cv.wait_while(lock.lock(), |n| *n != 2 * i + 1);
            *turn += 1;
            cv.notify_one();
        }
        coroutine.join().unwrap();
        assert_eq!(*lock.lock(), 2 * ROUNDS);
    }

    /// Producers and consumers of both kinds on one queue: every item is
    /// consumed exactly once and nobody hangs.
    #[test]
    fn producer_consumer_stress() {
        const PER_PRODUCER: usize = 2000;
        let rt = Arc::new(runtime());
        let state = Arc::new((Mutex::new((Vec::<usize>::new(), 0usize)), Condvar::new()));
        let consumed = Arc::new(crate::loom::AtomicUsize::new(0));
        let producers = 4;
        let total = producers * PER_PRODUCER;
        let mut threads = Vec::new();
        let mut coroutines = Vec::new();
        for c in 0..4 {
            let state = Arc::clone(&state);
            let consumed = Arc::clone(&consumed);
            let consume = move || {
                let (lock, cv) = &*state;
                loop {
                    let mut guard = cv.wait_while(lock.lock(), |(queue, done)| queue.is_empty() && *done < producers);
                    match guard.0.pop() {
                        Some(item) => {
                            drop(guard);
                            consumed.fetch_add(item + 1, Ordering::Relaxed);
                        }
                        None => return,
                    }
                }
            };
            if c % 2 == 0 {
                threads.push(thread::spawn(consume));
            } else {
                coroutines.push(rt.spawn(consume));
            }
        }
        for p in 0..producers {
            let state = Arc::clone(&state);
            let produce = move || {
                let (lock, cv) = &*state;
                for i in 0..PER_PRODUCER {
                    lock.lock().0.push(i);
                    if i % 2 == 0 {
                        cv.notify_one();
                    } else {
                        cv.notify_all();
                    }
                }
                lock.lock().1 += 1;
                cv.notify_all();
            };
            if p % 2 == 0 {
                threads.push(thread::spawn(produce));
            } else {
                coroutines.push(rt.spawn(produce));
            }
        }
        for t in threads {
            t.join().unwrap();
        }
        for c in coroutines {
            c.join().unwrap();
        }
        let expected: usize = producers * (1..=PER_PRODUCER).sum::<usize>();
        assert_eq!(consumed.load(Ordering::Relaxed), expected, "{total} items not consumed exactly once");
    }

    /// `notify_all` while holding the mutex requeues everyone onto it; they
    /// all get through, one at a time.
    #[test]
    fn notify_all_while_holding_the_lock() {
        let rt = runtime();
        let s = shared();
        let mut threads = Vec::new();
        let mut coroutines = Vec::new();
        for _ in 0..4 {
            let s1 = Arc::clone(&s);
            threads.push(thread::spawn(move || wait_for(&s1, 1)));
            let s2 = Arc::clone(&s);
            coroutines.push(rt.spawn(move || wait_for(&s2, 1)));
        }
        until_waiters(&s.1);
        thread::sleep(Duration::from_millis(20)); // let more of them queue
        {
            let (lock, cv) = &*s;
            let mut guard = lock.lock();
            *guard = 1;
            cv.notify_all();
            thread::sleep(Duration::from_millis(5)); // they sit on the mutex now
        }
        for t in threads {
            t.join().unwrap();
        }
        for c in coroutines {
            c.join().unwrap();
        }
        assert!(s.1.state.load(Ordering::Relaxed).is_null());
    }

    #[test]
    fn notify_with_nobody_waiting_is_a_no_op() {
        let cv = Condvar::new();
        cv.notify_one();
        cv.notify_all();
        let lock = Mutex::new(());
        let (_guard, result) = cv.wait_timeout(lock.lock(), Duration::from_millis(1));
        assert!(result.timed_out());
        assert!(cv.state.load(Ordering::Relaxed).is_null(), "a timed-out last waiter must clear the state");
    }

    fn assert_not_early(timeout: Duration) {
        let lock = Mutex::new(());
        let cv = Condvar::new();
        let start = Instant::now();
        let (guard, result) = cv.wait_timeout(lock.lock(), timeout);
        let elapsed = start.elapsed();
        assert!(result.timed_out());
        assert!(elapsed >= timeout, "wait_timeout({timeout:?}) returned after {elapsed:?}");
        drop(guard);
        let start = Instant::now();
        let (_guard, result) = cv.wait_timeout_while(lock.lock(), timeout, |_| true);
        let elapsed = start.elapsed();
        assert!(result.timed_out());
        assert!(elapsed >= timeout, "wait_timeout_while({timeout:?}) returned after {elapsed:?}");
    }

    #[test]
    fn wait_timeout_never_returns_early_on_a_thread() {
        for micros in [0, 1, 50, 1000, 5000, 20_000] {
            assert_not_early(Duration::from_micros(micros));
        }
    }

    #[test]
    fn wait_timeout_never_returns_early_in_a_coroutine() {
        let rt = runtime();
        rt.block_on(|| {
            for micros in [0, 1, 50, 1000, 5000, 20_000] {
                assert_not_early(Duration::from_micros(micros));
            }
        });
    }

    /// Timed waiters of both kinds, some notified and some timing out, in a
    /// loop: the state ends cleared and nobody hangs.
    #[test]
    fn timeouts_racing_notifies() {
        let rt = runtime();
        let s = shared();
        let stop = Arc::new(crate::loom::AtomicBool::new(false));
        let timed = |s: Shared, stop: Arc<crate::loom::AtomicBool>| {
            move || {
                let (lock, cv) = &*s;
                let mut guard = lock.lock();
                for _ in 0..500 {
                    guard = cv.wait_timeout(guard, Duration::from_micros(50)).0;
                }
                drop(guard);
                stop.store(true, Ordering::Relaxed);
            }
        };
        let t = thread::spawn(timed(Arc::clone(&s), Arc::clone(&stop)));
        let c = rt.spawn(timed(Arc::clone(&s), Arc::clone(&stop)));
        let mut i = 0u32;
        while !stop.load(Ordering::Relaxed) {
            i += 1;
            if i % 2 == 0 {
                s.1.notify_one();
            } else {
                s.1.notify_all();
            }
            thread::yield_now();
        }
        t.join().unwrap();
        c.join().unwrap();
        // Whoever is still waiting finishes; then nobody is queued.
        assert!(s.1.state.load(Ordering::Relaxed).is_null(), "state left set with no waiters");
        assert!(!s.0.raw().is_locked());
    }

    #[test]
    fn two_mutexes_panic_with_a_message() {
        let s = shared();
        let waiter = {
            let s = Arc::clone(&s);
            thread::spawn(move || wait_for(&s, 1))
        };
        until_waiters(&s.1);
        let other = Mutex::new(0u32);
        let payload = panic::catch_unwind(AssertUnwindSafe(|| drop(s.1.wait(other.lock()))))
            .expect_err("waiting with a second mutex must panic");
        let message = payload.downcast_ref::<String>().map(String::as_str).unwrap_or("");
        assert!(message.starts_with("a weft Condvar was used with two different Mutexes"), "message: {message:?}");
        assert!(!other.raw().is_locked(), "the panicking waiter's lock must be released by unwinding");
        // The first waiter is unaffected.
        bump(&s);
        waiter.join().unwrap();
        // Once nobody waits, the condvar may serve another mutex.
        let (_guard, result) = s.1.wait_timeout(other.lock(), Duration::from_millis(1));
        assert!(result.timed_out());
    }

    #[test]
    fn debug_default_send_sync() {
        fn send_sync<T: Send + Sync>() {}
        send_sync::<Condvar>();
        send_sync::<WaitTimeoutResult>();
        let cv = Condvar::default();
        assert_eq!(format!("{cv:?}"), "Condvar { .. }");
        assert!(!WaitTimeoutResult(false).timed_out());
    }
}

#[cfg(all(test, loom))]
mod loom_models {
    //! The condvar's races under loom: a notify racing the wait's queue and
    //! unlock, notify_all's requeue onto the mutex, and a timeout racing a
    //! notify. Under loom a timed park may give up at any point, and a zero
    //! timeout makes the waiter take itself off the queue right after
    //! queuing, racing the notifier for the node.
    use super::*;
    use crate::loom::thread;
    use crate::sync::Mutex;
    use loom::sync::Arc;

    type Shared = Arc<(Mutex<u32>, Condvar)>;

    fn shared() -> Shared {
        Arc::new((Mutex::new(0), Condvar::new()))
    }

    /// A thread that waits until the counter is not 0.
    fn spawn_waiter(s: &Shared) -> thread::JoinHandle<()> {
        let s = s.clone();
        thread::spawn(move || {
            let (lock, cv) = &*s;
            drop(cv.wait_while(lock.lock(), |n| *n == 0));
        })
    }

    /// Nobody is left queued: the state is null and the mutex free.
    fn assert_quiescent(s: &Shared) {
        assert!(s.1.state.load(Ordering::Relaxed).is_null(), "Condvar state left set with no waiters");
        assert!(!s.0.raw().is_locked(), "mutex left locked");
    }

    /// A flag set under the mutex, then notify_one: the waiter always sees
    /// it (a lost wakeup is a loom deadlock).
    #[test]
    fn flag_and_notify_one() {
        loom::model(|| {
            let s = shared();
            let notifier = {
                let s = s.clone();
                thread::spawn(move || {
                    *s.0.lock() = 1;
                    s.1.notify_one();
                })
            };
            {
                let (lock, cv) = &*s;
                let mut flag = lock.lock();
                while *flag == 0 {
                    flag = cv.wait(flag);
                }
            }
            notifier.join().unwrap();
            assert_quiescent(&s);
        });
    }

    /// Two waiters, one notify_all (which requeues onto the mutex, or wakes
    /// one and requeues the other): both get through.
    #[test]
    fn notify_all_two_waiters() {
        loom::model(|| {
            let s = shared();
            let waiters: Vec<_> = (0..2).map(|_| spawn_waiter(&s)).collect();
            {
                let (lock, cv) = &*s;
                *lock.lock() = 1;
                cv.notify_all();
            }
            for w in waiters {
                w.join().unwrap();
            }
            assert_quiescent(&s);
        });
    }

    /// notify_all racing a barger: the notifier's unlock, the barger's
    /// `lock` (a `fetch_or` that may hit the held lock and write the word)
    /// and its unlock race the waiter's wait and `notify_all`'s
    /// `mark_parked_if_locked`. The waiter always gets in, no increment is
    /// lost, and nothing is left queued or flagged.
    #[test]
    fn notify_all_races_a_barger() {
        loom::model(|| {
            let s = shared();
            let waiter = spawn_waiter(&s);
            let barger = {
                let s = s.clone();
                thread::spawn(move || {
                    *s.0.lock() += 2;
                })
            };
            {
                let (lock, cv) = &*s;
                *lock.lock() += 1;
                cv.notify_all();
            }
            waiter.join().unwrap();
            barger.join().unwrap();
            assert_eq!(*s.0.lock(), 3);
            assert_quiescent(&s);
        });
    }

    /// notify_all while the notifier holds the mutex: the waiter is moved
    /// onto the mutex and woken by the unlock.
    #[test]
    fn notify_all_under_the_lock_requeues() {
        loom::model(|| {
            let s = shared();
            let waiter = spawn_waiter(&s);
            {
                let (lock, cv) = &*s;
                let mut guard = lock.lock();
                *guard = 1;
                cv.notify_all();
            }
            waiter.join().unwrap();
            assert_quiescent(&s);
        });
    }

    /// A timed wait racing notify_one: the waiter ends either notified or
    /// timed out, holding the lock; the state is cleared either way; and a
    /// result of "not timed out" means a notify really took it.
    #[test]
    fn timed_wait_races_notify_one() {
        loom::model(|| {
            let s = shared();
            let notifier = {
                let s = s.clone();
                thread::spawn(move || {
                    *s.0.lock() = 1;
                    s.1.notify_one();
                })
            };
            {
                let (lock, cv) = &*s;
                let guard = lock.lock();
                if *guard == 0 {
                    let (guard, result) = cv.wait_timeout(guard, Duration::ZERO);
                    if !result.timed_out() {
                        assert_eq!(*guard, 1, "notified before the flag was set");
                    }
                }
            }
            notifier.join().unwrap();
            assert_quiescent(&s);
        });
    }

    /// A timed wait racing a notify_one that nothing orders against it (no
    /// flag, no mutex): when the notify comes first and finds nobody, the
    /// waiter times out as the last one and must clear the state itself.
    #[test]
    fn timed_wait_races_a_bare_notify() {
        loom::model(|| {
            let s = shared();
            let notifier = {
                let s = s.clone();
                thread::spawn(move || s.1.notify_one())
            };
            {
                let (lock, cv) = &*s;
                drop(cv.wait_timeout(lock.lock(), Duration::ZERO));
            }
            notifier.join().unwrap();
            assert_quiescent(&s);
        });
    }

    /// A timed wait racing notify_all under the lock: if the waiter was
    /// moved onto the mutex before its time ran out, it reports "notified"
    /// and still comes back holding the lock.
    #[test]
    fn timed_wait_races_requeue() {
        loom::model(|| {
            let s = shared();
            let notifier = {
                let s = s.clone();
                thread::spawn(move || {
                    let (lock, cv) = &*s;
                    let mut guard = lock.lock();
                    *guard += 1;
                    cv.notify_all();
                })
            };
            {
                let (lock, cv) = &*s;
                let mut guard = lock.lock();
                if *guard == 0 {
                    let (g, result) = cv.wait_timeout(guard, Duration::ZERO);
                    guard = g;
                    if !result.timed_out() {
                        assert_eq!(*guard, 1);
                    }
                }
                *guard += 10;
            }
            notifier.join().unwrap();
            assert_eq!(*s.0.lock(), 11, "an update was lost: the lock was not held");
            assert_quiescent(&s);
        });
    }

    /// The wait with its two steps in the wrong order: the mutex is unlocked
    /// *before* the waiter is queued, so a notify in between finds nobody.
    fn broken_wait<'a>(cv: &Condvar, guard: MutexGuard<'a, u32>) -> MutexGuard<'a, u32> {
        let raw = MutexGuard::mutex(&guard).raw();
        let ours = raw as *const RawMutex as *mut RawMutex;
        let guard = ManuallyDrop::new(guard);
        // SAFETY: the guard proves we hold the lock; it sits in
        // ManuallyDrop until we re-lock below.
        unsafe { raw.unlock() };
        let _ = lot::park(
            cv.key(),
            || {
                cv.state.store(ours, Ordering::Relaxed);
                true
            },
            || {},
            |_, _| {},
            None,
        );
        raw.lock();
        ManuallyDrop::into_inner(guard)
    }

    /// Negative control: `flag_and_notify_one` with `broken_wait` must fail
    /// (a lost wakeup leaves the waiter parked forever: loom's deadlock).
    #[test]
    #[should_panic(expected = "deadlock")]
    fn negative_control_unlock_before_queue_loses_a_wakeup() {
        loom::model(|| {
            // std's Arc: loom's may panic when dropped while loom unwinds the
            // deadlocked model, which aborts the test binary.
            let s = std::sync::Arc::new((Mutex::new(0), Condvar::new()));
            let notifier = {
                let s = s.clone();
                thread::spawn(move || {
                    *s.0.lock() = 1;
                    s.1.notify_one();
                })
            };
            {
                let (lock, cv) = &*s;
                let mut flag = lock.lock();
                while *flag == 0 {
                    flag = broken_wait(cv, flag);
                }
            }
            notifier.join().unwrap();
        });
    }
}
