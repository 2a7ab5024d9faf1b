//! A task: one coroutine plus what the scheduler needs to run, park and wake
//! it, and the join slot its result goes to — all in one allocation.
//!
//! # Layout: one allocation per spawn
//!
//! ```text
//!  TaskCell<B, T>  (repr(C))
//!  +-------------------------------+ <- TaskRef points here (a thin pointer)
//!  | Task: the header              |    reference count, vtable, id, name,
//!  |   .vtable --> VTABLE of <B, T>|    park state, home, the coroutine, ...
//!  +-------------------------------+ <- JoinHandle<T> reads here: the offset
//!  | JoinState<T>                  |    depends on T only, never on B
//!  |   state word, waiter, result  |
//!  +-------------------------------+
//!  | B: the coroutine's body       |    moved onto the coroutine's stack at
//!  |   (the user's closure inside) |    its first resume (or dropped in place
//!  +-------------------------------+    if it never starts)
//! ```
//!
//! The scheduler sees only the header, through [`TaskRef`], our own
//! reference-counted thin pointer (an `Arc` cannot free memory it did not
//! lay out). What depends on `B` and `T` — failing the join handle of a task
//! that cannot run, freeing the cell — goes through the header's vtable, as
//! tokio's `RawTask` does. A spawn thus makes one heap allocation, where it
//! used to make three (`Arc<JoinState<T>>`, the boxed closure, `Arc<Task>`).
//! `spawn_blocking` uses the same cell without a coroutine or body, so every
//! [`JoinHandle`](super::JoinHandle) has one representation.
//!
//! The price: a join handle keeps the whole cell (the 224-byte header, the
//! join state — 32 bytes for a `()` or `u64` result — and the body) alive
//! until it is joined or dropped, where a separate join state would keep
//! 64 bytes and free the rest when the task finishes. Spawning 100 000 and then
//! joining them peaks at ~31 MiB of RSS this way. The two-allocation layout
//! was tried (commit "Experiment: join state back in its own Arc") and
//! measured slower — 1881 instructions per spawn+join against 1254, most of
//! the difference glibc's handling of the mixed chunk sizes — and its peak
//! RSS varied with scheduling (14-32 MiB) rather than staying low.
//!
//! So the header is kept small: what most tasks never use costs a word
//! (the task-locals are boxed at their first use), names are boxed `str`s,
//! the small fields share one word. It was 304 bytes, which put an empty
//! task's cell in the 384-byte size class; at 256 it is in the 320-byte
//! class, and a parked coroutine's RSS went from 4.46 to 4.40 KiB. The join
//! state then went from 48 to 32 bytes (its waiter one word, a panic's
//! payload behind a thin pointer), which put an empty task's cell in the
//! 288-byte class: a spawn+join of 100 000 on one worker took about a
//! twelfth less time (each phase of such a burst streams its cells through
//! the caches, so its time follows their size: a closure of 64 bytes more,
//! one class up, took a sixth longer). And the task's coroutine is a
//! `CoroutineCore` (72 bytes), without the id, name and spawn site that a
//! standalone `Coroutine` carries and the task holds already: the header is
//! 224 bytes, and an empty task's cell 256, in the 256-byte class (spawn+join
//! of 100 000 on 2 workers about 8 % faster again, side by side).
//!
//! Cells come from a per-thread cache of freed cells (`cell_cache`: at most
//! 1 MiB per thread, and on a worker thread up to 64 MiB, kept while it is
//! used): a spawn tree reuses them, and so does every burst of spawns after
//! the first. New cells are carved from blocks that the cache maps itself
//! (a pointer bump, not a `malloc`).
//!
//! # Ownership
//!
//! A task is shared (`TaskRef`) between the queue it sits in, its home
//! worker's registry of suspended tasks, its join handle, and whoever may
//! wake it (a join waiter, a timer, a lock's wait list). The coroutine and the
//! body inside are not shared:
//!
//! - before it starts, only the thread that popped the task from a queue
//!   touches them (queues hand out tasks exclusively), and a task may move
//!   between threads (stealing);
//! - once started, only its home worker thread touches them (DESIGN.md
//!   decision 3): wakes from anywhere go to that worker's inbox.
//!
//! That is the contract that makes `Task: Send + Sync` sound although the
//! coroutine is `!Send`.
//!
//! # Reference count
//!
//! As `Arc`'s: a new reference is made from an existing one, so cloning
//! needs no ordering (Relaxed); dropping is a Release decrement, and the
//! holder of the last reference fences with Acquire before it frees the
//! cell, which pairs with every other holder's Release decrement: all their
//! uses of the cell happen before the free. A new cell starts with two
//! references, its queue's and its join handle's.

