//! The parking layer: "this waiter sleeps until someone wakes it", for a
//! waiter that is a coroutine or a plain OS thread.
//!
//! # The token protocol
//!
//! Every waiter has a wake token: a coroutine's is its task's
//! [`ParkState`], a thread's is its futex parker (`thread`). A coroutine's
//! has two parts, because a started coroutine never leaves its home worker
//! (only that worker's thread runs it, parks it and resumes it):
//!
//! - `state`, touched only on the home worker's thread, with plain loads
//!   and stores: the coroutine's own park, and every wake that comes from
//!   that thread (the common case: a lock or channel hand-off between two
//!   coroutines of one worker, a timer, the worker's poller);
//! - `queued`, an atomic flag that a wake from any other thread claims
//!   before it puts the task into its home worker's inbox; the home worker
//!   clears it when it takes the task out, and then makes the wake on its
//!   own thread.
//!
//! ```text
//!  state      meaning (home thread only)
//!  --------   ----------------------------------------------------------
//!  EMPTY      no wake pending; the waiter is running or ready to run
//!  NOTIFIED   a wake arrived while the waiter was not parked (a token)
//!  PARKED     the waiter is suspended and needs its worker to reschedule it
//!
//!  transition                 who (all on the home thread)   then
//!  -------------------------  -----------------------------  ----------------------
//!  EMPTY    -> PARKED         waiter (prepare_park)          suspends
//!  NOTIFIED -> EMPTY          waiter (prepare_park)          returns without parking
//!  PARKED   -> EMPTY          waker (wake_here)              reschedules the waiter
//!  EMPTY or NOTIFIED          waker (wake_here)              leaves a token
//!           -> NOTIFIED
//!
//!  queued     meaning (any thread)
//!  --------   ----------------------------------------------------------
//!  false      no wake from another thread is on its way
//!  true       one is: the task sits in its home worker's inbox, once
//!             (or its claimer is pushing it there); or the task has not
//!             started (no home yet); or it never runs again (its runtime
//!             is gone, or unwound it at shutdown: nothing clears the flag)
//!
//!  transition                 who                            then
//!  -------------------------  -----------------------------  ----------------------
//!  false -> true  (swap)      waker on another thread        pushes the task into
//!                             (claim_delivery)               its home's inbox
//!  true  -> true  (swap)      waker on another thread        nothing: the wake on
//!                                                            its way stands for both
//!  true  -> false (swap)      home worker, taking the task   wake_here
//!                             from its inbox (end_delivery)
//!  true  -> false (swap)      the worker that starts the     runs it (a task is
//!                             task, after setting its home   born `queued`)
//! ```
//!
//! A wake that races a park is never lost. On the home thread there is no
//! race: the waiter and the waker take turns. From another thread, the wake
//! reaches the home thread through its inbox and is made there, before or
//! after the park: before, it leaves a token and the park returns; after,
//! it reschedules the waiter. Wakes coalesce: several wakes before a park
//! leave one token, like `std::thread::unpark`, and several wakes from other
//! threads while one is on its way put the task into the inbox once (an
//! intrusive list: it cannot hold a task twice). A waiter may wake
//! spuriously (a stale token), so callers re-check their condition in a
//! loop.
//!
//! What a waker on another thread wrote before its wake reaches the waiter
//! through `queued`: every transition of it is a read-modify-write, so the
//! home worker's swap that ends a delivery reads the value of the last
//! waker's swap and synchronises with all of them (AcqRel), including
//! those that found the flag set and pushed nothing. (The inbox's own
//! Release/Acquire pair covers the waker that pushed.) A plain store there
//! would lose that: a waker whose swap lands just before it would push
//! nothing, and the waiter could run without seeing its writes (the loom
//! model `negative_control_delivery_ended_by_a_store` shows it).
//!
//! Only a started task can be waited on (its own code hands out its
//! [`Unparker`]), but `JoinHandle::cancel` wakes any task. A task is born
//! `queued`, so a wake before its start is dropped; the worker that starts
//! it sets its home, then ends that first "delivery" with a swap, which
//! makes the home visible to every later waker and the cancel flag (set
//! before a dropped wake) visible to the task, which checks it at its first
//! park or yield.
//!
//! Same-worker hand-offs thus make no atomic read-modify-write on the
//! waiter's word: a Mutex+Condvar hand-off between two coroutines of one
//! worker made two (a CAS to park, a CAS to wake) when every waker used
//! one shared atomic state machine. A wake from another thread makes one
//! more than it did (the home worker's swap), and every task's start one.
//!
//! Rescheduling a coroutine means pushing it to its home worker's run queue;
//! a coroutine that is PARKED cannot be resumed before it has switched out,
//! because only its home worker resumes it and that worker is busy running
//! it until it does.
//!
//! The protocol is written against `crate::loom`, so the loom models in this
//! module check it under every interleaving, with the inbox and the worker's
//! round modelled.

