//! Join handles: a one-shot result slot with one waiter, who is either a
//! coroutine (parked through the runtime) or an OS thread (blocked on a
//! futex on the slot's state word).
//!
//! # State word
//!
//! ```text
//!  value    meaning
//!  -------  -------------------------------------------------------------
//!  RUNNING  no result yet, nobody waiting
//!  WAITING  no result yet; `waiter` holds who to wake
//!  DONE     `result` is written; the waiter (if any) is being woken
//! ```
//!
//! The joiner writes `waiter` and then CASes RUNNING -> WAITING (Release);
//! the finisher writes `result` and swaps in DONE (AcqRel): if it saw
//! WAITING it reads `waiter` (its Acquire pairs with the joiner's Release)
//! and wakes it. The joiner reads `result` after seeing DONE with Acquire,
//! which pairs with the finisher's Release. Each side writes its field
//! before publishing it, and reads the other's only after seeing it
//! published, so the fields need no lock.
//!
//! The join state lives inside its task's allocation (see [`super::task`]);
//! a [`JoinHandle`] is a counted reference to that task.

use super::task::{self, TaskRef};
use super::{current_task, current_task_is_cancelled, park_current_task, unpark};
use crate::loom::process::UnsafeCell;
use crate::loom::process::{AtomicU32, Ordering};
use crate::sys::futex;
use std::fmt;
use std::marker::PhantomData;

const RUNNING: u32 = 0;
const WAITING: u32 = 1;
const DONE: u32 = 2;

enum Waiter {
    Task(TaskRef),
    Thread,
}

pub(crate) struct JoinState<T> {
    state: AtomicU32,
    waiter: UnsafeCell<Option<Waiter>>,
    result: UnsafeCell<Option<std::thread::Result<T>>>,
}

// SAFETY: `waiter` and `result` are each written by one side before a
// Release publication and read by the other only after the matching Acquire
// (see the module docs); T crosses threads, hence T: Send.
unsafe impl<T: Send> Send for JoinState<T> {}
// SAFETY: as above.
unsafe impl<T: Send> Sync for JoinState<T> {}

impl<T> JoinState<T> {
    pub(crate) fn new() -> JoinState<T> {
        JoinState { state: AtomicU32::new(RUNNING), waiter: UnsafeCell::new(None), result: UnsafeCell::new(None) }
    }

    /// Stores the result and wakes the joiner. Called exactly once.
    pub(crate) fn complete(&self, result: std::thread::Result<T>) {
        // SAFETY: only the finisher writes `result`, once, before publishing
        // DONE; the joiner reads it only after seeing DONE.
        unsafe { *self.result.get() = Some(result) };
        match self.state.swap(DONE, Ordering::AcqRel) {
            RUNNING => {}
            WAITING => {
                // SAFETY: the joiner wrote `waiter` before publishing WAITING,
                // which we just observed with Acquire; it never touches it again.
                match unsafe { (*self.waiter.get()).take() } {
                    Some(Waiter::Task(task)) => unpark(task),
                    Some(Waiter::Thread) => {
                        futex::wake(&self.state, u32::MAX);
                    }
                    None => unreachable!("JoinState: WAITING without a waiter"),
                }
            }
            other => panic!("JoinState: completed twice (state {other})"),
        }
    }

    pub(crate) fn is_done(&self) -> bool {
        self.state.load(Ordering::Acquire) == DONE
    }

    /// Waits for the result: parks the current coroutine, or blocks the
    /// current OS thread on the state word.
    pub(crate) fn wait(&self) -> std::thread::Result<T> {
        if !self.is_done() {
            let task = current_task();
            let waiter = match &task {
                Some(task) => Waiter::Task(task.clone()),
                None => Waiter::Thread,
            };
            // SAFETY: nobody reads `waiter` until we publish WAITING below.
            unsafe { *self.waiter.get() = Some(waiter) };
            if self.state.compare_exchange(RUNNING, WAITING, Ordering::Release, Ordering::Acquire).is_ok() {
                match task {
                    Some(_) => {
                        while !self.is_done() {
                            if current_task_is_cancelled() {
                                // Our runtime is unwinding us and this join runs in a
                                // destructor: the result may never come. The finisher
                                // will still find our registration and wake nobody.
                                return Err(Box::new(String::from(
                                    "join gave up: the joining coroutine's runtime is shutting down",
                                )));
                            }
                            park_current_task();
                        }
                    }
                    None => {
                        while self.state.load(Ordering::Acquire) != DONE {
                            futex::wait(&self.state, WAITING, None);
                        }
                    }
                }
            } else {
                // Finished meanwhile: take back the waiter we registered.
                // SAFETY: the finisher saw RUNNING, so it never reads `waiter`.
                unsafe { *self.waiter.get() = None };
            }
        }
        // SAFETY: DONE was seen with Acquire, so the finisher's write is
        // visible, and it never touches `result` again. Only the single
        // JoinHandle (consumed by join) reads it.
        unsafe { (*self.result.get()).take() }.expect("JoinState: result taken twice")
    }
}

/// An owned permission to wait for a coroutine's result, like
/// [`std::thread::JoinHandle`]. Dropping it detaches the coroutine.
pub struct JoinHandle<T> {
    /// The task whose join state holds our result: a `TaskCell<_, T>`.
    task: TaskRef,
    /// We may take a `T` out of the cell (and the cell may drop one).
    _result: PhantomData<T>,
}

// SAFETY: the handle moves a T between threads (the finisher's and the
// joiner's), hence T: Send; sharing `&JoinHandle` only allows atomic reads of
// the state word. (The same bounds the handle had as an Arc<JoinState<T>>.)
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
        JoinHandle { task, _result: PhantomData }
    }

    fn state(&self) -> &JoinState<T> {
        // SAFETY: `from_task`'s promise: the cell's result type is T.
        unsafe { task::join_state_of::<T>(self.task.as_ptr()) }
    }

    /// Waits for the coroutine to finish and returns its result; `Err`
    /// carries the panic payload if it panicked (as `std::thread` does), or
    /// an [`std::io::Error`] if it could not get a stack to start, or a
    /// `String` if its runtime shut down before it finished.
    ///
    /// From a coroutine this parks only the coroutine (its worker runs
    /// others meanwhile); from an OS thread it blocks the thread.
    pub fn join(self) -> std::thread::Result<T> {
        super::note_wait(super::ParkedOn::Join(self.task.id));
        self.state().wait()
    }

    /// Whether the coroutine has finished (`join` would not wait).
    pub fn is_finished(&self) -> bool {
        self.state().is_done()
    }

    /// The id of the coroutine (as `weft::current().id()` reports it inside).
    pub fn id(&self) -> u64 {
        self.task.id
    }
}

impl<T> fmt::Debug for JoinHandle<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JoinHandle").field("id", &self.id()).field("finished", &self.is_finished()).finish()
    }
}