use super::dump::ParkedOn;
use super::join::{Failure, JoinState};
use crate::coroutine::{self, CoroutineCore, Yielder};
use crate::loom::process::{AtomicBool, AtomicPtr, AtomicUsize, Ordering, UnsafeCell, fence};
use crate::park::ParkState;
use crate::sys::futex::Deadline;
use std::alloc::Layout;
use std::cell::Cell;
use std::mem::{ManuallyDrop, MaybeUninit};
use std::ops::Deref;
use std::panic::{self, AssertUnwindSafe, Location};
use std::ptr::{self, NonNull};
use std::sync::{Arc, Weak};

/// What a task's coroutine tells its worker when it switches out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Switch {
    /// `yield_now`: run me again after the others that are ready.
    Yield,
    /// Parked: someone holds a reference and will wake me.
    Park,
}

/// The coroutine type every task runs: resumed with `()`, suspending with
/// `()`, returning nothing (its result goes to its join state). Why it
/// switched out is in its task's `switched_for`: a coroutine whose resumes
/// carry nothing skips the exchange altogether (see `coroutine`). A core
/// without a name: the task's id, name and spawn site are the task's own
/// fields, and its first run names the stack by them (`Task::owner`).
pub(crate) type TaskCoroutine = CoroutineCore<(), (), ()>;

/// No worker yet (not started).
pub(crate) const NO_HOME: usize = usize::MAX;

/// `Task::registry_slot` of a task that is in no worker's registry.
pub(crate) const NOT_REGISTERED: u32 = u32::MAX;

/// `Task::timer_entry` of a task that has no entry in its worker's timer
/// heap (timer sequence numbers count up from 0 and never reach it).
pub(crate) const NO_TIMER: u64 = u64::MAX;

/// A fresh process-unique task id (shared with plain coroutines' ids, so a
/// green thread's coroutine carries its task's id).
#[inline]
pub(crate) fn next_id() -> u64 {
    coroutine::next_id()
}

/// More references than this is a leak of `TaskRef`s gone wrong (as in
/// `Arc`, which aborts at the same bound rather than risk an overflow).
const MAX_REFS: usize = isize::MAX as usize;

/// The parts of a task that depend on its body and result types.
struct TaskVtable {
    /// Ends the task's join handle with `failure` (its `join()` error).
    fail: unsafe fn(*const Task, Failure),
    /// Whether the task's join handle has its result.
    is_finished: unsafe fn(*const Task) -> bool,
    /// Drops what the cell still holds and frees it.
    dealloc: unsafe fn(NonNull<Task>),
}