mod bucket_lock;
pub(crate) mod lot;
pub(crate) mod thread;

use crate::loom::{AtomicBool, Ordering};
use crate::runtime;
use crate::sys::futex::Deadline;
use std::cell::Cell;
use std::sync::Arc;

/// Who to wake: a coroutine (through its runtime) or an OS thread (through
/// its futex parker).
#[derive(Clone)]
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

const EMPTY: u8 = 0;
const NOTIFIED: u8 = 1;
const PARKED: u8 = 2;

/// The wake token of one coroutine; see the module docs.
#[derive(Debug)]
pub(crate) struct ParkState {
    /// EMPTY, NOTIFIED or PARKED. Only the task's home worker's thread
    /// touches it (`Task`'s `Sync` rests on that contract, as for its other
    /// `Cell`s).
    state: Cell<u8>,
    /// A wake from another thread is on its way (module docs).
    queued: AtomicBool,
}

impl ParkState {
    /// An unstarted task's: no wake pending, and `queued`, so that wakes
    /// from other threads are dropped until its first start (module docs).
    pub(crate) fn new() -> ParkState {
        ParkState { state: Cell::new(EMPTY), queued: AtomicBool::new(true) }
    }

    /// Announces that the waiter is about to suspend. `false` means a token
    /// arrived first: it has been consumed and the waiter must not suspend.
    /// Only the waiter calls this, on its home worker's thread.
    #[inline]
    pub(crate) fn prepare_park(&self) -> bool {
        if self.state.get() == NOTIFIED {
            self.state.set(EMPTY);
            return false;
        }
        debug_assert_eq!(self.state.get(), EMPTY, "ParkState: a waiter parked twice");
        self.state.set(PARKED);
        true
    }

    /// Called by the waiter when it runs again after suspending. The waker
    /// that rescheduled it has already reset the word (`wake_here`), so
    /// there is nothing to consume; debug builds check the state.
    #[inline]
    pub(crate) fn after_wake(&self) {
        debug_assert_ne!(self.state.get(), PARKED, "ParkState: a parked waiter ran without being rescheduled");
    }

    /// Whether the waiter is suspended in a park, for the monitor's counts;
    /// on the home worker's thread only, as every use of `state`.
    pub(crate) fn is_parked(&self) -> bool {
        self.state.get() == PARKED
    }

    /// Wakes the waiter or leaves it a token, on the waiter's home worker's
    /// thread (the caller makes sure: `runtime::unpark`). Returns `true`
    /// exactly when the waiter was PARKED: the caller must then reschedule
    /// it (and no one else will); the word is EMPTY again.
    #[inline]
    pub(crate) fn wake_here(&self) -> bool {
        if self.state.get() == PARKED {
            self.state.set(EMPTY);
            true
        } else {
            self.state.set(NOTIFIED);
            false
        }
    }

    /// A wake from another thread than the home worker's: `true` when the
    /// caller must put the task into its home worker's inbox, `false` when
    /// a wake is on its way already (or the task has not started), which
    /// will do for this one too.
    #[inline]
    pub(crate) fn claim_delivery(&self) -> bool {
        // AcqRel: Release publishes the waker's writes to the home worker's
        // swap in `end_delivery` (which reads this swap's value or a later
        // one of the same release sequence); Acquire makes the home set by
        // `end_delivery` at the task's start visible to the caller.
        !self.queued.swap(true, Ordering::AcqRel)
    }

