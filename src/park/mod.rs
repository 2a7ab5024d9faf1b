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
//!  EMPTY    -> PARKED  (CAS)      waiter (prepare_park)         suspends
//!  NOTIFIED -> EMPTY   (swap)     waiter (prepare_park, when    returns without parking
//!                                 its CAS found a token)
//!  PARKED   -> EMPTY   (CAS)      waker  (unpark)               reschedules the waiter:
//!                                                               exactly one waker sees
//!                                                               PARKED, so it is
//!                                                               rescheduled exactly once
//!  EMPTY or NOTIFIED -> NOTIFIED  waker  (unpark)               leaves a token
//!                      (CAS)
//! ```
//!
//! A wake that races a park is never lost: if it lands before the waiter's
//! CAS, the CAS fails and the waiter does not suspend; if it lands after, the
//! waker sees PARKED and reschedules. Wakes coalesce: several wakes before a
//! park leave one token, like `std::thread::unpark`. A waiter may wake
//! spuriously (a stale token), so callers re-check their condition in a loop.
//!
//! The waker that reschedules a PARKED waiter also resets the word to EMPTY
//! (its CAS), so the waiter, once resumed, owns a clean word and touches it
//! no more: one atomic read-modify-write per wake on each side, instead of a
//! token handed over and consumed. A waker that comes after that CAS, while
//! the waiter is still queued or running, leaves a token (a spurious wake
//! later, never a lost one). What the rescheduling waker wrote before its
//! CAS reaches the resumed waiter through the scheduler's own hand-over (the
//! run queue on the same thread, or the inbox's Release/Acquire pair), not
//! through this word.
//!
//! Every read-modify-write here that ends a wait (the waiter's swap that
//! takes a token, the waker's CAS) is one: a plain store could overwrite a
//! token that another waker left in between, and the waiter would not
//! synchronise with that waker (its writes could stay unseen).
//!
//! Rescheduling a coroutine means pushing it to its home worker's inbox (or
//! its local queue, when the waker runs on that worker); a coroutine that is
//! PARKED cannot be resumed before it has switched out, because only its home
//! worker resumes it and that worker is busy running it until it does.
//!
//! The state machine is written against `crate::loom`, so the loom models in
//! this module check it under every interleaving.

mod bucket_lock;
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
    /// it cannot suspend any more (its worker is tearing it down, not
    /// scheduling). Its worker unwinds nothing else meanwhile, so a wait that
    /// only a not-yet-unwound coroutine could end never ends: `Runtime`'s
    /// docs warn about that.
    #[inline(always)] // on every park; the thread case is the cold one
    pub(crate) fn current() -> Unparker {
        match runtime::current_task_for_waker() {
            Some(task) if !task.unwinding.get() => Unparker::Task(task),
            _ => Unparker::Thread(thread::current()),
        }
    }

    /// Which kind of waiter this is, for [`WaiterKind::park`].
    pub(crate) fn kind(&self) -> WaiterKind {
        match self {
            Unparker::Task(_) => WaiterKind::Task,
            Unparker::Thread(_) => WaiterKind::Thread,
        }
    }

    /// Before a timed park: a coroutine registers a timer with its worker
    /// (a thread passes the deadline to its futex wait instead). The waiter
    /// calls [`disarm_timer`] when the park ends (see
    /// [`WaiterKind::arms_timer`]).
    #[inline] // on every park; nothing to do in the common untimed case
    pub(crate) fn prepare_deadline(&self, deadline: Option<Deadline>) {
        if let (Unparker::Task(task), Some(deadline)) = (self, deadline) {
            runtime::wake_at(deadline, task);
        }
    }

    /// Gives up this handle as one non-zero word, for a waiter slot that is
    /// a single atomic word (the poller's, `runtime::poller`); get it back
    /// with [`from_raw`](Self::from_raw). A coroutine's is its task
    /// header's address, a thread's its parker's address with the low bit
    /// set (both are aligned to at least 4 bytes, so the bit is free).
    pub(crate) fn into_raw(self) -> usize {
        match self {
            Unparker::Task(task) => task.into_raw() as usize,
            Unparker::Thread(parker) => Arc::into_raw(parker) as usize | THREAD_TAG,
        }
    }

    /// Takes back a handle given up with [`into_raw`](Self::into_raw).
    ///
    /// # Safety
    ///
    /// - `raw` came from `into_raw`;
    /// - it is taken back once (the handle it stands for is owned by
    ///   whoever holds the word, as a `Box::into_raw` pointer is).
    pub(crate) unsafe fn from_raw(raw: usize) -> Unparker {
        if raw & THREAD_TAG != 0 {
            // SAFETY: the caller's promise: `Arc::into_raw` gave this
            // address (tag cleared), and this is its one way back.
            Unparker::Thread(unsafe { Arc::from_raw((raw & !THREAD_TAG) as *const thread::ThreadParker) })
        } else {
            // SAFETY: likewise, for `TaskRef::into_raw`.
            Unparker::Task(unsafe { runtime::TaskRef::from_raw(raw as *const runtime::Task) })
        }
    }

    /// Wakes the waiter (or leaves it a token). Always inline: left out of
    /// line in `unpark_one`, its call, register saves and restores were
    /// about 10 of a Condvar hand-off's instructions.
    #[inline(always)]
    pub(crate) fn unpark(self) {
        match self {
            Unparker::Task(task) => runtime::unpark(task),
            Unparker::Thread(parker) => parker.unpark(),
        }
    }
}

