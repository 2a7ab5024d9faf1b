//! The parking layer: "this waiter sleeps until someone wakes it", for a
//! waiter that is a coroutine or a plain OS thread.
//!
//! # The token protocol
//!
//! Every waiter has a [`ParkState`], a word with three states, the same
//! protocol as std's futex thread parker:
//!
//! ```text
//!  state      meaning
//!  --------   ----------------------------------------------------------
//!  EMPTY      no wake pending; the waiter is running
//!  NOTIFIED   a wake arrived while the waiter was not parked (a token)
//!  PARKED     the waiter is suspended and needs someone to reschedule it
//!
//!  transition                     who                          then
//!  -----------------------------  ---------------------------  ----------------------
//!  NOTIFIED -> EMPTY              waiter (try_consume)          returns without parking
//!  EMPTY    -> PARKED  (CAS)      waiter (prepare_park)         suspends
//!  any      -> NOTIFIED (swap)    waker  (unpark)               if it was PARKED, the
//!                                                               waker reschedules it:
//!                                                               exactly one waker sees
//!                                                               PARKED, so it is
//!                                                               rescheduled exactly once
//!  NOTIFIED -> EMPTY              waiter, once resumed          (after_wake)
//! ```
//!
//! A wake that races a park is never lost: if it lands before the waiter's
//! CAS, the CAS fails and the waiter does not suspend; if it lands after, the
//! waker sees PARKED and reschedules. Wakes coalesce: several wakes before a
//! park leave one token, like `std::thread::unpark`. A waiter may wake
//! spuriously (a stale token), so callers re-check their condition in a loop.
//!
//! Rescheduling a coroutine means pushing it to its home worker's inbox (or
//! its local queue, when the waker runs on that worker); a coroutine that is
//! PARKED cannot be resumed before it has switched out, because only its home
//! worker resumes it and that worker is busy running it until it does.
//!
//! The state machine is written against `crate::loom`, so the loom models in
//! this module check it under every interleaving.

pub(crate) mod lot;
pub(crate) mod thread;

use crate::loom::{AtomicU32, Ordering};
use crate::runtime;
use crate::sys::futex::Deadline;
use std::sync::Arc;

/// Who to wake: a coroutine (through its runtime) or an OS thread (through
/// its futex parker).
pub(crate) enum Unparker {
    Task(runtime::TaskRef),
    Thread(Arc<thread::ThreadParker>),
}

impl Unparker {
    /// The waiter the caller is: the running coroutine, or this OS thread.
    ///
    /// A coroutine that its runtime is unwinding at shutdown (a destructor
    /// waits on a lock) waits like an OS thread, blocking its worker thread:
    /// it cannot suspend any more, and its worker has nothing else to run.
    pub(crate) fn current() -> Unparker {
        match runtime::current_task() {
            Some(task) if !task.unwinding.get() => Unparker::Task(task),
            _ => Unparker::Thread(thread::current()),
        }
    }

    /// Another handle on the same waiter.
    pub(crate) fn clone_handle(&self) -> Unparker {
        match self {
            Unparker::Task(task) => Unparker::Task(task.clone()),
            Unparker::Thread(parker) => Unparker::Thread(Arc::clone(parker)),
        }
    }

    /// Before a timed park: a coroutine registers a timer with its worker
    /// (a thread passes the deadline to its futex wait instead).
    pub(crate) fn prepare_deadline(&self, deadline: Option<Deadline>) {
        if let (Unparker::Task(task), Some(deadline)) = (self, deadline) {
            runtime::wake_at(deadline, task.clone());
        }
    }

    /// Sleeps until woken (or, for a thread, until `deadline`); may return
    /// spuriously. Returns `false` when a thread's parker gave up because the
    /// deadline passed (a coroutine's timeouts are judged by the clock, its
    /// timer being just another wake). Only the waiter itself calls this.
    pub(crate) fn park(&self, deadline: Option<Deadline>) -> bool {
        match self {
            Unparker::Task(_) => {
                runtime::park_current_task();
                true
            }
            Unparker::Thread(parker) => parker.park(deadline),
        }
    }

    /// Wakes the waiter (or leaves it a token).
    pub(crate) fn unpark(self) {
        match self {
            Unparker::Task(task) => runtime::unpark(task),
            Unparker::Thread(parker) => parker.unpark(),
        }
    }
}

const EMPTY: u32 = 0;
const NOTIFIED: u32 = 1;
const PARKED: u32 = 2;

/// The wake token of one waiter; see the module docs.
#[derive(Debug)]
pub(crate) struct ParkState {
    state: AtomicU32,
}

impl ParkState {
    pub(crate) fn new() -> ParkState {
        ParkState { state: AtomicU32::new(EMPTY) }
    }

