//! Join handles: a one-shot result slot with one waiter, who is either a
//! coroutine (parked through the runtime) or an OS thread (blocked on a
//! futex on the slot's state word).
//!
//! # State word
//!
//! ```text
//!  value     meaning
//!  --------  ------------------------------------------------------------
//!  RUNNING   no result yet, nobody waiting
//!  WAITING   no result yet; `waiter` holds who to wake (a coroutine, or
//!            `None` for an OS thread, woken on this word)
//!  DETACHED  no result yet, and the handle is gone: nobody will take it
//!  DONE      `result` is written; the waiter (if any) is being woken
//!
//!  transition            who                       then
//!  --------------------  ------------------------  --------------------------
//!  RUNNING -> WAITING    joiner (CAS, Release)     waits (parks or futex)
//!  WAITING -> RUNNING    joiner whose timed wait   takes `waiter` back: the
//!                        ran out (CAS, Acquire)    finisher will not read it
//!  RUNNING -> DETACHED   the handle's drop (CAS)   -
//!  any     -> DONE       finisher (swap, AcqRel)   wakes `waiter` if it saw
//!                                                  WAITING; drops the result
//!                                                  at once if it saw DETACHED
//!  (DONE, handle drop)   the handle's drop         takes the result out and
//!                                                  drops it
//! ```
//!
//! A result nobody can take is dropped as soon as it exists (or as soon as
//! its handle goes), not when the task's last reference goes: other
//! references may live on well after the end (a timer entry of a wait the
//! task left early stays in its worker's heap until that wait's deadline),
//! and a result can hold what others wait for (a `Sender` whose receiver
//! waits for the disconnection, a socket, a large buffer). Its destructor
//! runs where the coroutine ended (or where the handle was dropped), and a
//! panic in it is caught there, as at the cell's free.
//!
//! The joiner writes `waiter` and then CASes RUNNING -> WAITING (Release);
//! the finisher writes `result` and swaps in DONE (AcqRel): if it saw
//! WAITING it reads `waiter` (its Acquire pairs with the joiner's Release)
//! and wakes it. The joiner reads `result` after seeing DONE with Acquire,
//! which pairs with the finisher's Release. Each side writes its field
//! before publishing it, and reads the other's only after seeing it
//! published, so the fields need no lock. A timed join that gives up CASes
//! WAITING back to RUNNING: if that wins, the finisher has not swapped yet
//! and will see RUNNING, so `waiter` is the joiner's again; if it loses, the
//! result is there (DONE) and the join takes it after all.
//!
//! The join state lives inside its task's allocation (see [`super::task`]);
//! a [`JoinHandle`] is a counted reference to that task.
//!
//! # The protocol's code, and its loom models
//!
//! The transitions above are the methods of [`Slots`], the state word and
//! the two slots, generic in the result and in the waiter: the joiner
//! registering a waiter and taking it back when it gives up
//! ([`Slots::wait`], [`Slots::take_back`]), the finisher completing and
//! deciding whom to wake ([`Slots::complete`]), the handle detaching
//! ([`Slots::detach`]) and taking the result ([`Slots::take_done`]). The
//! word and the slots are `crate::loom`'s atomic and `UnsafeCell`; the wake
//! is the waiter's own ([`Waiter::wake`]), and how a registered joiner
//! blocks is the closure its `wait` is given. [`JoinState`] is `Slots` at
//! the runtime's types: the waiter an `Option<TaskRef>` (a coroutine,
//! unparked through its runtime, or `None` for an OS thread, woken on the
//! futex of the state word), the blocking the coroutine's park loop or the
//! thread's futex wait. (The runtime does not run under loom, whose atomics
//! only a model may touch; there the thread's futex is a loom yield.) The
//! split costs the runtime nothing: the finisher's swap, its out-of-line
//! wake, the finished join's fast path and the handle's drop compile to the
//! same machine code as before it (compared instruction by instruction in
//! the `runtime` bench binary); only the frame of a join that waits moved
//! (the unwind guard now covers the thread's futex wait too).
//!
//! The loom models at the end of this file (`loom_models`; `RUSTFLAGS="--cfg
//! loom" LOOM_MAX_PREEMPTIONS=3 cargo test --release -p weft --lib join`)
//! run those same methods with a loom thread as the waiter (blocking in
//! loom's `park`, woken by its `unpark`), a result that counts its drops,
//! and `JoinHandle`'s bookkeeping around them (the fast path of a finished
//! join, the `taken` flag, the detach at drop):
//!
//! - a join racing the finish gets the result, exactly once, and never
//!   sleeps for ever (loom reports a joiner left parked as a deadlock); the
//!   waiter it registered is dropped exactly once, and woken at most once;
//! - a timed join racing the finish, giving up as soon as it finds no
//!   result (loom has no clock: a deadline may pass at any point): either
//!   it gets the result, or it takes its waiter back and the finisher never
//!   wakes it; then the handle's drop or a second, untimed join leaves the
//!   result dropped exactly once;
//! - the handle dropped racing the finish: the result is dropped exactly
//!   once, by whichever side comes second;
//! - every model ends with both slots empty (`owns_nothing`: the cell's
//!   free would have nothing to drop), and loom checks every access to the
//!   slots for a race;
//! - two negative controls (`crate::loom::negative_control`), which loom
//!   must report as races on the slots: a finisher whose swap to DONE is
//!   Relaxed, and a joiner that writes its waiter after its CAS.
//!
//! What the models leave out is modelled elsewhere or not at all: a
//! coroutine's park and unpark (`park::ParkState` has models of its own),
//! the futex, timers, and the unwind of a cancelled joiner (its guard takes
//! the registration back with the same `take_back`).

use super::task::{self, TaskRef};
use super::{current_task, current_task_is_unwinding, disarm_timer, park_current_task, unpark, wake_at};
use crate::loom::{AtomicU32, Ordering, UnsafeCell, negative_control};
use crate::sys::futex::Deadline;
use std::any::Any;
use std::cell::Cell;
use std::fmt;
use std::io;
use std::marker::PhantomData;
use std::mem;
use std::ptr;
use std::time::Duration;

const RUNNING: u32 = 0;
const WAITING: u32 = 1;
const DONE: u32 = 2;
const DETACHED: u32 = 3;

/// The negative controls of the loom models (see `crate::loom`): the
/// finisher's swap to DONE made Relaxed, and a joiner's waiter written
/// after its CAS to WAITING.
const RELAXED_FINISH: &str = "join: Relaxed swap to DONE";
#[cfg(loom)]
const WAITER_AFTER_CAS: &str = "join: waiter written after the CAS";