/// The low bit of a thread's [`Unparker::into_raw`] word (a task's is
/// clear).
const THREAD_TAG: usize = 1;
const _: () = assert!(
    align_of::<runtime::Task>() > THREAD_TAG && align_of::<thread::ThreadParker>() > THREAD_TAG,
    "Unparker::into_raw needs the low bit of both addresses free"
);

/// The kind of waiter the caller is; parking needs no handle on itself (a
/// coroutine parks through `CURRENT_TASK`, a thread through its own
/// thread-local parker), so a waiter hands its only [`Unparker`] to whoever
/// will wake it instead of keeping a second one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum WaiterKind {
    Task,
    Thread,
}

impl WaiterKind {
    /// Sleeps until woken (or, for a thread, until `deadline`); may return
    /// spuriously. Returns `false` when a thread's parker gave up because the
    /// deadline passed (a coroutine's timeouts are judged by the clock, its
    /// timer being just another wake). Only the waiter itself calls this, on
    /// its own coroutine or thread: the one [`Unparker::current`] described.
    #[inline]
    pub(crate) fn park(self, deadline: Option<Deadline>) -> bool {
        match self {
            WaiterKind::Task => {
                runtime::park_current_task();
                true
            }
            WaiterKind::Thread => thread::park_current(deadline),
        }
    }

    /// Whether a park of this waiter until `deadline` arms a timer
    /// ([`Unparker::prepare_deadline`]: a coroutine's), which the waiter
    /// must end with [`disarm_timer`] however the park ends.
    #[inline]
    pub(crate) fn arms_timer(self, deadline: Option<Deadline>) -> bool {
        self == WaiterKind::Task && deadline.is_some()
    }
}

/// Ends a timed park of the calling coroutine, however it ended (woken,
/// timed out, unwound): its timer, if it has not fired, is cancelled (see
/// `runtime::disarm_timer`). Called by the waiter itself, holding no
/// parking-lot lock.
#[inline]
pub(crate) fn disarm_timer() {
    runtime::disarm_timer();
}

pub(crate) use crate::runtime::ParkedOn;

/// Whether parking the caller now would leave its worker with nothing to
/// run: it is a coroutine, and no other task waits in its worker's queues.
/// A waiter may then spin longer before it parks, as Go's runtime lets a
/// goroutine spin on a mutex only while its P's run queue is empty
/// (`sync_runtime_canSpin`): the CPU has nothing better to do, and a
/// coroutine parked there would be woken from another thread (an inbox
/// push, often a futex wake). `false` on an OS thread.
#[inline]
pub(crate) fn parking_would_idle_worker() -> bool {
    runtime::worker_has_nothing_else()
}