    /// The home worker took the task out of its inbox (or starts it, after
    /// setting its home): wakes from other threads may queue it again.
    /// The caller then makes the wake (`wake_here`), or runs the task.
    #[inline]
    pub(crate) fn end_delivery(&self) {
        if crate::loom::negative_control::broken("park delivery") {
            // Wrong on purpose (a loom model's control): a store does not
            // read the swaps of the wakers that found the flag set.
            self.queued.store(false, Ordering::Release);
            return;
        }
        // AcqRel: Acquire pairs with every waker's swap in
        // `claim_delivery` (module docs); Release, at a start, publishes the
        // task's home to the wakers that come after.
        let was = self.queued.swap(false, Ordering::AcqRel);
        debug_assert!(was, "ParkState: a delivery ended that was not on its way");
    }
}

#[cfg(all(test, loom))]
mod loom_models {
    //! The park/wake races, explored exhaustively by loom. The model's main
    //! thread is the coroutine's home worker: it runs the coroutine (the
    //! waiter's loop) and, between its runs and while it is parked, the
    //! worker's round, which takes deliveries out of the inbox. The inbox
    //! is modelled as a count of deliveries (a Release add, an Acquire
    //! take, as the real inbox's push and take), which also checks that a
    //! task is never queued twice at once. Other threads wake the waiter
    //! as `runtime::unpark` does from another thread. (Loom does not track
    //! the `Cell` of the park state: the models keep the home-thread rule
    //! by construction, calling `prepare_park` and `wake_here` only on the
    //! main thread, and check the protocol around it.)
    use super::*;
    use crate::loom::{AtomicUsize, thread};
    // std's Arc, not loom's: loom's panics when it is dropped while loom
    // unwinds a deadlocked negative control, which aborts the test binary.
    use std::sync::Arc;

    struct Waiter {
        park: ParkState,
        /// The home worker's inbox: deliveries of this task waiting in it.
        inbox: AtomicUsize,
        /// The home worker's sleep, ended after a push (`Worker::notify`).
        /// loom's `Notify` rather than a thread's park and unpark: an unpark
        /// that reaches the model's main thread while it joins a waker
        /// trips an assertion inside loom.
        worker_sleep: loom::sync::Notify,
    }

    /// An unstarted task's waiter.
    fn new_waiter() -> Arc<Waiter> {
        Arc::new(Waiter { park: ParkState::new(), inbox: AtomicUsize::new(0), worker_sleep: loom::sync::Notify::new() })
    }

    fn started_waiter() -> Arc<Waiter> {
        let w = new_waiter();
        w.park.end_delivery(); // its start (the home is set: here, implicit)
        w
    }

    /// A wake from another thread (`runtime::unpark_remote`).
    fn wake_from_afar(w: &Waiter) {
        if w.park.claim_delivery() {
            // Release: the inbox's push.
            let before = w.inbox.fetch_add(1, Ordering::Release);
            assert_eq!(before, 0, "a task was queued in its inbox twice");
            w.worker_sleep.notify();
        }
    }

    /// The home worker's round: takes the deliveries from the inbox and
    /// makes their wakes here. Returns whether it rescheduled the waiter.
    fn worker_round(w: &Waiter) -> bool {
        // Acquire: the inbox's take.
        match w.inbox.swap(0, Ordering::Acquire) {
            0 => false,
            1 => {
                w.park.end_delivery();
                w.park.wake_here()
            }
            n => panic!("{n} deliveries of one task at once"),
        }
    }

    /// One park of the waiter, on the home thread: returns once a token was
    /// consumed or the worker's round rescheduled it.
    fn park(w: &Waiter) {
        if !w.park.prepare_park() {
            return;
        }
        while !worker_round(w) {
            w.worker_sleep.wait(); // until a push wakes it (or spuriously)
        }
        w.park.after_wake();
    }

    /// The waiter parks until `done`, with the worker's round between its
    /// runs (which may leave it a token instead of rescheduling it).
    fn wait_until(w: &Waiter, done: impl Fn() -> bool) {
        while !done() {
            park(w);
            worker_round(w);
        }
    }

    /// A wake from another thread racing a park is never lost, and what
    /// the waker wrote first is seen by the waiter.
    #[test]
    fn park_and_wake_from_afar() {
        loom::model(|| {
            let w = started_waiter();
            let data = Arc::new(AtomicUsize::new(0));
            let waker = {
                let (w, data) = (w.clone(), data.clone());
                thread::spawn(move || {
                    data.store(42, Ordering::Relaxed);
                    wake_from_afar(&w);
                })
            };
            wait_until(&w, || data.load(Ordering::Relaxed) == 42);
            waker.join().unwrap();
        });
    }

