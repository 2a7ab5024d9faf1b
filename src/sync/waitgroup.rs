//! `WaitGroup`: wait until a group of handles is gone (crossbeam's
//! `WaitGroup` semantics) — for coroutines and OS threads alike.
//!
//! # State word
//!
//! The handles share one counter word, beside the `Arc` that keeps it alive:
//!
//! ```text
//!  bits      field     meaning
//!  -------   -------   ---------------------------------------------------
//!  1..       count     live `WaitGroup` handles
//!  0         PARKED    someone may be parked waiting for count == 0
//!
//!  transition                      who
//!  ------------------------------  --------------------------------------------
//!  count += 1                      `clone`
//!  count -= 1                      `drop` / `done` / `wait` (its own handle);
//!                                  the one that reaches 0 with PARKED set
//!                                  wakes every waiter
//!  PARKED := 1                     a waiter, before it parks
//!  PARKED := 0                     a timed-out waiter that leaves the queue
//!                                  last (under the bucket lock)
//!  count == 0                      final: no handle is left to clone
//! ```
//!
//! A waiter sets PARKED, then parks on the word's address validating (under
//! the bucket lock) that the count is not yet zero and PARKED is still set.
//! The last handle's decrement and the PARKED bit live in one word, so the
//! decrement either sees PARKED (and then locks the bucket to wake: a waiter
//! validated before, and is queued, or validates after and sees zero) or
//! comes before the waiter's CAS that sets PARKED (which then fails on the
//! changed word, and the waiter sees zero).
//!
//! PARKED is cleared only by a waiter whose deadline passed and that leaves
//! the queue as its last waiter, under the bucket lock, so a timed-out
//! waiter leaves the word as if it had never waited. Another waiter that
//! set the bit but has not validated yet then finds it clear and sets it
//! again (that is why validation checks it). Untimed waiters never clear
//! it: after zero it costs nothing, and before zero a stale bit (a waiter
//! woken, or unwound by its runtime) costs one empty `unpark_all`.
//!
//! Orderings: each decrement is Release, and every later change of the word
//! is a read-modify-write, so the waiter's Acquire load that sees zero
//! synchronises with every handle's decrement: all the work done under every
//! handle is visible after `wait`. A clone is Relaxed, as `Arc::clone`: the
//! new handle comes from a live one, so the count cannot reach zero meanwhile.

use crate::loom::{AtomicUsize, Ordering, negative_control};
use crate::park::lot::{self, DEFAULT_TOKEN, ParkResult};
use crate::sys::futex::Deadline;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

/// Somebody may be parked waiting for the count to reach zero.
const PARKED: usize = 0b1;
/// One handle, in state-word units.
const ONE: usize = 0b10;
/// More handles than this means a leak of `mem::forget`ed clones, long
/// before the count could wrap.
const MAX_STATE: usize = usize::MAX / 2;

fn count(state: usize) -> usize {
    state / ONE
}

/// Waits for a group of tasks to finish: each task holds a clone, and
/// [`wait`](WaitGroup::wait) returns once every other clone has been dropped
/// (or passed to [`done`](WaitGroup::done)). Like crossbeam's `WaitGroup`, and
/// usable from coroutines and OS threads alike.
///
/// ```
/// use weft::sync::WaitGroup;
///
/// let wg = WaitGroup::new();
/// for i in 0..10 {
///     let wg = wg.clone();
///     weft::spawn(move || {
///         let _ = i * i; // work
///         drop(wg);
///     });
/// }
/// // Returns once all ten clones are gone.
/// wg.wait();
/// ```
pub struct WaitGroup {
    inner: Arc<Inner>,
}

struct Inner {
    /// Handle count and PARKED; see the module docs.
    state: AtomicUsize,
}

impl Inner {
    fn key(&self) -> usize {
        &self.state as *const AtomicUsize as usize
    }