/// Names what the calling coroutine is about to park on (shown by
/// `Runtime::dump`): two stores into its task; nothing on an OS thread.
/// Primitives call it right before they park.
#[inline]
pub(crate) fn waiting_on(on: ParkedOn) {
    runtime::note_wait(on);
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

    /// Announces that the waiter is about to suspend. `false` means a token
    /// arrived first: it has been consumed and the waiter must not suspend.
    #[inline]
    pub(crate) fn prepare_park(&self) -> bool {
        // Release: a waker that sees PARKED (Acquire in its CAS) also sees
        // everything the waiter did before parking.
        match self.state.compare_exchange(EMPTY, PARKED, Ordering::Release, Ordering::Relaxed) {
            Ok(_) => true,
            Err(found) => {
                self.consume_token(found);
                false
            }
        }
    }

    /// Takes the token `prepare_park` found.
    #[cold]
    fn consume_token(&self, found: u32) {
        debug_assert_eq!(found, NOTIFIED, "ParkState: a waiter parked twice");
        // A swap, not a store: a waker may add its token between our CAS and
        // now, and reading its value is what makes its writes visible to
        // us. Acquire: pairs with the wakers' Release.
        let taken = self.state.swap(EMPTY, Ordering::Acquire);
        debug_assert_eq!(taken, NOTIFIED, "ParkState: a token vanished");
    }

    /// Called by the waiter when it runs again after suspending. The waker
    /// that rescheduled it has already reset the word (module docs), so
    /// there is nothing to consume; debug builds check the state.
    #[inline]
    pub(crate) fn after_wake(&self) {
        debug_assert_ne!(
            self.state.load(Ordering::Relaxed),
            PARKED,
            "ParkState: a parked waiter ran without being rescheduled"
        );
    }

    /// Wakes the waiter or leaves it a token. Returns `true` exactly when the
    /// waiter was PARKED: the caller must then reschedule it (and no one else
    /// will); the word is EMPTY again.
    #[inline]
    pub(crate) fn unpark(&self) -> bool {
        // The common case first, a waiter that is parked: one CAS, no load
        // before it. AcqRel: as below.
        let mut state = match self.state.compare_exchange(PARKED, EMPTY, Ordering::AcqRel, Ordering::Relaxed) {
            Ok(_) => return true,
            Err(actual) => actual,
        };
        loop {
            let next = if state == PARKED { EMPTY } else { NOTIFIED };
            // AcqRel: Release publishes the waker's writes to the waiter (a
            // token is taken with Acquire; a rescheduled waiter is reached
            // through the scheduler as well); Acquire makes the waiter's
            // pre-park writes visible to the waker that reschedules it.
            match self.state.compare_exchange_weak(state, next, Ordering::AcqRel, Ordering::Relaxed) {
                Ok(_) => return state == PARKED,
                Err(actual) => state = actual,
            }
        }
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
    /// rescheduled; never suspends forever if a wake happened. `suspended`
    /// counts this waiter's suspensions: the scheduler has resumed it once
    /// `rescheduled` catches up.
    fn park(w: &Waiter, suspended: &mut usize) {
        if !w.park.prepare_park() {
            return;
        }
        *suspended += 1;
        while w.rescheduled.load(Ordering::Acquire) < *suspended {
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
            let mut suspended = 0;
            while w.data.load(Ordering::Relaxed) != 42 {
                park(&w, &mut suspended);
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
            park(&w, &mut 0);
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
            park(&w, &mut 0);
            for waker in wakers {
                waker.join().unwrap();
            }
            assert!(w.rescheduled.load(Ordering::Relaxed) <= 1, "a parked waiter was rescheduled twice");
        });
    }

    /// Two wakers, each publishing its own flag before it wakes the waiter:
    /// the waiter, parking until it has seen both, always gets there. The
    /// second wake may land while the first one's reschedule is on its way
    /// (it then leaves a token): its flag must still become visible, which
    /// is why every transition that ends a wait is a read-modify-write.
    #[test]
    fn two_wakers_each_seen() {
        loom::model(|| {
            let w = new_waiter();
            let flags = Arc::new([AtomicUsize::new(0), AtomicUsize::new(0)]);
            let wakers: Vec<_> = (0..2)
                .map(|i| {
                    let (w, flags) = (w.clone(), flags.clone());
                    thread::spawn(move || {
                        flags[i].store(1, Ordering::Relaxed);
                        unpark(&w);
                    })
                })
                .collect();
            let mut suspended = 0;
            while flags[0].load(Ordering::Relaxed) == 0 || flags[1].load(Ordering::Relaxed) == 0 {
                park(&w, &mut suspended);
            }
            for waker in wakers {
                waker.join().unwrap();
            }
        });
    }

    /// The cancel protocol (`JoinHandle::cancel` and the coroutine's park):
    /// the canceller sets its flag (Release) and wakes; the waiter checks
    /// the flag before it parks and again when it is resumed, and parks
    /// again otherwise (a park that only consumed a token returns and is
    /// retried, as the parking loops do). With both checks the waiter
    /// always leaves; `check_before_park: false` is the negative control:
    /// the cancel's wake can be the token a park consumes, and the retried
    /// park then waits for ever.
    fn cancel_racing_a_park(check_before_park: bool) {
        loom::model(move || {
            // std's Arc: loom's panics when dropped while loom unwinds the
            // deadlocked negative control, which aborts the test binary.
            let w = std::sync::Arc::new(Waiter {
                park: ParkState::new(),
                rescheduled: AtomicUsize::new(0),
                data: AtomicUsize::new(0),
            });
            let cancelled = std::sync::Arc::new(crate::loom::AtomicBool::new(false));
            let me = thread::current();
            let canceller = {
                let (w, cancelled) = (w.clone(), cancelled.clone());
                thread::spawn(move || {
                    cancelled.store(true, Ordering::Release);
                    if w.park.unpark() {
                        w.rescheduled.fetch_add(1, Ordering::Release);
                        me.unpark();
                    }
                })
            };
            let mut suspended = 0;
            loop {
                if check_before_park && cancelled.load(Ordering::Acquire) {
                    break;
                }
                if !w.park.prepare_park() {
                    continue; // a token: the park returns, the loop parks again
                }
                suspended += 1;
                while w.rescheduled.load(Ordering::Acquire) < suspended {
                    thread::park();
                }
                w.park.after_wake();
                if cancelled.load(Ordering::Acquire) {
                    break; // the check on the way back from the switch
                }
            }
            canceller.join().unwrap();
        });
    }

    #[test]
    fn cancel_racing_a_park_is_never_lost() {
        cancel_racing_a_park(true);
    }

    #[test]
    #[should_panic(expected = "deadlock")]
    fn negative_control_cancel_checked_only_after_a_switch() {
        cancel_racing_a_park(false);
    }
}