    /// Two wakers on other threads, each publishing its own flag before it
    /// wakes the waiter: the waiter, parking until it has seen both, always
    /// gets there. The second may find the first's delivery on its way and
    /// push nothing: its flag reaches the waiter through the home worker's
    /// swap that ends the delivery. With that swap made a store (the
    /// negative control), loom finds the waiter parked for good.
    fn two_wakers_from_afar() {
        loom::model(|| {
            let w = started_waiter();
            let flags = Arc::new([AtomicUsize::new(0), AtomicUsize::new(0)]);
            let wakers: Vec<_> = (0..2)
                .map(|i| {
                    let (w, flags) = (w.clone(), flags.clone());
                    thread::spawn(move || {
                        flags[i].store(1, Ordering::Relaxed);
                        wake_from_afar(&w);
                    })
                })
                .collect();
            wait_until(&w, || flags[0].load(Ordering::Relaxed) == 1 && flags[1].load(Ordering::Relaxed) == 1);
            for waker in wakers {
                waker.join().unwrap();
            }
        });
    }

    #[test]
    fn two_wakers_from_afar_each_seen() {
        two_wakers_from_afar();
    }

    #[test]
    #[should_panic(expected = "deadlock")]
    fn negative_control_delivery_ended_by_a_store() {
        let _broken = crate::loom::negative_control::break_until_dropped("park delivery");
        two_wakers_from_afar();
    }

    /// A wake from the home thread itself (a coroutine of the same worker)
    /// and one from afar, racing a park: the waiter is rescheduled at most
    /// once per park and sees both wakers' writes.
    #[test]
    fn wake_here_and_from_afar() {
        loom::model(|| {
            let w = started_waiter();
            let (near, far) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
            let waker = {
                let (w, far) = (w.clone(), far.clone());
                thread::spawn(move || {
                    far.store(1, Ordering::Relaxed);
                    wake_from_afar(&w);
                })
            };
            // Another coroutine of this worker ran before the waiter's
            // first park: its wake leaves a token.
            near.store(1, Ordering::Relaxed);
            assert!(!w.park.wake_here(), "a running waiter was rescheduled");
            wait_until(&w, || near.load(Ordering::Relaxed) == 1 && far.load(Ordering::Relaxed) == 1);
            waker.join().unwrap();
        });
    }

    /// The cancel protocol across a task's start (`JoinHandle::cancel` and
    /// `WorkerLocal::run_task_first`): the canceller sets its flag
    /// (Release) and wakes from afar, which is dropped while the task is
    /// unstarted. The starting worker checks the flag (an unstarted task
    /// that is cancelled is dropped), sets the home and ends the task's
    /// first delivery; the task checks the flag before each park, and
    /// again when it is resumed, and parks again otherwise. With the start's
    /// swap, the task always leaves; with a store (the negative control),
    /// the cancel's dropped wake can go unseen and the task parks for good.
    fn cancel_racing_a_start() {
        loom::model(|| {
            let w = new_waiter();
            let cancelled = Arc::new(crate::loom::AtomicBool::new(false));
            let canceller = {
                let (w, cancelled) = (w.clone(), cancelled.clone());
                thread::spawn(move || {
                    cancelled.store(true, Ordering::Release);
                    wake_from_afar(&w);
                })
            };
            // The start.
            if !cancelled.load(Ordering::Acquire) {
                w.park.end_delivery();
                // The task: parks (waits for anything) until cancelled.
                while !cancelled.load(Ordering::Acquire) {
                    park(&w);
                    worker_round(&w);
                }
            }
            canceller.join().unwrap();
        });
    }

    #[test]
    fn cancel_racing_a_start_is_never_lost() {
        cancel_racing_a_start();
    }

    #[test]
    #[should_panic(expected = "deadlock")]
    fn negative_control_start_ended_by_a_store() {
        let _broken = crate::loom::negative_control::break_until_dropped("park delivery");
        cancel_racing_a_start();
    }
}