    /// Parks until the count reaches zero (`true`), or until `deadline`
    /// (`false`).
    fn wait_for_zero(&self, deadline: Option<Deadline>) -> bool {
        // Acquire (here and below): pairs with the handles' Release
        // decrements, so their work is visible once we see zero.
        let mut state = self.state.load(Ordering::Acquire);
        loop {
            if count(state) == 0 {
                return true;
            }
            // Nothing of ours is in the word here (a PARKED we set before an
            // earlier park is the queue's): giving up leaves no trace.
            if deadline.is_some_and(lot::deadline_passed) {
                return false;
            }
            if state & PARKED == 0 {
                // Relaxed: the word's modification order is what matters (see
                // the module docs), not the ordering of other memory.
                if let Err(actual) =
                    self.state.compare_exchange_weak(state, state | PARKED, Ordering::Relaxed, Ordering::Acquire)
                {
                    state = actual;
                    continue;
                }
            }
            let result = self.park_until_zero(deadline);
            state = self.state.load(Ordering::Acquire);
            // Only once the deadline passed (the parking lot checks); the
            // last handle may have gone meanwhile.
            if result == ParkResult::TimedOut {
                return count(state) == 0;
            }
        }
    }

    #[cold]
    fn park_until_zero(&self, deadline: Option<Deadline>) -> ParkResult {
        crate::park::waiting_on(crate::park::ParkedOn::WaitGroup(self.key()));
        lot::park(
            self.key(),
            || {
                let state = self.state.load(Ordering::Relaxed);
                count(state) != 0 && state & PARKED != 0
            },
            || {},
            // Timed out (or unwound by a runtime) as the last waiter: nobody
            // is left for the last handle to wake. Relaxed: an RMW, so the
            // handles' release sequence goes on through it.
            |_, was_last| {
                if was_last {
                    self.state.fetch_and(!PARKED, Ordering::Relaxed);
                }
            },
            deadline,
        )
    }

    #[cold]
    fn wake_waiters(&self) {
        lot::unpark_all(self.key(), DEFAULT_TOKEN);
    }
}

impl WaitGroup {
    /// A new group with one handle (this one).
    ///
    /// ```
    /// use weft::sync::WaitGroup;
    ///
    /// let wg = WaitGroup::new();
    /// wg.wait(); // no other handle: returns at once
    /// ```
    pub fn new() -> WaitGroup {
        WaitGroup { inner: Arc::new(Inner { state: AtomicUsize::new(ONE) }) }
    }

    /// Drops this handle and waits until every other handle is gone too.
    /// Several handles may wait at once; they all return when the last
    /// handle goes. What the other handles' holders did before dropping
    /// them is visible after `wait` returns.
    ///
    /// ```
    /// use std::sync::Arc;
    /// use std::sync::atomic::{AtomicUsize, Ordering};
    /// use weft::sync::WaitGroup;
    ///
    /// let wg = WaitGroup::new();
    /// let total = Arc::new(AtomicUsize::new(0));
    /// for _ in 0..4 {
    ///     let (wg, total) = (wg.clone(), Arc::clone(&total));
    ///     std::thread::spawn(move || {
    ///         total.fetch_add(1, Ordering::Relaxed);
    ///         wg.done();
    ///     });
    /// }
    /// wg.wait();
    /// assert_eq!(total.load(Ordering::Relaxed), 4);
    /// ```
    pub fn wait(self) {
        let inner = Arc::clone(&self.inner);
        drop(self);
        let zero = inner.wait_for_zero(None);
        debug_assert!(zero, "WaitGroup: an untimed wait gave up");
    }