/// Why a coroutine produced no value; what a [`JoinError`] carries besides
/// the coroutine's id and name.
pub(crate) enum Failure {
    /// Its closure panicked with this payload. Boxed once more, so that the
    /// pointer is thin: a failure is then one word besides its tag, and
    /// so is a `()` coroutine's outcome in its task's cell (a panic's
    /// payload is already an allocation; this is a second, per panic).
    Panic(Box<Box<dyn Any + Send + 'static>>),
    /// [`JoinHandle::cancel`] unwound it (or it never started).
    Cancelled,
    /// Its runtime shut down before it finished (`started`) or started.
    Shutdown { started: bool },
    /// It never started: no stack could be mapped for it.
    NoStack(io::Error),
    /// The joiner gave up: it is itself being unwound by its runtime's
    /// shutdown, where waiting could never end.
    JoinerUnwinding,
}

impl Failure {
    /// A panic, with the payload `catch_unwind` returned.
    pub(crate) fn panic(payload: Box<dyn Any + Send + 'static>) -> Failure {
        Failure::Panic(Box::new(payload))
    }
}

/// A coroutine's outcome, as its join state holds it.
pub(crate) type Outcome<T> = Result<T, Failure>;

/// Who a registered joiner is, and how the finisher wakes it: the
/// runtime's `Option<TaskRef>`, a loom thread in the models. The default
/// value is the empty `waiter` slot.
trait Waiter: Default {
    /// Wakes the joiner that registered `self` on the join whose state word
    /// is `state` (now DONE), after the finisher took it out of the slot.
    fn wake(self, state: &AtomicU32);
}

/// The runtime's waiter: a coroutine, or `None` for an OS thread, which
/// blocks on the state word itself. (Not an enum of the two: a `TaskRef`'s
/// one niche holds `None`, and the word is all a cell's join state spends
/// on it.)
///
/// The futex wake of a thread touches the state word after the swap to
/// DONE, when the joiner may already have seen DONE, taken the result and
/// dropped its handle. The word stays valid because every finisher holds a
/// reference to the task's cell of its own through the wake: the running
/// coroutine's (its worker lent it for the resume), a `spawn_blocking`
/// job's `finisher`, the `TaskRef` a worker fails.
impl Waiter for Option<TaskRef> {
    // Always: into the finisher's out-of-line `wake_joiner`, as before the
    // protocol became generic.
    #[inline(always)]
    fn wake(self, state: &AtomicU32) {
        match self {
            Some(task) => unpark(task),
            None => futex_wake_all(state),
        }
    }
}

/// The join protocol (see the module docs): the state word and the two
/// slots, with the transitions as methods. `R` is the result, `W` the
/// waiter. The methods that touch a slot are `unsafe`: each side's role
/// (one finisher completing once, one handle joining and detaching) is what
/// makes the slots race-free, and the caller promises to keep to it.
struct Slots<R, W> {
    state: AtomicU32,
    /// Who waits, while the state is WAITING (and for a moment before the
    /// CAS that publishes it); the empty `W::default()` otherwise.
    waiter: UnsafeCell<W>,
    result: UnsafeCell<Option<R>>,
}

// SAFETY: `waiter` and `result` are each written by one side before a
// Release publication and read by the other only after the matching Acquire
// (see the module docs); the result and the waiter cross threads, hence
// `Send`.
unsafe impl<R: Send, W: Send> Send for Slots<R, W> {}
// SAFETY: as above.
unsafe impl<R: Send, W: Send> Sync for Slots<R, W> {}

impl<R, W: Waiter> Slots<R, W> {
    fn new() -> Slots<R, W> {
        Slots { state: AtomicU32::new(RUNNING), waiter: UnsafeCell::new(W::default()), result: UnsafeCell::new(None) }
    }

    /// Whether the result is there. Acquire: pairs with the finisher's
    /// Release swap to DONE, after which `result` may be read.
    #[inline]
    fn is_done(&self) -> bool {
        self.state.load(Ordering::Acquire) == DONE
    }

    /// The finisher: stores the result and wakes the joiner, or drops the
    /// result if the handle is gone. Inline: the end of every coroutine,
    /// where the joiner is usually not waiting yet (one swap); waking one
    /// is the out-of-line part.
    ///
    /// # Safety
    ///
    /// Called once per join, by its one finisher.
    #[inline]
    unsafe fn complete(&self, result: R) {
        // The slot holds `None` until now (nothing to drop), so it is
        // overwritten without a drop.
        // SAFETY: only the finisher writes `result`, once (the caller's
        // promise), before publishing DONE; the handle reads it only after.
        self.result.with_mut(|slot| unsafe { slot.write(Some(result)) });
        // AcqRel: Release publishes `result` to the joiner's Acquire load
        // of DONE (`is_done`, or the failure of its CAS); Acquire pairs with
        // the joiner's Release CAS to WAITING, after which its `waiter` is
        // ours to read. (The negative control drops both.)
        let order = if negative_control::broken(RELAXED_FINISH) { Ordering::Relaxed } else { Ordering::AcqRel };
        let previous = self.state.swap(DONE, order);
        if previous != RUNNING {
            // SAFETY: `previous` is what our swap replaced.
            unsafe { self.wake_joiner(previous) };
        }
    }

    /// `complete`'s slow path: a joiner to wake, or a result to drop.
    ///
    /// # Safety
    ///
    /// `previous` is the state that the finisher's swap to DONE replaced.
    #[cold]
    #[inline(never)]
    unsafe fn wake_joiner(&self, previous: u32) {
        if previous == DETACHED {
            // SAFETY: the handle is gone (it published DETACHED, which our
            // swap read), so nobody else will ever read `result`.
            let result = self.result.with_mut(|slot| unsafe { (*slot).take() });
            drop_unjoined(result);
            return;
        }
        assert!(previous == WAITING, "JoinState: completed twice (state {previous})");
        // SAFETY: the joiner wrote `waiter` before publishing WAITING, which
        // our swap observed with Acquire; it never touches it again (its
        // CAS back to RUNNING can no longer succeed).
        let waiter = self.waiter.with_mut(|slot| unsafe { mem::take(&mut *slot) });
        waiter.wake(&self.state);
    }

