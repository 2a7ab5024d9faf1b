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

use super::task::{self, TaskRef};
use super::{current_task, current_task_is_unwinding, disarm_timer, park_current_task, unpark, wake_at};
use crate::loom::process::UnsafeCell;
use crate::loom::process::{AtomicU32, Ordering};
use crate::sys::futex::{self, Deadline};
use std::any::Any;
use std::cell::Cell;
use std::fmt;
use std::io;
use std::marker::PhantomData;
use std::ptr;
use std::time::Duration;

const RUNNING: u32 = 0;
const WAITING: u32 = 1;
const DONE: u32 = 2;
const DETACHED: u32 = 3;

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

pub(crate) struct JoinState<T> {
    state: AtomicU32,
    /// Who waits, while the state is WAITING: the coroutine to wake, or
    /// `None` for an OS thread, which blocks on the state word itself.
    /// (Not an enum of the two: a `TaskRef`'s one niche holds `None`, and
    /// the word is all a cell's join state spends on it.)
    waiter: UnsafeCell<Option<TaskRef>>,
    result: UnsafeCell<Option<Outcome<T>>>,
}

// SAFETY: `waiter` and `result` are each written by one side before a
// Release publication and read by the other only after the matching Acquire
// (see the module docs); T crosses threads, hence T: Send. A `Failure`'s
// payload is `Send`.
unsafe impl<T: Send> Send for JoinState<T> {}
// SAFETY: as above.
unsafe impl<T: Send> Sync for JoinState<T> {}

impl<T> JoinState<T> {
    pub(crate) fn new() -> JoinState<T> {
        JoinState { state: AtomicU32::new(RUNNING), waiter: UnsafeCell::new(None), result: UnsafeCell::new(None) }
    }

    /// Stores the result and wakes the joiner. Called exactly once.
    /// Inline: the end of every coroutine, where the joiner is usually not
    /// waiting yet (one swap); waking one is the out-of-line part.
    #[inline]
    pub(crate) fn complete(&self, result: Outcome<T>) {
        // SAFETY: only the finisher writes `result`, once, before publishing
        // DONE; the joiner reads it only after seeing DONE. It holds `None`
        // until now (nothing to drop), so it is overwritten without a drop.
        unsafe { self.result.get().write(Some(result)) };
        // AcqRel: Release publishes `result` to the joiner's Acquire load of
        // DONE; Acquire pairs with the joiner's Release CAS to WAITING, after
        // which its `waiter` is ours to read.
        let previous = self.state.swap(DONE, Ordering::AcqRel);
        if previous != RUNNING {
            self.wake_joiner(previous);
        }
    }

    /// `complete`'s slow path: `previous` is the state it replaced.
    #[cold]
    #[inline(never)]
    fn wake_joiner(&self, previous: u32) {
        if previous == DETACHED {
            // SAFETY: the handle is gone (it published DETACHED, which our
            // swap read), so nobody else will ever read `result`.
            let result = unsafe { (*self.result.get()).take() };
            drop_unjoined(result);
            return;
        }
        assert!(previous == WAITING, "JoinState: completed twice (state {previous})");
        // SAFETY: the joiner wrote `waiter` before publishing WAITING, which
        // `complete` observed with Acquire; it never touches it again (its
        // CAS back to RUNNING can no longer succeed).
        match unsafe { (*self.waiter.get()).take() } {
            Some(task) => unpark(task),
            None => {
                futex::wake(&self.state, u32::MAX);
            }
        }
    }