    /// Drops this handle and waits at most `timeout` for every other handle
    /// to go: `true` if they all did, `false` if some were still alive when
    /// the time ran out (measured on `CLOCK_MONOTONIC`, never early). Either
    /// way this handle is gone, as with [`wait`](Self::wait); to wait again,
    /// keep a clone and call `wait_timeout` on that.
    ///
    /// ```
    /// use std::time::{Duration, Instant};
    /// use weft::sync::WaitGroup;
    ///
    /// let wg = WaitGroup::new();
    /// let worker = wg.clone();
    /// let start = Instant::now();
    /// // `worker` is still alive: times out.
    /// assert!(!wg.clone().wait_timeout(Duration::from_millis(10)));
    /// assert!(start.elapsed() >= Duration::from_millis(10));
    ///
    /// weft::spawn(move || drop(worker));
    /// assert!(wg.wait_timeout(Duration::from_secs(60)));
    /// ```
    pub fn wait_timeout(self, timeout: Duration) -> bool {
        let deadline = Deadline::after(timeout);
        let inner = Arc::clone(&self.inner);
        drop(self);
        inner.wait_for_zero(Some(deadline))
    }

    /// Drops this handle: the same as `drop(wg)`, spelled for readers.
    ///
    /// ```
    /// use weft::sync::WaitGroup;
    ///
    /// let wg = WaitGroup::new();
    /// let task = wg.clone();
    /// std::thread::spawn(move || task.done());
    /// wg.wait();
    /// ```
    pub fn done(self) {
        drop(self);
    }
}

impl Clone for WaitGroup {
    /// Another handle: `wait` now also waits for this one.
    ///
    /// ```
    /// use weft::sync::WaitGroup;
    ///
    /// let wg = WaitGroup::new();
    /// let other = wg.clone();
    /// assert!(!wg.clone().wait_timeout(std::time::Duration::ZERO), "`other` is alive");
    /// drop(other);
    /// wg.wait();
    /// ```
    fn clone(&self) -> WaitGroup {
        // Relaxed: see the module docs.
        let previous = self.inner.state.fetch_add(ONE, Ordering::Relaxed);
        if previous > MAX_STATE {
            // Too many to count (leaked clones): an overflow would let
            // `wait` return while handles live. As `Arc` does, abort.
            eprintln!("weft::sync::WaitGroup: handle count overflow (leaked clones?)");
            std::process::abort();
        }
        WaitGroup { inner: Arc::clone(&self.inner) }
    }
}

impl Drop for WaitGroup {
    fn drop(&mut self) {
        // Release: publishes this handle's work to the waiter that sees zero.
        let previous = self.inner.state.fetch_sub(ONE, Ordering::Release);
        debug_assert!(count(previous) > 0, "WaitGroup: dropped a handle of an empty group");
        // (The loom negative control skips the wake: the waiter sleeps on.)
        if count(previous) == 1 && previous & PARKED != 0 && !negative_control::broken("waitgroup") {
            // We still hold our Arc, so the key's memory lives until we
            // have woken everyone.
            self.inner.wake_waiters();
        }
    }
}

impl Default for WaitGroup {
    fn default() -> WaitGroup {
        WaitGroup::new()
    }
}

impl fmt::Debug for WaitGroup {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let count = count(self.inner.state.load(Ordering::Relaxed));
        f.debug_struct("WaitGroup").field("count", &count).finish()
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use crate::runtime::Runtime;
    use std::thread;
    use std::time::Duration;

    #[test]
    fn hundred_clones_mixed() {
        let rt = Runtime::builder().workers(2).build().unwrap();
        let wg = WaitGroup::new();
        let done = Arc::new(AtomicUsize::new(0));
        for i in 0..100 {
            let (wg, done) = (wg.clone(), Arc::clone(&done));
            let work = move || {
                if i % 10 == 0 {
                    crate::sleep(Duration::from_millis(2));
                }
                done.fetch_add(1, Ordering::Relaxed);
                wg.done();
            };
            if i % 4 == 0 {
                thread::spawn(work);
            } else {
                rt.spawn(work);
            }
        }
        wg.wait();
        assert_eq!(done.load(Ordering::Relaxed), 100);
    }