/// The header of every task cell; see the module docs.
pub(crate) struct Task {
    /// How many `TaskRef`s point here (see the module docs).
    refs: AtomicUsize,
    vtable: &'static TaskVtable,
    pub(crate) id: u64,
    pub(crate) name: Option<Box<str>>,
    /// Where it was spawned (for the monitor's reports and `Runtime::dump`).
    pub(crate) spawned_at: &'static Location<'static>,
    pub(crate) park: ParkState,
    /// The worker that first ran it; `NO_HOME` before. Written once by that
    /// worker before the first resume, read by wakers: first to ask whether
    /// the waker runs on the home worker (compared with the current
    /// worker's index only, so a stale `NO_HOME` seen on another thread
    /// just sends the wake the remote way), then on another thread after
    /// `ParkState`'s `claim_delivery`, whose Acquire reads the Release of
    /// the start's `end_delivery`, made after this store.
    home: AtomicUsize,
    /// Link of the intrusive inbox stack (see `worker::Inbox`).
    pub(crate) next_in_inbox: AtomicPtr<Task>,
    /// The coroutine; see the module docs for who may touch it. Finished
    /// (and owning nothing) in a `spawn_blocking` cell, and once it has
    /// returned or been ended (`CoroutineCore::end`). Not an `Option`: a resume
    /// of a started task tests only that its coroutine is suspended.
    coroutine: UnsafeCell<TaskCoroutine>,
    /// Why its coroutine last switched out: written by the task just before
    /// it suspends, read by its worker right after; both on its home
    /// worker's thread.
    pub(crate) switched_for: Cell<Switch>,
    /// The coroutine's yielder, set by the coroutine itself when it starts.
    yielder: Cell<*const Yielder<(), ()>>,
    /// Index in the home worker's registry of suspended tasks, or
    /// `NOT_REGISTERED`.
    pub(crate) registry_slot: Cell<u32>,
    /// Set by the home worker while it unwinds this task at shutdown: its
    /// destructors then must not suspend (see `runtime::park_current_task`).
    pub(crate) unwinding: Cell<bool>,
    /// Spawned with `Builder::same_worker` and not yet taken off its
    /// spawner's worker's run queue (started, failed or dropped as
    /// cancelled): counted in that worker's `pinned_unstarted`. Set by the
    /// spawner, which runs on that worker, before the task is queued;
    /// cleared there. Only that worker's thread touches it while it is set.
    pub(crate) pinned: Cell<bool>,
    /// `JoinHandle::cancel` was called: set once, by any thread (Release,
    /// before the wake that makes the task look: see `runtime::cancel`).
    cancel_requested: AtomicBool,
    /// The task began its cancellation's unwind (it is not begun twice).
    /// Touched only by the task itself, on its home worker's thread.
    pub(crate) cancel_begun: Cell<bool>,
    /// The task's `task_local!` values; touched only by the task itself,
    /// on its home worker's thread (see `runtime::task_local`).
    pub(crate) locals: UnsafeCell<super::task_local::Locals>,
    /// The sequence number of this task's current entry in its home
    /// worker's timer heap, or `NO_TIMER`; any other entry of the task there
    /// is stale. See "Timers" in `worker`. This and the next two fields are
    /// touched only by the home worker (its timers, and the task itself
    /// while it runs there).
    pub(crate) timer_entry: Cell<u64>,
    /// Whether a timed park of this task is under way: its current entry
    /// may wake it (it is *armed*).
    pub(crate) timer_armed: Cell<bool>,
    /// The deadline of this task's latest timed park (`Deadline::ORIGIN`
    /// before its first: a task with a current entry has had one). The
    /// current entry's own deadline is never later.
    pub(crate) timer_deadline: Cell<Deadline>,
    /// The runtime it belongs to, through its spawner's anchor (for
    /// `weft::spawn` from inside it, and for wakes from other threads).
    pub(crate) runtime: Arc<Anchor>,
    /// What its latest park waits on, named by the parker just before it
    /// parks (`runtime::note_wait`); meaningful while it is parked. Touched
    /// only by the home worker's thread (the task itself, and the dump's
    /// collection there), like the timer fields.
    pub(crate) waiting_on: Cell<ParkedOn>,
    /// When it entered its current state, on its worker's coarse clock
    /// (`runtime::clock`): spawned, or parked (yields are not stamped).
    /// Written by its creator before it is queued, then only on its home
    /// worker's thread.
    pub(crate) since: Cell<u64>,
}

// SAFETY: see the module docs: the !Send/!Sync fields (the coroutine, its
// yielder pointer, the park word's state, the registry slot, the unwinding and cancel-begun flags,
// the task-locals, the timer fields) are only touched by the one thread that
// owns the task at the time — the popper of an unstarted task, then forever
// its home worker. The `pinned` flag is written before the task is
// published and, while set, touched only by its spawner's worker, the only
// one that can pop it. Everything else is atomic or immutable. (The task-locals
// may hold values that are not `Send`: they are made and dropped by the
// coroutine itself, on its home worker; `Locals` leaks rather than drops
// what is left when the cell is freed elsewhere.)
unsafe impl Send for Task {}
// SAFETY: as above.
unsafe impl Sync for Task {}

// A task's header sets the size class of every cell (see "Layout" above):
// a field added here should pay for itself. (loom's atomics are larger.)
#[cfg(not(loom))]
const _: () = assert!(std::mem::size_of::<Task>() <= 224, "the task header grew past 224 bytes");

/// The part of a cell that does not depend on the body type: what a
/// `JoinHandle<T>` may read.
#[repr(C)]
struct CellHead<T> {
    task: Task,
    join: JoinState<T>,
}

/// One task's allocation; see the module docs.
#[repr(C)]
struct TaskCell<B, T> {
    head: CellHead<T>,
    /// Owned by the coroutine (`CoroutineCore::with_closure_in_place`); never
    /// initialised in a `spawn_blocking` cell.
    body: UnsafeCell<MaybeUninit<B>>,
}

impl<B, T: Send> TaskCell<B, T> {
    const VTABLE: TaskVtable = TaskVtable { fail: Self::fail, is_finished: Self::is_finished, dealloc: Self::dealloc };

    /// Allocates the memory of a cell, uninitialised.
    fn allocate() -> NonNull<TaskCell<B, T>> {
        super::cell_cache::allocate(Layout::new::<TaskCell<B, T>>()).cast::<TaskCell<B, T>>()
    }