    /// The joiner, finding no result: registers `waiter` and lets `block`
    /// wait (until DONE, or until it gives up: a deadline, an unwind).
    /// Returns the result, or, if `block` gave up and
    /// [`take_back`](Self::take_back) then won, the reason it gave (`None`
    /// for a timeout). A cancel that unwinds `block` (a coroutine's park)
    /// takes the registration back as a give-up would, so that the handle,
    /// if it outlives the joiner, can be joined again.
    ///
    /// # Safety
    ///
    /// The caller is the join's one handle, which has not taken the result
    /// (nor detached), and is not waiting already; `block` returns
    /// `Ended::Done` only after [`is_done`](Self::is_done) returned true.
    #[inline]
    unsafe fn wait(&self, waiter: W, block: impl FnOnce() -> Ended<R>) -> Option<R> {
        // SAFETY: the caller's promise: the one joiner, not registered.
        if unsafe { self.register(waiter) } {
            let guard = TakeBackOnUnwind(self);
            let ended = block();
            mem::forget(guard);
            if let Ended::GaveUp(why) = ended {
                // SAFETY: registered above, not taken back yet.
                if unsafe { self.take_back() } {
                    return why;
                }
                // The finisher has just swapped in DONE: the result is
                // here after all.
            }
        }
        // DONE was seen with Acquire: by `block`, before it returned Done,
        // or by the failed CAS of `register` or of `take_back`.
        // SAFETY: so the result is there; the caller is the one handle.
        Some(unsafe { self.take_done() })
    }

    /// Publishes `waiter` (RUNNING -> WAITING); `false`, with the slot
    /// emptied again, if the result came first (the state is DONE).
    ///
    /// # Safety
    ///
    /// The caller is the join's one joiner, not registered now.
    #[inline]
    unsafe fn register(&self, waiter: W) -> bool {
        #[cfg(loom)]
        if negative_control::broken(WAITER_AFTER_CAS) {
            // SAFETY: the caller's promise.
            return unsafe { self.register_after_the_cas(waiter) };
        }
        // SAFETY: nobody reads `waiter` until we publish WAITING below (the
        // caller is the only joiner; the finisher reads it only after
        // seeing WAITING).
        self.waiter.with_mut(|slot| unsafe { *slot = waiter });
        // Release: publishes `waiter` to the finisher's AcqRel swap.
        // Acquire on failure: the state is DONE (a joiner never finds
        // DETACHED or WAITING), and `result`, published by the finisher's
        // Release swap, is read next.
        if self.state.compare_exchange(RUNNING, WAITING, Ordering::Release, Ordering::Acquire).is_ok() {
            return true;
        }
        // Finished meanwhile: take back the waiter we registered.
        // SAFETY: the finisher saw RUNNING, so it never reads `waiter`.
        self.waiter.with_mut(|slot| unsafe { *slot = W::default() });
        false
    }

    /// The negative control's `register`: writes the waiter after the CAS
    /// that publishes it, so the finisher can read the slot before (or
    /// while) the joiner writes it.
    ///
    /// # Safety
    ///
    /// As for [`register`](Self::register).
    #[cfg(loom)]
    unsafe fn register_after_the_cas(&self, waiter: W) -> bool {
        if self.state.compare_exchange(RUNNING, WAITING, Ordering::Release, Ordering::Acquire).is_ok() {
            // SAFETY: none: the race this control is for.
            self.waiter.with_mut(|slot| unsafe { *slot = waiter });
            return true;
        }
        false
    }

    /// A registered joiner gives up: takes its waiter back (WAITING ->
    /// RUNNING) and returns `true`, unless the finisher has swapped in DONE
    /// first (`false`: the result is there, and the finisher took the
    /// waiter).
    ///
    /// # Safety
    ///
    /// The caller is the joiner whose registration this is ([`register`]
    /// returned `true`), and has not taken it back yet.
    ///
    /// [`register`]: Self::register
    #[inline]
    unsafe fn take_back(&self) -> bool {
        // Acquire on failure: the state is DONE, and the caller reads
        // `result` next, published by the finisher's Release swap. (Success
        // needs no ordering: the finisher has published nothing yet; the
        // pair is kept as it always was.)
        if self.state.compare_exchange(WAITING, RUNNING, Ordering::Acquire, Ordering::Acquire).is_ok() {
            // SAFETY: the finisher has not swapped yet and will see
            // RUNNING: it never reads `waiter` now.
            self.waiter.with_mut(|slot| unsafe { *slot = W::default() });
            return true;
        }
        false
    }

    /// The handle goes without having taken the result: a result that is
    /// there is dropped now, one still to come when it comes (see the
    /// module docs).
    ///
    /// # Safety
    ///
    /// The caller is the join's one handle, which has not taken the result,
    /// is not waiting, and detaches once.
    unsafe fn detach(&self) {
        // Relaxed on success: nothing is published (the finisher's swap
        // reads DETACHED and needs nothing else from us). Acquire on
        // failure: the state is DONE (a handle being dropped waits for
        // nothing), and the result, published by the finisher's Release
        // swap, is read below.
        match self.state.compare_exchange(RUNNING, DETACHED, Ordering::Relaxed, Ordering::Acquire) {
            Ok(_) => {}
            Err(DONE) => {
                // SAFETY: DONE was seen with Acquire, and the handle (whose
                // drop this is) was the only reader of `result`.
                let result = self.result.with_mut(|slot| unsafe { (*slot).take() });
                drop_unjoined(result);
            }
            Err(other) => unreachable!("JoinState: a handle dropped in state {other}"),
        }
    }

    /// The result, once [`is_done`](Self::is_done) has returned true.
    ///
    /// # Safety
    ///
    /// - `is_done` returned true (its Acquire load makes the finisher's
    ///   write of the result visible, and the finisher never touches it
    ///   again), or a CAS of the joiner failed on DONE with Acquire;
    /// - the caller is the single handle, and takes the result once.
    #[inline]
    unsafe fn take_done(&self) -> R {
        // SAFETY: the caller's promises: nobody else reads or writes it.
        self.result.with_mut(|slot| unsafe { (*slot).take() }).expect("JoinState: result taken twice")
    }
}

impl<R, X> Slots<R, Option<X>> {
    /// Whether the slots own nothing (no waiter, no result): so after a
    /// join took the result, or after a result nobody joined was dropped.
    #[inline]
    fn owns_nothing(&mut self) -> bool {
        // SAFETY: `&mut self`: nobody else touches the slots.
        self.waiter.with(|slot| unsafe { (*slot).is_none() }) && self.result.with(|slot| unsafe { (*slot).is_none() })
    }
}

/// How a registered wait ended.
enum Ended<R> {
    Done,
    /// Before the result came: `None` for a timeout, else what to return.
    GaveUp(Option<R>),
}

/// Takes a joiner's registration back when it is unwound out of its wait
/// (a coroutine cancelled, or unwound at shutdown), as a wait that gave up
/// does: left WAITING with a waiter that is gone, the state would make the
/// handle's next join take a result that is not there, and the finisher
/// wake a task that no longer waits. Unless the finisher swapped in DONE
/// first: then the result stays for the next join, and the finisher took
/// the waiter.
struct TakeBackOnUnwind<'a, R, W: Waiter>(&'a Slots<R, W>);