    #[test]
    fn wait_in_a_coroutine() {
        let rt = Runtime::builder().workers(2).build().unwrap();
        let done = Arc::new(AtomicUsize::new(0));
        let done2 = Arc::clone(&done);
        rt.block_on(move || {
            let wg = WaitGroup::new();
            for _ in 0..100 {
                let (wg, done) = (wg.clone(), Arc::clone(&done2));
                crate::spawn(move || {
                    crate::yield_now();
                    done.fetch_add(1, Ordering::Relaxed);
                    drop(wg);
                });
            }
            wg.wait();
            assert_eq!(done2.load(Ordering::Relaxed), 100);
        });
        assert_eq!(done.load(Ordering::Relaxed), 100);
    }

    /// Several handles wait at once; all return when the last goes.
    #[test]
    fn several_waiters() {
        let wg = WaitGroup::new();
        let waiters: Vec<_> = (0..4)
            .map(|_| {
                let wg = wg.clone();
                thread::spawn(move || wg.wait())
            })
            .collect();
        thread::sleep(Duration::from_millis(10));
        assert!(!waiters.iter().any(thread::JoinHandle::is_finished), "a waiter returned while handles live");
        wg.wait();
        for w in waiters {
            w.join().unwrap();
        }
    }

    #[test]
    fn alone_returns_at_once() {
        WaitGroup::new().wait();
        WaitGroup::default().done();
    }

    #[test]
    fn debug_shows_the_count_and_send_sync() {
        fn send_sync<T: Send + Sync>() {}
        send_sync::<WaitGroup>();
        let wg = WaitGroup::new();
        let other = wg.clone();
        assert_eq!(format!("{wg:?}"), "WaitGroup { count: 2 }");
        drop(other);
        assert_eq!(format!("{wg:?}"), "WaitGroup { count: 1 }");
    }
}

#[cfg(all(test, loom))]
mod loom_models {
    //! The last drop racing the waiter's PARKED + park.
    use super::*;
    use crate::loom::thread;

    #[test]
    fn wait_for_two_handles() {
        loom::model(|| {
            let wg = WaitGroup::new();
            let data = loom::sync::Arc::new(AtomicUsize::new(0));
            let workers: Vec<_> = (0..2)
                .map(|_| {
                    let (wg, data) = (wg.clone(), data.clone());
                    thread::spawn(move || {
                        data.fetch_add(1, Ordering::Relaxed);
                        drop(wg);
                    })
                })
                .collect();
            wg.wait();
            // Both workers' increments happen-before the wait's return.
            assert_eq!(data.load(Ordering::Relaxed), 2);
            for w in workers {
                w.join().unwrap();
            }
        });
    }

    /// Negative control: a last drop that does not wake the parked waiter
    /// strands it, and loom must report the deadlock.
    #[test]
    #[should_panic(expected = "deadlock")]
    fn negative_control_a_last_drop_that_skips_the_wake_strands_the_waiter() {
        let _broken = crate::loom::negative_control::break_until_dropped("waitgroup");
        loom::model(|| {
            let wg = WaitGroup::new();
            let worker = {
                let wg = wg.clone();
                thread::spawn(move || drop(wg))
            };
            wg.wait();
            worker.join().unwrap();
        });
    }

    /// A timed wait racing the last drop; the park may time out at any
    /// moment. If it reports success the worker's write is visible; if it
    /// times out it leaves PARKED clear, so the word ends exactly empty.
    #[test]
    fn timed_wait_races_last_drop() {
        loom::model(|| {
            let wg = WaitGroup::new();
            let inner = wg.inner.clone();
            let data = loom::sync::Arc::new(AtomicUsize::new(0));
            let worker = {
                let (wg, data) = (wg.clone(), data.clone());
                thread::spawn(move || {
                    data.store(1, Ordering::Relaxed);
                    drop(wg);
                })
            };
            let zero = wg.wait_timeout(std::time::Duration::from_secs(3600));
            if zero {
                assert_eq!(data.load(Ordering::Relaxed), 1);
            }
            worker.join().unwrap();
            let state = inner.state.load(Ordering::Relaxed);
            assert_eq!(count(state), 0);
            if !zero {
                assert_eq!(state & PARKED, 0, "a timed-out waiter left PARKED set");
            }
        });
    }
}