    /// Initialises the head of a cell from [`allocate`](Self::allocate),
    /// with two references. Field by field, in place: building the ~300
    /// bytes on the stack and copying them showed up as a `memcpy` per
    /// spawn.
    ///
    /// # Safety
    ///
    /// `cell` came from `allocate` and its head is not initialised yet;
    /// `coroutine`, unless finished, owns the cell's body (initialised by the
    /// caller).
    unsafe fn init_head(
        cell: NonNull<TaskCell<B, T>>,
        id: u64,
        name: Option<Box<str>>,
        spawned_at: &'static Location<'static>,
        coroutine: TaskCoroutine,
        runtime: Arc<Anchor>,
    ) {
        // SAFETY: fresh memory of the right layout (the caller's promise);
        // each field is written once, none is read.
        unsafe {
            let task = &raw mut (*cell.as_ptr()).head.task;
            (&raw mut (*task).refs).write(AtomicUsize::new(2));
            (&raw mut (*task).vtable).write(&Self::VTABLE);
            (&raw mut (*task).id).write(id);
            (&raw mut (*task).name).write(name);
            (&raw mut (*task).spawned_at).write(spawned_at);
            (&raw mut (*task).park).write(ParkState::new());
            (&raw mut (*task).home).write(AtomicUsize::new(NO_HOME));
            (&raw mut (*task).next_in_inbox).write(AtomicPtr::new(ptr::null_mut()));
            (&raw mut (*task).coroutine).write(UnsafeCell::new(coroutine));
            (&raw mut (*task).switched_for).write(Cell::new(Switch::Yield));
            (&raw mut (*task).yielder).write(Cell::new(ptr::null()));
            (&raw mut (*task).registry_slot).write(Cell::new(NOT_REGISTERED));
            (&raw mut (*task).unwinding).write(Cell::new(false));
            (&raw mut (*task).pinned).write(Cell::new(false));
            (&raw mut (*task).cancel_requested).write(AtomicBool::new(false));
            (&raw mut (*task).cancel_begun).write(Cell::new(false));
            (&raw mut (*task).locals).write(UnsafeCell::new(super::task_local::Locals::new()));
            (&raw mut (*task).timer_entry).write(Cell::new(NO_TIMER));
            (&raw mut (*task).timer_armed).write(Cell::new(false));
            (&raw mut (*task).timer_deadline).write(Cell::new(Deadline::ORIGIN));
            (&raw mut (*task).runtime).write(runtime);
            (&raw mut (*task).waiting_on).write(Cell::new(ParkedOn::Other));
            (&raw mut (*task).since).write(Cell::new(super::clock::coarse_or_now()));
            (&raw mut (*cell.as_ptr()).head.join).write(JoinState::new());
        }
    }

    /// # Safety
    ///
    /// `task` points at the header of a live `TaskCell<_, T>` (the vtable's
    /// own type), with the whole cell's provenance; nothing else completes
    /// the task's join state, now or later (it never ran and never will, or
    /// its coroutine was left before its end), and this is its one failure.
    unsafe fn fail(task: *const Task, failure: Failure) {
        // SAFETY: the caller's promises.
        unsafe { join_state_of::<T>(task).complete(Err(failure)) };
    }

    /// # Safety
    ///
    /// As for [`fail`](Self::fail).
    unsafe fn is_finished(task: *const Task) -> bool {
        // SAFETY: the caller's promise.
        unsafe { join_state_of::<T>(task) }.is_done()
    }

    /// # Safety
    ///
    /// `task` is the header of a `TaskCell<B, T>` whose last reference was
    /// just dropped (the caller fenced with Acquire): nobody else uses it.
    unsafe fn dealloc(task: NonNull<Task>) {
        let cell = task.cast::<TaskCell<B, T>>();
        // The head is dropped field by field, as its drop glue would, but
        // inline (the pattern names every field, so a new one cannot be
        // forgotten). Dropping the task drops the coroutine, which drops the
        // body in place if it never started (a finished one owns nothing);
        // `body` itself is a MaybeUninit. Then the memory goes back to the
        // cell cache it came from (`allocate`), with its layout.
        // SAFETY: the caller's promise; the header is first in the cell
        // (repr(C)); nothing touches the head after its fields are dropped.
        unsafe {
            let CellHead { task, join } = &mut (*cell.as_ptr()).head;
            task.drop_fields();
            // A joined cell's join state owns nothing: no call to drop it.
            // Otherwise it holds a result (or a panic's payload) nobody
            // joined, and whoever drops the last reference drops it: a
            // worker, a pool thread, a waker. A destructor that panics there
            // must not unwind that thread (a worker's other coroutines would
            // be lost with it); the panic hook has reported it, as it does
            // for a panicking closure or task-local.
            if !join.owns_nothing() {
                let join = AssertUnwindSafe(join);
                let _ = panic::catch_unwind(move || ptr::drop_in_place({ join }.0));
            }
            super::cell_cache::free(cell.cast(), Layout::new::<TaskCell<B, T>>());
        }
    }
}

