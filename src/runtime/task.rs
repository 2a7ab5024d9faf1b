//! A task: one coroutine plus what the scheduler needs to run, park and wake
//! it.
//!
//! # Ownership
//!
//! A task is shared (`Arc<Task>`) between the queue it sits in, its home
//! worker's registry of started tasks, and whoever may wake it (a join
//! waiter, a timer, a lock's wait list). The coroutine inside is not shared:
//!
//! - before it starts, only the thread that popped the task from a queue
//!   touches it (queues hand out tasks exclusively), and a task may move
//!   between threads (stealing);
//! - once started, only its home worker thread touches it (DESIGN.md
//!   decision 3): wakes from anywhere go to that worker's inbox.
//!
//! That is the contract that makes `Task: Send + Sync` sound although the
//! coroutine is `!Send`.

use crate::coroutine::{Coroutine, Yielder};
use crate::loom::process::{AtomicPtr, AtomicU64, AtomicUsize, Ordering, UnsafeCell};
use crate::park::ParkState;
use std::any::Any;
use std::cell::Cell;
use std::ptr;
use std::sync::Arc;

/// What a task's coroutine tells its worker when it switches out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Switch {
    /// `yield_now`: run me again after the others that are ready.
    Yield,
    /// Parked: someone holds a reference and will wake me.
    Park,
}

/// The coroutine type every task runs: resumed with `()`, it reports why it
/// switched out, and returns nothing (its result goes to its join state).
pub(crate) type TaskCoroutine = Coroutine<(), Switch, ()>;

/// Who completes a task's join handle when the task cannot even start.
pub(crate) trait Completion: Send + Sync {
    /// Ends the join handle with `payload` as the `Err` of `join()`.
    fn fail(&self, payload: Box<dyn Any + Send>);
}

/// No worker yet (not started).
pub(crate) const NO_HOME: usize = usize::MAX;

static NEXT_TASK_ID: AtomicU64 = AtomicU64::new(1);

/// A fresh process-unique task id.
pub(crate) fn next_id() -> u64 {
    NEXT_TASK_ID.fetch_add(1, Ordering::Relaxed)
}

pub(crate) struct Task {
    pub(crate) id: u64,
    pub(crate) name: Option<String>,
    pub(crate) park: ParkState,
    /// The worker that first ran it; `NO_HOME` before. Written once by that
    /// worker before the first resume, read by wakers (Acquire/Release pair:
    /// a waker can only hold the task after it was published by a park,
    /// whose Release in `ParkState` orders this store before it).
    home: AtomicUsize,
    /// Link of the intrusive inbox stack (see `worker::Inbox`).
    pub(crate) next_in_inbox: AtomicPtr<Task>,
    /// The coroutine; see the module docs for who may touch it.
    coroutine: UnsafeCell<Option<TaskCoroutine>>,
    /// The coroutine's yielder, set by the coroutine itself when it starts.
    yielder: Cell<*const Yielder<(), Switch>>,
    /// Index in the home worker's registry of started tasks.
    pub(crate) registry_slot: Cell<usize>,
    /// Set by the home worker while it unwinds this task at shutdown: its
    /// destructors then must not suspend (see `runtime::park_current_task`).
    pub(crate) unwinding: Cell<bool>,
    pub(crate) completion: Arc<dyn Completion>,
    /// The runtime it belongs to (for `weft::spawn` from inside it).
    pub(crate) runtime: std::sync::Weak<super::Shared>,
}

// SAFETY: see the module docs: the !Send/!Sync fields (the coroutine, its
// yielder pointer, the registry slot) are only touched by the one thread that
// owns the task at the time — the popper of an unstarted task, then forever
// its home worker. Everything else is atomic or immutable.
unsafe impl Send for Task {}
// SAFETY: as above.
unsafe impl Sync for Task {}

impl Task {
    pub(crate) fn new(
        name: Option<String>,
        coroutine: TaskCoroutine,
        completion: Arc<dyn Completion>,
        runtime: std::sync::Weak<super::Shared>,
    ) -> Arc<Task> {
        Arc::new(Task {
            id: next_id(),
            name,
            park: ParkState::new(),
            home: AtomicUsize::new(NO_HOME),
            next_in_inbox: AtomicPtr::new(ptr::null_mut()),
            coroutine: UnsafeCell::new(Some(coroutine)),
            yielder: Cell::new(ptr::null()),
            registry_slot: Cell::new(usize::MAX),
            unwinding: Cell::new(false),
            completion,
            runtime,
        })
    }

    pub(crate) fn home(&self) -> usize {
        self.home.load(Ordering::Acquire)
    }

    pub(crate) fn set_home(&self, worker: usize) {
        self.home.store(worker, Ordering::Release);
    }

    /// The coroutine, for resuming or dropping it.
    ///
    /// # Safety
    ///
    /// - The caller is the task's owner in the sense of the module docs (the
    ///   popper of an unstarted task, or its home worker) and holds no other
    ///   reference obtained from this method.
    #[allow(clippy::mut_from_ref)]
    pub(crate) unsafe fn coroutine_mut(&self) -> &mut Option<TaskCoroutine> {
        // SAFETY: exclusive by the caller's promise.
        unsafe { &mut *self.coroutine.get() }
    }

    /// Records the yielder; called by the coroutine when it starts.
    pub(crate) fn set_yielder(&self, yielder: &Yielder<(), Switch>) {
        self.yielder.set(yielder);
    }

    /// Switches the running task out, telling its worker why.
    ///
    /// # Safety
    ///
    /// - Called on this task's own coroutine stack, while it runs (the
    ///   yielder was recorded at its start and lives on that stack).
    #[inline] // into `yield_now`, itself inline: see there
    pub(crate) unsafe fn switch_out(&self, why: Switch) {
        let yielder = self.yielder.get();
        debug_assert!(!yielder.is_null(), "task {} switched out before it started", self.id);
        // SAFETY: the yielder lives at the base of this running coroutine's
        // stack for as long as it runs (the caller's promise).
        unsafe { (*yielder).suspend(why) };
    }
}

impl std::fmt::Debug for Task {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Task").field("id", &self.id).field("name", &self.name).finish_non_exhaustive()
    }
}