    /// Takes a pending token, if any (the waiter then does not park).
    #[inline]
    pub(crate) fn try_consume(&self) -> bool {
        // Acquire: pairs with the Release half of `unpark`'s swap, so what
        // the waker wrote before waking is visible after we return.
        self.state.compare_exchange(NOTIFIED, EMPTY, Ordering::Acquire, Ordering::Relaxed).is_ok()
    }

    /// Announces that the waiter is about to suspend. `false` means a token
    /// arrived first: it has been consumed and the waiter must not suspend.
    #[inline]
    pub(crate) fn prepare_park(&self) -> bool {
        // Release: a waker that sees PARKED (Acquire in its swap) also sees
        // everything the waiter did before parking. Acquire on failure pairs
        // with the waker's Release, as in try_consume.
        match self.state.compare_exchange(EMPTY, PARKED, Ordering::Release, Ordering::Acquire) {
            Ok(_) => true,
            Err(found) => {
                debug_assert_eq!(found, NOTIFIED, "ParkState: a waiter parked twice");
                self.state.store(EMPTY, Ordering::Relaxed);
                false
            }
        }
    }

    /// Called by the waiter when it runs again after suspending: consumes the
    /// token that woke it.
    #[inline]
    pub(crate) fn after_wake(&self) {
        // Acquire: pairs with the waker's Release swap.
        let previous = self.state.swap(EMPTY, Ordering::Acquire);
        debug_assert_eq!(previous, NOTIFIED, "ParkState: a parked waiter ran without being woken");
    }

    /// Leaves a token. Returns `true` exactly when the waiter was PARKED:
    /// the caller must then reschedule it (and no one else will).
    #[inline]
    pub(crate) fn unpark(&self) -> bool {
        // AcqRel: Release publishes the waker's writes to the waiter;
        // Acquire makes the waiter's pre-park writes visible to the waker
        // that reschedules it.
        self.state.swap(NOTIFIED, Ordering::AcqRel) == PARKED
    }
}

#[cfg(all(test, loom))]
mod loom_models {
    //! The park/unpark races, explored exhaustively by loom. A "scheduler"
    //! is modelled as an atomic counter of reschedules; the waiter "suspends"
    //! by waiting (with loom's yield) until it has been rescheduled.
    use super::*;
    use crate::loom::{AtomicUsize, thread};
    use loom::sync::Arc;

    struct Waiter {
        park: ParkState,
        rescheduled: AtomicUsize,
        data: AtomicUsize,
    }

    fn new_waiter() -> Arc<Waiter> {
        Arc::new(Waiter { park: ParkState::new(), rescheduled: AtomicUsize::new(0), data: AtomicUsize::new(0) })
    }

    /// One park: returns once a token was consumed or the waiter was
    /// rescheduled; never suspends forever if a wake happened.
    fn park(w: &Waiter) {
        if w.park.try_consume() || !w.park.prepare_park() {
            return;
        }
        while w.rescheduled.load(Ordering::Acquire) == 0 {
            thread::yield_now();
        }
        w.park.after_wake();
    }

    fn unpark(w: &Waiter) {
        if w.park.unpark() {
            w.rescheduled.fetch_add(1, Ordering::Release);
        }
    }

    /// A wake racing a park is never lost, and what the waker wrote first is
    /// seen by the waiter.
    #[test]
    fn park_unpark_race() {
        loom::model(|| {
            let w = new_waiter();
            let waker = {
                let w = w.clone();
                thread::spawn(move || {
                    w.data.store(42, Ordering::Relaxed);
                    unpark(&w);
                })
            };
            // The waiter parks until it sees the data: every park ends.
            while w.data.load(Ordering::Relaxed) != 42 {
                park(&w);
            }
            waker.join().unwrap();
            assert!(w.rescheduled.load(Ordering::Relaxed) <= 1, "rescheduled more than once");
        });
    }

    /// A wake before the park leaves a token: the park returns at once and
    /// nothing is rescheduled.
    #[test]
    fn wake_before_park() {
        loom::model(|| {
            let w = new_waiter();
            let waker = {
                let w = w.clone();
                thread::spawn(move || unpark(&w))
            };
            waker.join().unwrap();
            park(&w);
            assert_eq!(w.rescheduled.load(Ordering::Relaxed), 0);
        });
    }

    /// Two wakers racing one park reschedule the waiter at most once.
    #[test]
    fn double_wake() {
        loom::model(|| {
            let w = new_waiter();
            let wakers: Vec<_> = (0..2)
                .map(|_| {
                    let w = w.clone();
                    thread::spawn(move || unpark(&w))
                })
                .collect();
            park(&w);
            for waker in wakers {
                waker.join().unwrap();
            }
            assert!(w.rescheduled.load(Ordering::Relaxed) <= 1, "a parked waiter was rescheduled twice");
        });
    }
}