impl Task {
    /// Drops every field in place, as dropping the task does, but inline:
    /// the task's drop glue, a call per freed cell, had little to do (a
    /// finished coroutine's drop is a few tests, the task-locals are
    /// empty) besides the runtime's count. The pattern names every field,
    /// so a new one cannot be forgotten; those without drop glue cost
    /// nothing.
    ///
    /// # Safety
    ///
    /// The task is not used afterwards, not even dropped (its memory is
    /// freed as it is, `TaskCell::dealloc`).
    #[inline(always)]
    unsafe fn drop_fields(&mut self) {
        let Task {
            refs,
            vtable,
            id,
            name,
            spawned_at,
            park,
            home,
            next_in_inbox,
            coroutine,
            switched_for,
            yielder,
            registry_slot,
            unwinding,
            pinned,
            cancel_requested,
            cancel_begun,
            locals,
            timer_entry,
            timer_armed,
            timer_deadline,
            runtime,
            waiting_on,
            since,
        } = self;
        // The coroutine goes first: while its stack is claimed (a started
        // coroutine not yet finished or ended), the claim names it by `name`.
        // SAFETY: each field is dropped once, here; the caller's promise
        // keeps anyone from using or dropping them again.
        unsafe {
            ptr::drop_in_place(coroutine);
            ptr::drop_in_place(refs);
            ptr::drop_in_place(vtable);
            ptr::drop_in_place(id);
            ptr::drop_in_place(name);
            ptr::drop_in_place(spawned_at);
            ptr::drop_in_place(park);
            ptr::drop_in_place(home);
            ptr::drop_in_place(next_in_inbox);
            ptr::drop_in_place(switched_for);
            ptr::drop_in_place(yielder);
            ptr::drop_in_place(registry_slot);
            ptr::drop_in_place(unwinding);
            ptr::drop_in_place(pinned);
            ptr::drop_in_place(cancel_requested);
            ptr::drop_in_place(cancel_begun);
            ptr::drop_in_place(locals);
            ptr::drop_in_place(timer_entry);
            ptr::drop_in_place(timer_armed);
            ptr::drop_in_place(timer_deadline);
            ptr::drop_in_place(runtime);
            ptr::drop_in_place(waiting_on);
            ptr::drop_in_place(since);
        }
    }
}

/// The join state of the task whose header `task` points at.
///
/// A raw pointer, not `&Task`: the join state lies past the header, and a
/// reference to the header grants access to the header's bytes only. The
/// pointers that reach here (`TaskRef`'s, `CURRENT_TASK`) come from the
/// cell's allocation and cover all of it.
///
/// # Safety
///
/// - `task` points at the header of a `TaskCell<_, T>` (the `T` its creator
///   chose), with the whole cell's provenance;
/// - the cell stays alive for `'a`.
pub(crate) unsafe fn join_state_of<'a, T>(task: *const Task) -> &'a JoinState<T> {
    let head = task.cast::<CellHead<T>>();
    // SAFETY: a TaskCell<B, T> starts with a CellHead<T> (repr(C)), which
    // starts with the Task; its offset of `join` does not depend on B. Alive
    // for 'a by the caller's promise.
    unsafe { &(*head).join }
}

/// Creates a task that will run `body` as its coroutine, and whose result,
/// of type `T`, `body` hands to its join state. Returns two references to
/// it: one for a queue, one for the join handle.
///
/// `body` finds its task through `CURRENT_TASK` (see `spawn_on`).
/// Inline: its one caller on a coroutine's spawn path (`spawn_on`) would
/// otherwise pass six arguments through a call and save as many registers.
#[inline(always)]
pub(crate) fn new_task<B, T>(
    name: Option<String>,
    stack_size: usize,
    spawned_at: &'static Location<'static>,
    body: B,
    runtime: Arc<Anchor>,
) -> (TaskRef, TaskRef)
where
    B: FnOnce(&Yielder<(), ()>, ()) + Send + 'static,
    T: Send + 'static,
{
    let id = next_id();
    let name = name.map(String::into_boxed_str);
    let cell = TaskCell::<B, T>::allocate();
    // The body is written before the coroutine that owns it exists, and
    // stays in place until the cell is freed, which is after the coroutine
    // is dropped (it lives in the same cell's head, dropped first by
    // `dealloc`). From now on only the coroutine touches the body.
    // SAFETY: `cell` is fresh and ours alone; the body outlives its owner.
    unsafe {
        let body_at = (&raw mut (*cell.as_ptr()).body).cast::<B>();
        body_at.write(body);
        let coroutine = TaskCoroutine::with_closure_in_place(body_at, stack_size);
        TaskCell::init_head(cell, id, name, spawned_at, coroutine, runtime);
    }
    let task = cell.cast::<Task>();
    (TaskRef { task }, TaskRef { task })
}