impl<R, W: Waiter> Drop for TakeBackOnUnwind<'_, R, W> {
    fn drop(&mut self) {
        // SAFETY: the guard lives only between a successful `register` and
        // the end of its wait (`Slots::wait`), by its one joiner.
        unsafe { self.0.take_back() };
    }
}

/// Drops a result nobody will take. A destructor that panics must not
/// unwind whoever drops it (a worker, a pool thread, a coroutine's end):
/// the panic hook has reported it, as for the cell's free.
fn drop_unjoined<R>(result: Option<R>) {
    if result.is_some() {
        let result = std::panic::AssertUnwindSafe(result);
        let _ = std::panic::catch_unwind(move || drop({ result }.0));
    }
}

/// Wakes every thread blocked on the state word: the OS thread that joins.
#[cfg(not(loom))]
#[inline(always)]
fn futex_wake_all(state: &AtomicU32) {
    crate::sys::futex::wake(state, u32::MAX);
}

/// Blocks on the state word while it is WAITING, until `deadline`:
/// `false` when it passed (see `futex::wait`).
#[cfg(not(loom))]
#[inline(always)]
fn futex_wait(state: &AtomicU32, deadline: Option<Deadline>) -> bool {
    crate::sys::futex::wait(state, WAITING, deadline)
}

/// Under loom the kernel cannot wait on the state word (a loom atomic):
/// a thread's join spins with loom's yield instead, and a timed one may
/// give up at any point (loom has no clock). The runtime does not run under
/// loom; this keeps it compiling.
#[cfg(loom)]
fn futex_wake_all(_state: &AtomicU32) {}

/// See the other `futex_wake_all`.
#[cfg(loom)]
fn futex_wait(_state: &AtomicU32, deadline: Option<Deadline>) -> bool {
    crate::loom::thread::yield_now();
    deadline.is_none()
}

/// A task's join state: [`Slots`] at the runtime's types (the result an
/// [`Outcome`], the waiter a coroutine or `None` for an OS thread).
pub(crate) struct JoinState<T>(Slots<Outcome<T>, Option<TaskRef>>);

impl<T> JoinState<T> {
    pub(crate) fn new() -> JoinState<T> {
        JoinState(Slots::new())
    }

    /// Stores the result and wakes the joiner.
    ///
    /// # Safety
    ///
    /// Called exactly once per task, by its one finisher: its coroutine's
    /// end, its job's end on a pool thread, or the vtable's `fail` of a task
    /// that never ran (a second call would write the result while the
    /// joiner may be reading it).
    #[inline]
    pub(crate) unsafe fn complete(&self, result: Outcome<T>) {
        // SAFETY: the caller's promise: one finisher, once.
        unsafe { self.0.complete(result) };
    }

    /// Whether the state owns nothing (no waiter, no result): so after a
    /// join took the result, the usual end of a cell, whose drop can then
    /// skip this state's. Only for the last owner of the cell.
    #[inline]
    pub(crate) fn owns_nothing(&mut self) -> bool {
        self.0.owns_nothing()
    }

    pub(crate) fn is_done(&self) -> bool {
        self.0.is_done()
    }

    /// Waits for the result until `deadline` (for ever if `None`): parks the
    /// current coroutine, or blocks the current OS thread on the state word.
    /// `None` when the deadline passed first (the result stays for a later
    /// wait). `id` is the coroutine's whose result this is, which a parked
    /// joiner names for the dump (only where it may park: the join of a
    /// finished coroutine, the common case, skips the stores).
    ///
    /// # Safety
    ///
    /// The caller is the task's single join handle, which has not taken the
    /// result, and does not call this twice at once.
    pub(crate) unsafe fn wait(&self, deadline: Option<Deadline>, id: u64) -> Option<Outcome<T>> {
        if !self.is_done() {
            super::note_wait(super::ParkedOn::Join(id));
            let task = current_task();
            let block = || match &task {
                Some(task) => self.wait_as_task(task, deadline),
                None => self.wait_as_thread(deadline),
            };
            // SAFETY: the caller's promise; both halves return Done only
            // after `is_done` returned true.
            return unsafe { self.0.wait(task.clone(), block) };
        }
        // SAFETY: DONE was seen with Acquire; the caller is the single
        // JoinHandle, taking the result once (`JoinHandle::taken`).
        Some(unsafe { self.take_done() })
    }

    /// The handle goes without having taken the result; see
    /// [`Slots::detach`].
    ///
    /// # Safety
    ///
    /// The caller is the task's single join handle, being dropped, which
    /// has not taken the result.
    unsafe fn detach(&self) {
        // SAFETY: the caller's promise; a handle being dropped is not
        // waiting (a wait borrows it).
        unsafe { self.0.detach() };
    }

    /// The result, once [`is_done`](Self::is_done) has returned true.
    ///
    /// # Safety
    ///
    /// - `is_done` returned true (its Acquire load makes the finisher's
    ///   write of the result visible, and the finisher never touches it
    ///   again);
    /// - the caller is the single JoinHandle, and takes the result once.
    #[inline]
    pub(crate) unsafe fn take_done(&self) -> Outcome<T> {
        // SAFETY: the caller's promises.
        unsafe { self.0.take_done() }
    }

    /// The coroutine's half of [`wait`](Self::wait), registered as WAITING.
    fn wait_as_task(&self, task: &TaskRef, deadline: Option<Deadline>) -> Ended<Outcome<T>> {
        if let Some(deadline) = deadline {
            wake_at(deadline, task);
        }
        let ended = loop {
            if self.is_done() {
                break Ended::Done;
            }
            if deadline.is_some_and(|d| d.has_passed()) {
                break Ended::GaveUp(None);
            }
            if current_task_is_unwinding() {
                // Our runtime is unwinding us and this join runs in a
                // destructor: the result may never come.
                break Ended::GaveUp(Some(Err(Failure::JoinerUnwinding)));
            }
            // (A cancel of this coroutine unwinds from here: `Slots::wait`'s
            // guard takes the registration back, and its worker disarms the
            // timer.)
            park_current_task();
        };
        if deadline.is_some() {
            disarm_timer();
        }
        ended
    }

    /// The OS thread's half of [`wait`](Self::wait), registered as WAITING.
    fn wait_as_thread(&self, deadline: Option<Deadline>) -> Ended<Outcome<T>> {
        while !self.is_done() {
            if !futex_wait(&self.0.state, deadline) {
                return Ended::GaveUp(None);
            }
        }
        Ended::Done
    }
}