    /// The handle goes without having taken the result: a result that is
    /// there is dropped now, one still to come when it comes (see the
    /// module docs).
    fn detach(&self) {
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
                let result = unsafe { (*self.result.get()).take() };
                drop_unjoined(result);
            }
            Err(other) => unreachable!("JoinState: a handle dropped in state {other}"),
        }
    }

    /// Whether the state owns nothing (no waiter, no result): so after a
    /// join took the result, the usual end of a cell, whose drop can then
    /// skip this state's. Only for the last owner of the cell.
    #[inline]
    pub(crate) fn owns_nothing(&mut self) -> bool {
        self.waiter.get_mut().is_none() && self.result.get_mut().is_none()
    }

    pub(crate) fn is_done(&self) -> bool {
        self.state.load(Ordering::Acquire) == DONE
    }

    /// Waits for the result until `deadline` (for ever if `None`): parks the
    /// current coroutine, or blocks the current OS thread on the state word.
    /// `None` when the deadline passed first (the result stays for a later
    /// wait). Only the single join handle calls it, never twice at once;
    /// `id` is the coroutine's whose result this is, which a parked joiner
    /// names for the dump (only where it may park: the join of a finished
    /// coroutine, the common case, skips the stores).
    pub(crate) fn wait(&self, deadline: Option<Deadline>, id: u64) -> Option<Outcome<T>> {
        if !self.is_done() {
            super::note_wait(super::ParkedOn::Join(id));
            let task = current_task();
            // SAFETY: nobody reads `waiter` until we publish WAITING below.
            unsafe { *self.waiter.get() = task.clone() };
            if self.state.compare_exchange(RUNNING, WAITING, Ordering::Release, Ordering::Acquire).is_ok() {
                let ended = match &task {
                    Some(task) => {
                        // A cancel (or the runtime's shutdown) unwinds the
                        // coroutine out of its park: the guard takes the
                        // registration back, so that the handle, if it
                        // outlives this coroutine, can be joined again.
                        let guard = TakeBackOnUnwind(self);
                        let ended = self.wait_as_task(task, deadline);
                        std::mem::forget(guard);
                        ended
                    }
                    None => self.wait_as_thread(deadline),
                };
                match ended {
                    Ended::Done => {}
                    Ended::GaveUp(why) => {
                        // Take the registration back, unless the finisher
                        // has just swapped in DONE (then the result is here).
                        // Acquire: on failure we read `result`, published by
                        // the finisher's Release swap.
                        if self.state.compare_exchange(WAITING, RUNNING, Ordering::Acquire, Ordering::Acquire).is_ok() {
                            // SAFETY: the finisher has not swapped yet and
                            // will see RUNNING: it never reads `waiter` now.
                            unsafe { *self.waiter.get() = None };
                            return why;
                        }
                    }
                }
            } else {
                // Finished meanwhile: take back the waiter we registered.
                // SAFETY: the finisher saw RUNNING, so it never reads `waiter`.
                unsafe { *self.waiter.get() = None };
            }
        }
        // SAFETY: DONE was seen with Acquire; the caller is the single
        // JoinHandle, taking the result once (`JoinHandle::taken`).
        Some(unsafe { self.take_done() })
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
        // SAFETY: the caller's promises: nobody else reads or writes it.
        unsafe { (*self.result.get()).take() }.expect("JoinState: result taken twice")
    }

    /// The coroutine's half of [`wait`](Self::wait), registered as WAITING.
    fn wait_as_task(&self, task: &TaskRef, deadline: Option<Deadline>) -> Ended<T> {
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
            // (A cancel of this coroutine unwinds from here: `wait`'s guard
            // takes the registration back, and its worker disarms the
            // timer.)
            park_current_task();
        };
        if deadline.is_some() {
            disarm_timer();
        }
        ended
    }

    /// The OS thread's half of [`wait`](Self::wait), registered as WAITING.
    fn wait_as_thread(&self, deadline: Option<Deadline>) -> Ended<T> {
        while self.state.load(Ordering::Acquire) != DONE {
            if !futex::wait(&self.state, WAITING, deadline) {
                return Ended::GaveUp(None);
            }
        }
        Ended::Done
    }
}

/// Takes a joining coroutine's registration back when it is unwound out of
/// its wait (cancelled, or unwound at shutdown), as a wait that gave up
/// does: left WAITING with a waiter that is gone, the state would make the
/// handle's next join take a result that is not there, and the finisher
/// wake a task that no longer waits.
struct TakeBackOnUnwind<'a, T>(&'a JoinState<T>);

impl<T> Drop for TakeBackOnUnwind<'_, T> {
    fn drop(&mut self) {
        // Acquire, as in `wait`'s give-up: unless the finisher swapped in
        // DONE first (then the result stays for the next join, and the
        // finisher took the waiter).
        if self.0.state.compare_exchange(WAITING, RUNNING, Ordering::Acquire, Ordering::Acquire).is_ok() {
            // SAFETY: the finisher has not swapped yet and will see RUNNING:
            // it never reads `waiter` now.
            unsafe { *self.0.waiter.get() = None };
        }
    }
}

/// Drops a result nobody will take. A destructor that panics must not
/// unwind whoever drops it (a worker, a pool thread, a coroutine's end):
/// the panic hook has reported it, as for the cell's free.
fn drop_unjoined<T>(result: Option<Outcome<T>>) {
    if result.is_some() {
        let result = std::panic::AssertUnwindSafe(result);
        let _ = std::panic::catch_unwind(move || drop({ result }.0));
    }
}

/// How a registered wait ended.
enum Ended<T> {
    Done,
    /// Before the result came: `None` for a timeout, else what to return.
    GaveUp(Option<Outcome<T>>),
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
        let outcome = self.state().wait(deadline, self.task.id)?;
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
    /// one that runs is not interrupted (its OS thread runs it to the end).
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
            self.state().detach();
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