/// A cell with only a join state (and an id), for `spawn_blocking`: its
/// closure runs on the blocking pool and completes the join state.
#[track_caller]
pub(crate) fn new_join_only<T: Send + 'static>() -> (TaskRef, TaskRef) {
    let cell = TaskCell::<(), T>::allocate();
    let (id, spawned_at) = (next_id(), Location::caller());
    let coroutine = TaskCoroutine::finished();
    // SAFETY: fresh, and its body stays uninitialised (the finished
    // coroutine owns nothing).
    unsafe { TaskCell::init_head(cell, id, None, spawned_at, coroutine, Anchor::none()) };
    let task = cell.cast::<Task>();
    (TaskRef { task }, TaskRef { task })
}

/// What a task keeps of its runtime: a [`Weak`] of it, behind a counted
/// anchor that belongs to the worker that spawned the task (or, for spawns
/// from outside the runtime, to the runtime itself).
///
/// Every spawn takes a reference and every freed task gives one back. On a
/// `Weak` of the runtime itself, that is one count that every worker
/// writes: its cache line moved between the cores on each spawn and each
/// free, a third of skynet's time on 2 workers (perf: the two atomic
/// operations on the `Weak`'s count took 76 % of `spawn_on` and 93 % of
/// the cell's `dealloc`). An anchor's count is written by its own worker's
/// spawns and by whoever frees the task (the joiner, often on the same
/// worker). A `Weak` still, so that a task (a join handle, a waker) may
/// outlive its runtime.
///
/// Aligned so that the `Weak` inside, which every wake reads, shares no
/// cache line with the count in front of it (`Arc`'s counts come first).
#[repr(align(128))]
pub(crate) struct Anchor {
    pub(crate) shared: Weak<super::Shared>,
}

impl Anchor {
    pub(crate) fn new(shared: Weak<super::Shared>) -> Arc<Anchor> {
        Arc::new(Anchor { shared })
    }

    /// The anchor of no runtime (a `spawn_blocking` job's join-only cell,
    /// never woken): one for the whole process.
    fn none() -> Arc<Anchor> {
        static NONE: std::sync::OnceLock<Arc<Anchor>> = std::sync::OnceLock::new();
        Arc::clone(NONE.get_or_init(|| Anchor::new(Weak::new())))
    }
}

impl Task {
    #[inline]
    pub(crate) fn home(&self) -> usize {
        self.home.load(Ordering::Acquire)
    }

    pub(crate) fn set_home(&self, worker: usize) {
        self.home.store(worker, Ordering::Release);
    }

    /// Marks the task cancelled; `false` if it already was.
    pub(crate) fn request_cancel(&self) -> bool {
        // Release: pairs with the Acquire of `cancel_requested()` in the
        // task (or its worker), which looks after the wake that follows.
        !self.cancel_requested.swap(true, Ordering::Release)
    }

    /// Whether `JoinHandle::cancel` was called.
    #[inline]
    pub(crate) fn cancel_requested(&self) -> bool {
        // Acquire: pairs with `request_cancel`'s Release (what the canceller
        // wrote before cancelling is visible to the unwinding task).
        self.cancel_requested.load(Ordering::Acquire)
    }

    /// Whether a cancel should still unwind the task: requested, and the
    /// task has not handed over its result yet. Once it has (`complete`),
    /// the cancel lost the race: a detached result's destructor, which
    /// runs right after in the task, must run to its end even if it parks.
    pub(crate) fn cancel_due(&self) -> bool {
        // SAFETY: `self` is a live task header, of the cell its vtable
        // belongs to.
        self.cancel_requested() && !unsafe { (self.vtable.is_finished)(self) }
    }

    /// The coroutine, for resuming or dropping it.
    ///
    /// # Safety
    ///
    /// - The caller is the task's owner in the sense of the module docs (the
    ///   popper of an unstarted task, or its home worker) and holds no other
    ///   reference obtained from this method.
    #[allow(clippy::mut_from_ref)]
    pub(crate) unsafe fn coroutine_mut(&self) -> &mut TaskCoroutine {
        // SAFETY: exclusive by the caller's promise.
        unsafe { &mut *self.coroutine.get() }
    }