/// An owned permission to wait for a coroutine's result, like
/// [`std::thread::JoinHandle`]. Dropping it detaches the coroutine (it runs
/// on; nobody gets its result).
///
/// ```
/// let handle = weft::spawn(|| "done");
/// assert_eq!(handle.join().unwrap(), "done");
/// ```
pub struct JoinHandle<T> {
    /// The task whose join state holds our result: a `TaskCell<_, T>`.
    task: TaskRef,
    /// `join_timeout` returned the result already.
    taken: bool,
    /// We may take a `T` out of the cell (and the cell may drop one).
    _result: PhantomData<T>,
}

// SAFETY: the handle moves a T between threads (the finisher's and the
// joiner's), hence T: Send; sharing `&JoinHandle` only allows atomic reads of
// the state word and `cancel` (an atomic flag and a wake). (The same bounds
// the handle had as an Arc<JoinState<T>>.)
unsafe impl<T: Send> Send for JoinHandle<T> {}
// SAFETY: as above.
unsafe impl<T: Send> Sync for JoinHandle<T> {}

impl<T> JoinHandle<T> {
    /// The handle of `task`, a cell whose result type is `T`.
    ///
    /// # Safety
    ///
    /// `task` was created by `task::new_task::<_, T>` or
    /// `task::new_join_only::<T>`, and this is the only handle to it.
    pub(crate) unsafe fn from_task(task: TaskRef) -> JoinHandle<T> {
        JoinHandle { task, taken: false, _result: PhantomData }
    }

    fn state(&self) -> &JoinState<T> {
        // SAFETY: `from_task`'s promise: the cell's result type is T.
        unsafe { task::join_state_of::<T>(self.task.as_ptr()) }
    }

    /// Waits for the coroutine to finish and returns its value, or a
    /// [`JoinError`] saying why there is none: it panicked (the payload is
    /// inside), it was cancelled (by [`cancel`](Self::cancel) or its
    /// runtime's shutdown), or it never started because no stack could be
    /// mapped.
    ///
    /// A join made while the caller is itself being unwound by its runtime's
    /// shutdown (in a destructor of a coroutine that the dropped runtime
    /// unwinds) does not wait: it returns at once an error of kind
    /// [`Shutdown`](JoinErrorKind::Shutdown), whether or not the coroutine
    /// it joins has finished.
    ///
    /// From a coroutine this parks only the coroutine (its worker runs
    /// others meanwhile); from an OS thread it blocks the thread.
    ///
    /// ```
    /// let handle = weft::spawn(|| -> u32 { panic!("out of cheese") });
    /// let error = handle.join().unwrap_err();
    /// assert!(error.is_panic());
    /// assert!(error.to_string().contains("out of cheese"));
    /// ```
    ///
    /// # Panics
    ///
    /// If [`join_timeout`](Self::join_timeout) already returned the result,
    /// and if called from the coroutine it joins (it would wait for ever).
    #[track_caller]
    pub fn join(mut self) -> Result<T, JoinError> {
        // Most joins find the coroutine finished (a burst's, a spawn tree's
        // leaves): they take the result here, without the frame of the wait
        // (its register saves alone cost more than this path).
        if !self.taken && self.state().is_done() {
            self.taken = true;
            // SAFETY: done, seen just now; this handle is the only one, and
            // `taken` was false: the result is still there, taken once.
            let outcome = unsafe { self.state().take_done() };
            return outcome.map_err(|failure| JoinError::new(&self.task, failure));
        }
        self.join_waiting()
    }

    /// [`join`](Self::join) of a coroutine that had not finished (or of a
    /// handle whose result is gone: `join_until` panics then).
    #[track_caller]
    #[inline(never)]
    fn join_waiting(mut self) -> Result<T, JoinError> {
        self.join_until(None).expect("a join without a deadline waits until the result comes")
    }

    /// Waits at most `timeout` for the coroutine to finish: `Some` with what
    /// [`join`](Self::join) would return, or `None` if it is still running
    /// when the time is up (never earlier: the deadline is on the monotonic
    /// clock). The handle is kept, so the caller can wait again, cancel, or
    /// drop it.
    ///
    /// ```
    /// use std::time::Duration;
    /// let mut handle = weft::spawn(|| weft::sleep(Duration::from_millis(100)));
    /// assert!(handle.join_timeout(Duration::from_millis(1)).is_none(), "still sleeping");
    /// assert!(handle.join_timeout(Duration::from_secs(60)).expect("finished").is_ok());
    /// ```
    ///
    /// # Panics
    ///
    /// If an earlier call already returned `Some` (the result is gone), and
    /// if called from the coroutine it joins.
    #[track_caller]
    pub fn join_timeout(&mut self, timeout: Duration) -> Option<Result<T, JoinError>> {
        self.join_until(Some(Deadline::after(timeout)))
    }

    #[track_caller]
    fn join_until(&mut self, deadline: Option<Deadline>) -> Option<Result<T, JoinError>> {
        assert!(
            !self.taken,
            "JoinHandle: coroutine {}'s result was already returned by join_timeout; it can be taken only once",
            self.task.id
        );
        // std reports a thread joining itself (EDEADLK) rather than wait for
        // ever; so do we, timed or not (a timed one could only time out),
        // for a coroutine and for a `spawn_blocking` job alike. A task that
        // has finished is not the caller: most joins (of a burst, of a
        // spawn tree's leaves) find it so and skip the two thread-local
        // reads.
        if !self.state().is_done() {
            self.refuse_self_join();
        }
        // SAFETY: this is the task's only handle (`from_task`'s promise),
        // it has not taken the result (`taken` is false, asserted above),
        // and `&mut self` rules out a second wait at once.
        let outcome = unsafe { self.state().wait(deadline, self.task.id) }?;
        self.taken = true;
        Some(outcome.map_err(|failure| JoinError::new(&self.task, failure)))
    }

    /// Panics if the caller is the coroutine or `spawn_blocking` job this
    /// handle joins.
    #[track_caller]
    fn refuse_self_join(&self) {
        if ptr::eq(super::CURRENT_TASK.with(Cell::get), self.task.as_ptr()) {
            panic!(
                "coroutine {} joined its own JoinHandle, which would wait for ever: a coroutine cannot wait for \
                 its own end",
                self.task.id
            );
        }
        if ptr::eq(super::CURRENT_BLOCKING_JOB.with(Cell::get), self.task.as_ptr()) {
            panic!(
                "a spawn_blocking job (task {}) joined its own JoinHandle, which would wait for ever: a job cannot \
                 wait for its own end",
                self.task.id
            );
        }
    }