    /// Who the task is, as its stack's overflow report names it: the
    /// coroutine's first run claims its stack with this
    /// (`CoroutineCore::prepare_first_resume`). The name lives as long as
    /// the coroutine: `drop_fields` drops the coroutine first.
    pub(crate) fn owner(&self) -> crate::stack::overflow::Owner<'_> {
        crate::stack::overflow::Owner { id: self.id, name: self.name.as_deref(), spawned_at: self.spawned_at }
    }

    /// The coroutine, for the resumes that keep no reference to it across
    /// the switch (`CoroutineCore::switch_in_raw`): its owner's (as for
    /// [`coroutine_mut`](Self::coroutine_mut)) to use.
    pub(crate) fn coroutine_ptr(&self) -> *mut TaskCoroutine {
        self.coroutine.get()
    }

    /// Records the yielder; called by the coroutine when it starts.
    pub(crate) fn set_yielder(&self, yielder: &Yielder<(), ()>) {
        self.yielder.set(yielder);
    }

    /// Forgets the yielder; called by the coroutine as the last thing it
    /// does, so that nothing reads it once its stack may be gone.
    pub(crate) fn clear_yielder(&self) {
        self.yielder.set(ptr::null());
    }

    /// The switch top of the task's stack while its coroutine has started
    /// and its body has not ended (a stack that is mapped), for the panic
    /// report's search (`coroutine::with_running`).
    ///
    /// # Safety
    ///
    /// Called on the task's home worker thread (the yielder is touched only
    /// there).
    pub(crate) unsafe fn stack_hint(&self) -> Option<NonNull<u8>> {
        let yielder = self.yielder.get();
        // SAFETY: a non-null yielder lives on the task's stack, which is
        // mapped until the body clears it (see `clear_yielder`): it does so
        // after everything else, and a leaked stack stays mapped.
        (!yielder.is_null()).then(|| unsafe { (*yielder).switch_top() }).and_then(NonNull::new)
    }

    /// Switches the running task out, telling its worker why.
    ///
    /// # Safety
    ///
    /// - Called while this task's coroutine runs: on its stack, or on the
    ///   stack of a coroutine it resumed (a generator it drives), as
    ///   `arch::suspend` allows. The yielder was recorded at its start and
    ///   lives on the task's stack.
    #[inline] // into `yield_now`, itself inline: see there
    pub(crate) unsafe fn switch_out(&self, why: Switch) {
        let yielder = self.yielder.get();
        debug_assert!(!yielder.is_null(), "task {} switched out before it started", self.id);
        // (A park was stamped for the dump by `park_current_task`, before
        // it chose this switch or the direct one.)
        self.switched_for.set(why);
        // Unpaired (`Yielder::suspend_unpaired`; the worker resumes the task
        // the same way, `CoroutineCore::switch_in_raw`): a park sits deep in
        // the coroutine's calls (a lock's, a channel's, a socket's), and so
        // does many a yield (a spin lock's, an RwLock's before it parks),
        // where a `ret` paired with the worker's `call` would mispredict.
        // Measured on the yield ping-pong (a yield in the coroutine's own
        // frame, the paired switch's best case): 11.6 ns paired, 11.3 ns
        // unpaired, for three instructions more (100 against 97).
        // SAFETY: the yielder lives at the base of this running coroutine's
        // stack for as long as it runs (the caller's promise).
        unsafe { (*yielder).suspend_unpaired(()) };
        // Resumed: a cancel that came while we were parked or queued unwinds
        // us here (one load on the way back; the wake that resumed a parked
        // task made the flag visible, see `runtime::cancel`).
        if self.cancel_requested() {
            super::begin_cancel_unwind(self);
        }
    }

    /// Switches from this running task straight to `next`, a suspended task
    /// of the same worker, which continues as if its worker had resumed it
    /// (a yield's or a park's direct switch, `worker::WorkerLocal::yield_direct`
    /// and `park_direct`). Returns when this task is continued; a cancel
    /// that came meanwhile unwinds it, as after [`switch_out`](Self::switch_out).
    ///
    /// # Safety
    ///
    /// - This is the running task of this thread (its worker's), not
    ///   unwinding a panic, and either queued already to run again (a
    ///   yield) or PARKED, with whoever wakes it holding its reference or
    ///   the registry holding one (a park).
    /// - `next` is a started, suspended task of the same worker, taken from
    ///   its queue; it is the running task of this thread from now on.
    #[inline(always)]
    pub(crate) unsafe fn switch_to(&self, next: &Task) {
        let yielder = self.yielder.get();
        debug_assert!(!yielder.is_null(), "task {} switched out before it started", self.id);
        // SAFETY: the running coroutine: its worker keeps no reference to it
        // across the resume (`CoroutineCore::switch_in_raw`).
        unsafe { TaskCoroutine::left_by_direct_switch(self.coroutine_ptr()) };
        // The worker owns `next`'s coroutine, and runs on this thread.
        // SAFETY: the yielder lives at the base of this running coroutine's
        // stack; `next` is suspended, of the same type, on this worker, and
        // the worker completes its resume on whichever task comes back.
        unsafe { (*yielder).switch_to((*next.coroutine_ptr()).switch_top()) };
        if self.cancel_requested() {
            super::begin_cancel_unwind(self);
        }
    }
}