    /// Whether the coroutine has finished (`join` would not wait).
    ///
    /// ```
    /// let handle = weft::spawn(|| ());
    /// while !handle.is_finished() {
    ///     std::thread::yield_now();
    /// }
    /// handle.join().unwrap(); // does not wait
    /// ```
    pub fn is_finished(&self) -> bool {
        self.state().is_done()
    }

    /// The id of the coroutine (as `weft::current().id()` reports it inside).
    ///
    /// ```
    /// let handle = weft::spawn(|| weft::current().id());
    /// let id = handle.id();
    /// assert_eq!(handle.join().unwrap(), id);
    /// ```
    pub fn id(&self) -> u64 {
        self.task.id
    }

    /// Asks the coroutine to stop: it is unwound at its next park or yield
    /// (at once if it is parked now: in a lock, a condition variable, a
    /// semaphore, a sleep or a join, which it leaves cleanly, as a timed-out
    /// wait would), its destructors run on its own worker, and
    /// [`join`](Self::join) returns a [`JoinError`] for which
    /// [`is_cancelled`](JoinError::is_cancelled) holds. A coroutine that has
    /// not started never starts (its closure is dropped). A coroutine busy
    /// computing is not interrupted: it can poll [`crate::is_cancelled`] to
    /// stop early. Cancelling a finished or already cancelled coroutine does
    /// nothing; a coroutine that finishes before it reaches a park or yield
    /// joins with its value.
    ///
    /// The unwind is a panic with a payload of weft's own (the panic hook is
    /// not called): code that catches panics inside the coroutine must let
    /// it go on ([`crate::is_forced_unwind`] tells it apart); one that is
    /// swallowed leaves the coroutine running, and the cancel is spent. A
    /// destructor that waits during the unwind parks as usual, except on a
    /// socket: an operation that would have to wait fails at once with an
    /// error of kind [`TimedOut`](std::io::ErrorKind::TimedOut), so a peer
    /// that stopped reading cannot hold the cancel up (a `BufWriter` that
    /// flushes as it is dropped, say; see [`crate::net`]). While a
    /// destructor is parked, [`std::thread::panicking`] reports `true` to the other
    /// coroutines of its worker thread (std keeps that count per thread).
    /// A cancel never starts its unwind while the thread is unwinding a
    /// panic (a second unwind there would abort the process): a coroutine
    /// cancelled while a panic unwinds it, or while another coroutine of its
    /// worker is parked in such an unwind, is unwound at its first park or
    /// yield after that (a wait it parks in meanwhile looks again every
    /// millisecond, and so ends soon after that unwind does).
    ///
    /// A `spawn_blocking` job that has not started is dropped the same way;
    /// one that runs is not interrupted (its OS thread runs it to the end),
    /// but it can poll [`crate::is_cancelled`] to stop early.
    ///
    /// ```
    /// use std::time::Duration;
    /// let handle = weft::spawn(|| weft::sleep(Duration::from_secs(3600)));
    /// handle.cancel();
    /// assert!(handle.join().unwrap_err().is_cancelled());
    /// ```
    pub fn cancel(&self) {
        super::cancel(&self.task);
    }
}

impl<T> Drop for JoinHandle<T> {
    fn drop(&mut self) {
        // A handle that returned the result (`join`, `join_timeout`) has
        // nothing to give up.
        if !self.taken {
            // SAFETY: this is the task's only handle (`from_task`'s
            // promise), dropped now, and it has not taken the result.
            unsafe { self.state().detach() };
        }
    }
}

impl<T> fmt::Debug for JoinHandle<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JoinHandle").field("id", &self.id()).field("finished", &self.is_finished()).finish()
    }
}

/// Why [`JoinHandle::join`] has no value: the coroutine panicked, was
/// cancelled, or never started because no stack could be mapped for it.
///
/// Its `Display` names the coroutine (id and name) and says what happened;
/// a panic's payload comes back with [`into_panic`](Self::into_panic), to
/// be resumed with [`std::panic::resume_unwind`] or inspected.
///
/// ```
/// let handle = weft::Builder::new()
///     .name("parser".to_string())
///     .spawn(|| -> u32 { panic!("unexpected token") })
///     .unwrap();
/// let error = handle.join().unwrap_err();
/// assert_eq!(error.kind(), weft::JoinErrorKind::Panic);
/// assert!(error.to_string().contains("'parser'"));
/// let payload = error.into_panic();
/// assert_eq!(payload.downcast_ref::<&str>(), Some(&"unexpected token"));
/// ```
pub struct JoinError(Box<ErrorInner>);

/// A `JoinError`'s contents, boxed so that a `Result<T, JoinError>` is no
/// bigger than it must be (a `Result<(), JoinError>` is one pointer): every
/// successful join moves one, a failed one is rare.
struct ErrorInner {
    id: u64,
    name: Option<String>,
    repr: Repr,
}

/// A [`Failure`] as a `JoinError` holds it: the panic's text taken out
/// once, and the payload behind a lock only `into_panic` takes, so that the
/// error is `Sync` (a payload is only `Send`) as errors are expected to be.
enum Repr {
    Panic { text: Option<String>, payload: std::sync::Mutex<Box<dyn Any + Send + 'static>> },
    Cancelled,
    Shutdown { started: bool },
    NoStack(io::Error),
    JoinerUnwinding,
}

/// What kind of [`JoinError`] it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum JoinErrorKind {
    /// The coroutine panicked ([`JoinError::into_panic`] gives the payload).
    Panic,
    /// It was cancelled with [`JoinHandle::cancel`].
    Cancelled,
    /// Its runtime shut down before it finished (or started); or the
    /// joiner gave up because its own runtime is shutting down and
    /// unwinding it. A kind of cancellation ([`JoinError::is_cancelled`]
    /// holds).
    Shutdown,
    /// It never started: no stack could be mapped for it
    /// ([`JoinError::stack_error`] says why; usually `vm.max_map_count` or
    /// memory).
    NoStack,
}

impl JoinError {
    fn new(task: &TaskRef, failure: Failure) -> JoinError {
        let repr = match failure {
            Failure::Panic(payload) => Repr::Panic {
                text: payload_text(&**payload).map(str::to_owned),
                payload: std::sync::Mutex::new(*payload),
            },
            Failure::Cancelled => Repr::Cancelled,
            Failure::Shutdown { started } => Repr::Shutdown { started },
            Failure::NoStack(error) => Repr::NoStack(error),
            Failure::JoinerUnwinding => Repr::JoinerUnwinding,
        };
        JoinError(Box::new(ErrorInner { id: task.id, name: task.name.as_deref().map(str::to_owned), repr }))
    }

    /// What happened.
    pub fn kind(&self) -> JoinErrorKind {
        match self.0.repr {
            Repr::Panic { .. } => JoinErrorKind::Panic,
            Repr::Cancelled => JoinErrorKind::Cancelled,
            Repr::Shutdown { .. } | Repr::JoinerUnwinding => JoinErrorKind::Shutdown,
            Repr::NoStack(_) => JoinErrorKind::NoStack,
        }
    }

    /// Whether the coroutine panicked.
    pub fn is_panic(&self) -> bool {
        matches!(self.0.repr, Repr::Panic { .. })
    }

    /// Whether the coroutine was cancelled: by [`JoinHandle::cancel`], or by
    /// its runtime's shutdown.
    pub fn is_cancelled(&self) -> bool {
        matches!(self.0.repr, Repr::Cancelled | Repr::Shutdown { .. } | Repr::JoinerUnwinding)
    }

    /// The error that kept the coroutine from getting a stack
    /// ([`JoinErrorKind::NoStack`]), else `None`.
    pub fn stack_error(&self) -> Option<&io::Error> {
        match &self.0.repr {
            Repr::NoStack(error) => Some(error),
            _ => None,
        }
    }

    /// The id of the coroutine ([`JoinHandle::id`]).
    pub fn id(&self) -> u64 {
        self.0.id
    }

    /// The coroutine's name, if it was given one.
    pub fn name(&self) -> Option<&str> {
        self.0.name.as_deref()
    }

    /// The panic's payload, to resume the panic in the joiner with
    /// [`std::panic::resume_unwind`].
    ///
    /// # Panics
    ///
    /// If the error is not a panic ([`try_into_panic`](Self::try_into_panic)
    /// asks first).
    #[track_caller]
    pub fn into_panic(self) -> Box<dyn Any + Send + 'static> {
        self.try_into_panic()
            .unwrap_or_else(|error| panic!("JoinError::into_panic on an error that is not a panic: {error}"))
    }

    /// The panic's payload, or the error itself if it is not a panic.
    pub fn try_into_panic(self) -> Result<Box<dyn Any + Send + 'static>, JoinError> {
        match *self.0 {
            ErrorInner { repr: Repr::Panic { payload, .. }, .. } => {
                Ok(payload.into_inner().unwrap_or_else(|e| e.into_inner()))
            }
            inner => Err(JoinError(Box::new(inner))),
        }
    }
}

/// The text of a panic payload, if it is text (`panic!` with a literal gives
/// `&str`, with a format `String`).
fn payload_text(payload: &(dyn Any + Send)) -> Option<&str> {
    payload.downcast_ref::<&str>().copied().or_else(|| payload.downcast_ref::<String>().map(String::as_str))
}

impl fmt::Display for JoinError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "coroutine {}", self.0.id)?;
        if let Some(name) = &self.0.name {
            write!(f, " ('{name}')")?;
        }
        match &self.0.repr {
            Repr::Panic { text: Some(text), .. } => write!(f, " panicked: {text}"),
            Repr::Panic { text: None, .. } => write!(f, " panicked (with a payload that is not text)"),
            Repr::Cancelled => write!(f, " was cancelled"),
            Repr::Shutdown { started: true } => write!(f, " was cancelled: its runtime shut down before it finished"),
            Repr::Shutdown { started: false } => write!(f, " was cancelled: its runtime shut down before it started"),
            Repr::NoStack(error) => write!(f, " could not start: {error}"),
            Repr::JoinerUnwinding => {
                write!(f, " was not joined: the joining coroutine's runtime is shutting down and unwinding it")
            }
        }
    }
}

impl fmt::Debug for JoinError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JoinError")
            .field("id", &self.0.id)
            .field("name", &self.0.name)
            .field("kind", &self.kind())
            .field("message", &format_args!("{self}"))
            .finish()
    }
}

impl std::error::Error for JoinError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match &self.0.repr {
            Repr::NoStack(error) => Some(error),
            _ => None,
        }
    }
}

impl From<JoinError> for io::Error {
    /// A stack failure gives back its own error; anything else becomes an
    /// error of kind `Other` that carries the `JoinError`.
    fn from(error: JoinError) -> io::Error {
        match *error.0 {
            ErrorInner { repr: Repr::NoStack(error), .. } => error,
            inner => io::Error::other(JoinError(Box::new(inner))),
        }
    }
}

#[cfg(all(test, loom))]
mod loom_models {
    //! The join protocol's own code ([`Slots`]) under loom: a finisher
    //! thread racing the handle's join, timed join, or drop (see the module
    //! docs for what each model checks). The joiner is a loom thread that
    //! blocks in loom's `park`; the counts are plain std atomics (loom runs
    //! a model's threads one at a time on one OS thread, and they are
    //! read only after every thread has been joined). std's `Arc`: loom's
    //! panics when dropped while loom unwinds the failing negative controls.
    use super::{AtomicU32, Ended, RELAXED_FINISH, Slots, WAITER_AFTER_CAS, Waiter};
    use crate::loom::negative_control;
    use crate::loom::process::{AtomicUsize, Ordering::SeqCst};
    use crate::loom::thread;
    use std::sync::Arc;

    /// What happened to the result and the waiters in one execution.
    #[derive(Default)]
    struct Counts {
        results_dropped: AtomicUsize,
        waiters_made: AtomicUsize,
        waiters_dropped: AtomicUsize,
        wakes: AtomicUsize,
    }

    impl Counts {
        fn get(counter: &AtomicUsize) -> usize {
            counter.load(SeqCst)
        }
    }

    /// The coroutine's result: counts its drops.
    struct Value(u32, Arc<Counts>);

    impl Drop for Value {
        fn drop(&mut self) {
            self.1.results_dropped.fetch_add(1, SeqCst);
        }
    }

    /// A joiner's registration (the runtime's `TaskRef` clone): the loom
    /// thread to unpark; counts its wakes and its drops.
    struct Joiner {
        thread: thread::Thread,
        counts: Arc<Counts>,
    }

    impl Joiner {
        fn current(counts: &Arc<Counts>) -> Joiner {
            counts.waiters_made.fetch_add(1, SeqCst);
            Joiner { thread: thread::current(), counts: Arc::clone(counts) }
        }
    }

    impl Drop for Joiner {
        fn drop(&mut self) {
            self.counts.waiters_dropped.fetch_add(1, SeqCst);
        }
    }

    impl Waiter for Option<Joiner> {
        fn wake(self, _state: &AtomicU32) {
            let joiner = self.expect("the finisher found WAITING and an empty waiter slot");
            joiner.counts.wakes.fetch_add(1, SeqCst);
            joiner.thread.unpark();
        }
    }