impl std::fmt::Debug for Task {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Task").field("id", &self.id).field("name", &self.name).finish_non_exhaustive()
    }
}

/// A counted reference to a task (a thin pointer to its header); see the
/// module docs for the count's protocol.
pub(crate) struct TaskRef {
    task: NonNull<Task>,
}

// SAFETY: a TaskRef only gives out `&Task`, and Task is Send + Sync; the
// count is atomic.
unsafe impl Send for TaskRef {}
// SAFETY: as above.
unsafe impl Sync for TaskRef {}

impl TaskRef {
    /// Ends the task's join handle with `failure` as the `Err` of `join()`
    /// (the task could not start, or will never start).
    ///
    /// # Safety
    ///
    /// Nothing else completes the task's join state, now or later: its
    /// coroutine never ran and never will, or was left before its end (a
    /// stack leaked at shutdown); and the task is failed once.
    pub(crate) unsafe fn fail(&self, failure: Failure) {
        // SAFETY: our pointer is the header of the live cell whose vtable
        // this is, from its allocation; the rest is the caller's promise.
        unsafe { (self.vtable.fail)(self.task.as_ptr(), failure) }
    }

    /// Whether the task's join handle has its result (`join` would not wait).
    pub(crate) fn is_finished(&self) -> bool {
        // SAFETY: as in `fail`.
        unsafe { (self.vtable.is_finished)(self.task.as_ptr()) }
    }

    /// The header's address (stays valid while this reference lives).
    pub(crate) fn as_ptr(&self) -> *const Task {
        self.task.as_ptr()
    }

    /// Gives up this reference as a raw pointer (for intrusive lists); get
    /// it back with [`from_raw`](Self::from_raw).
    pub(crate) fn into_raw(self) -> *const Task {
        let task = self.task.as_ptr();
        std::mem::forget(self);
        task
    }

    /// Takes back a reference given up with [`into_raw`](Self::into_raw).
    ///
    /// # Safety
    ///
    /// `task` came from `into_raw`, and is taken back once.
    pub(crate) unsafe fn from_raw(task: *const Task) -> TaskRef {
        // SAFETY: a pointer from into_raw is a non-null header pointer.
        TaskRef { task: unsafe { NonNull::new_unchecked(task.cast_mut()) } }
    }

    /// A new reference to a task that someone else holds one to.
    ///
    /// # Safety
    ///
    /// `task` is the header of a live task, and a reference to it is held
    /// (by someone else) for the duration of this call.
    pub(crate) unsafe fn clone_from_ptr(task: *const Task) -> TaskRef {
        // SAFETY: the caller's promise: the header is live. The borrowed
        // reference is not ours to release, hence ManuallyDrop.
        let borrowed = ManuallyDrop::new(TaskRef { task: unsafe { NonNull::new_unchecked(task.cast_mut()) } });
        TaskRef::clone(&borrowed)
    }
}

#[cfg(test)]
impl TaskRef {
    /// How many references the task has (for tests of the count).
    pub(crate) fn ref_count(&self) -> usize {
        self.refs.load(Ordering::Relaxed)
    }
}

impl Clone for TaskRef {
    fn clone(&self) -> TaskRef {
        // Relaxed: see the module docs (a reference is made from another).
        let old = self.refs.fetch_add(1, Ordering::Relaxed);
        if old > MAX_REFS {
            std::process::abort();
        }
        TaskRef { task: self.task }
    }
}

impl Drop for TaskRef {
    fn drop(&mut self) {
        // Release: our uses of the cell happen before whoever frees it.
        if self.refs.fetch_sub(1, Ordering::Release) != 1 {
            return;
        }
        // Acquire: pairs with the Release decrements of every other
        // reference, so their uses of the cell happen before the free.
        fence(Ordering::Acquire);
        // SAFETY: we held the last reference: nobody else can reach the
        // cell, and its vtable matches its type.
        unsafe { (self.vtable.dealloc)(self.task) }
    }
}

impl Deref for TaskRef {
    type Target = Task;

    fn deref(&self) -> &Task {
        // SAFETY: the cell lives while this reference does.
        unsafe { self.task.as_ref() }
    }
}

impl std::fmt::Debug for TaskRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        (**self).fmt(f)
    }
}