    type Join = Slots<Value, Option<Joiner>>;

    /// `JoinHandle`'s bookkeeping around the protocol: the one handle of a
    /// join, which takes the result at most once and detaches when dropped
    /// without it.
    struct Handle {
        join: Arc<Join>,
        counts: Arc<Counts>,
        taken: bool,
    }

    impl Handle {
        /// `JoinHandle::join` (`timed: false`) or `join_timeout` (`true`):
        /// the finished join's fast path, else a registered wait. An
        /// untimed one parks until DONE; a timed one gives up as soon as it
        /// finds no result (loom has no clock: the deadline may pass at
        /// any point, and loom tries the give-up at each).
        fn join(&mut self, timed: bool) -> Option<Value> {
            assert!(!self.taken, "the result was taken already");
            let join = &*self.join;
            let outcome = if join.is_done() {
                // SAFETY: DONE seen with Acquire; the one handle, `taken`
                // false.
                Some(unsafe { join.take_done() })
            } else {
                let block = || {
                    if timed {
                        return if join.is_done() { Ended::Done } else { Ended::GaveUp(None) };
                    }
                    while !join.is_done() {
                        thread::park();
                    }
                    Ended::Done
                };
                // SAFETY: the one handle, `taken` false, not waiting (`&mut
                // self`).
                unsafe { join.wait(Some(Joiner::current(&self.counts)), block) }
            };
            self.taken = outcome.is_some();
            outcome
        }
    }

    impl Drop for Handle {
        fn drop(&mut self) {
            if !self.taken {
                // SAFETY: the one handle, dropped, without the result.
                unsafe { self.join.detach() };
            }
        }
    }

    /// A join, its handle, and its finisher thread completing it with 7.
    fn start() -> (Arc<Join>, Handle, thread::JoinHandle<()>) {
        let counts = Arc::new(Counts::default());
        let join = Arc::new(Join::new());
        let finisher = {
            let (join, counts) = (Arc::clone(&join), Arc::clone(&counts));
            // SAFETY: the join's one finisher, completing it once.
            thread::spawn(move || unsafe { join.complete(Value(7, counts)) })
        };
        let handle = Handle { join: Arc::clone(&join), counts, taken: false };
        (join, handle, finisher)
    }

    /// After every thread and the handle are gone: the result was dropped
    /// exactly once, every waiter made was dropped exactly once (and woken
    /// at most once), and the slots are empty.
    fn check_the_end(mut join: Arc<Join>, counts: &Counts) {
        assert_eq!(Counts::get(&counts.results_dropped), 1, "the result was not dropped exactly once");
        let made = Counts::get(&counts.waiters_made);
        assert!(made <= 2, "{made} waiters registered");
        assert_eq!(Counts::get(&counts.waiters_dropped), made, "a waiter was leaked or dropped twice");
        assert!(Counts::get(&counts.wakes) <= 1, "the joiner was woken twice");
        let join = Arc::get_mut(&mut join).expect("the handle and the finisher are gone");
        assert!(join.owns_nothing(), "a slot still holds a waiter or the result");
    }

    /// (a) An untimed join racing the finish gets the result, once, and
    /// never sleeps for ever.
    fn join_racing_the_finish() {
        let (join, mut handle, finisher) = start();
        let counts = Arc::clone(&handle.counts);
        let value = handle.join(false).expect("an untimed join always gets the result");
        assert_eq!(value.0, 7);
        drop(value);
        drop(handle);
        finisher.join().unwrap();
        check_the_end(join, &counts);
    }

    #[test]
    fn a_join_racing_the_finish_gets_the_result_once() {
        loom::model(join_racing_the_finish);
    }

    /// (b) A timed join racing the finish: the result, or its waiter taken
    /// back (never woken after that); then `then_join` joins again,
    /// untimed, or the handle is dropped.
    fn timed_join_racing_the_finish(then_join: bool) {
        let (join, mut handle, finisher) = start();
        let counts = Arc::clone(&handle.counts);
        match handle.join(true) {
            Some(value) => assert_eq!(value.0, 7),
            None => {
                // Gave up: the registration is ours again, so the finisher
                // must not have taken it (it may have finished since, on
                // RUNNING, without a look at the waiter).
                assert_eq!(Counts::get(&counts.wakes), 0, "the finisher woke a joiner that gave up");
                assert_eq!(
                    Counts::get(&counts.waiters_dropped),
                    Counts::get(&counts.waiters_made),
                    "the waiter taken back is not dropped"
                );
                if then_join {
                    let value = handle.join(false).expect("an untimed join always gets the result");
                    assert_eq!(value.0, 7);
                }
            }
        }
        drop(handle);
        finisher.join().unwrap();
        check_the_end(join, &counts);
    }

    #[test]
    fn a_timed_join_that_gives_up_leaves_the_result_to_the_drop() {
        loom::model(|| timed_join_racing_the_finish(false));
    }

    #[test]
    fn a_timed_join_that_gives_up_can_join_again() {
        loom::model(|| timed_join_racing_the_finish(true));
    }

    /// (c) The handle dropped racing the finish: the result is dropped
    /// once, by the finisher (DETACHED) or by the drop (DONE).
    #[test]
    fn a_detach_racing_the_finish_drops_the_result_once() {
        loom::model(|| {
            let (join, handle, finisher) = start();
            let counts = Arc::clone(&handle.counts);
            drop(handle);
            finisher.join().unwrap();
            assert_eq!(Counts::get(&counts.waiters_made), 0);
            check_the_end(join, &counts);
        });
    }

    /// (d) Negative control: a finisher whose swap to DONE is Relaxed
    /// publishes neither the result to the joiner nor takes the joiner's
    /// waiter with Acquire: loom must report a race on a slot.
    #[test]
    #[should_panic(expected = "Causality violation")]
    fn negative_control_a_relaxed_finish_races_on_the_slots() {
        let _broken = negative_control::break_until_dropped(RELAXED_FINISH);
        loom::model(join_racing_the_finish);
    }

    /// (d) Negative control: a joiner that writes its waiter after the CAS
    /// that publishes it races with the finisher's read of the slot (or
    /// the finisher finds it empty and the joiner sleeps for ever; loom
    /// meets the race on the slot first).
    #[test]
    #[should_panic(expected = "Causality violation")]
    fn negative_control_a_waiter_written_after_the_cas_races_on_the_slot() {
        let _broken = negative_control::break_until_dropped(WAITER_AFTER_CAS);
        loom::model(join_racing_the_finish);
    }
}
