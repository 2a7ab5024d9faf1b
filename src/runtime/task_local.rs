//! `task_local!`: a value per coroutine, the way `thread_local!` gives one
//! per OS thread.
//!
//! # Where the values live
//!
//! ```text
//!  static KEY: LocalKey<T>          Task (header of the running coroutine)
//!  +-------------------+            +--------------------------------------+
//!  | init: fn() -> T   |            | locals: Locals                       |
//!  | index: OnceLock --+--- i ----->|   values[i]: Option<Box<dyn Any>>    |
//!  +-------------------+            +--------------------------------------+
//! ```
//!
//! Each key gets a process-wide index the first time it is used; a task's
//! `Locals` is a vector indexed by it, filled lazily (`init` runs at a
//! coroutine's first access). The vector itself is boxed and made at the
//! first access too: most coroutines never touch a task-local, and every
//! task header carries a `Locals` (one word, where a `Vec` is three).
//! Values are boxed, so a `&T` handed to `with` stays put while the closure
//! runs even if it touches another key (the vector may grow; the boxes do
//! not move). Values are dropped only when the
//! coroutine ends (`drop_all`, called by the task's own body on its own
//! stack and worker, after the user's closure returned, panicked, or was
//! unwound by a cancel or a shutdown), never while a `with` runs.
//!
//! "Never while a `with` runs" needs a count: a `with` on the task's own
//! stack has returned by its end, but a plain `Coroutine` made inside the
//! task runs its `with`s on a stack of its own, and may suspend inside one
//! and outlive the task (kept in a `thread_local!`, resumed later by
//! another coroutine of the worker). So `Values` counts the `with` calls
//! running on it (`borrows`, a plain cell: one thread), and `drop_all`
//! leaks the values rather than drop them under such a borrow.
//!
//! Only the running coroutine touches its `Locals`, on its home worker's
//! thread: no lock, no atomic. A coroutine never moves to another thread
//! once started, so a value that is not `Send` is sound here too.

use super::CURRENT_TASK;
use super::scope::{ScopeData, ScopeLink};
use super::task::Task;
use crate::loom::process::{AtomicUsize, Ordering};
use std::any::Any;
use std::cell::Cell;
use std::fmt;
use std::sync::OnceLock;

/// How many keys have an index (the next key's index).
static NEXT_INDEX: AtomicUsize = AtomicUsize::new(0);

/// Destructors that create values again (they touch a task-local already
/// dropped) are run again, at most this many rounds, as std does for
/// `thread_local!`; values still left after that are leaked.
const DROP_ROUNDS: usize = 8;

/// A task's task-local values (see the module docs).
pub(crate) struct Locals {
    /// `None` until the task's first access.
    values: Option<Box<Values>>,
}

/// A task's values, and the `with` calls that borrow them now.
struct Values {
    /// How many `with` calls are running with a value of this box (on the
    /// task's stack, or on a plain coroutine's that it made).
    borrows: Cell<usize>,
    /// The values, indexed by their keys' indexes.
    slots: Vec<Option<Box<dyn Any>>>,
    /// The innermost [`crate::scope`] the task is in, or null (kept here,
    /// boxed at first use, rather than in every task's header).
    scope_head: Cell<*const ScopeLink>,
    /// The task waits at a scope's end: a cancel does not begin there.
    cancel_held: Cell<bool>,
    /// The scope whose scoped coroutine this task is, while its body runs
    /// (null otherwise): a shutdown that leaks its stack counts it there.
    scoped_body: Cell<*const ScopeData>,
}

impl Default for Values {
    fn default() -> Values {
        Values {
            borrows: Cell::new(0),
            slots: Vec::new(),
            scope_head: Cell::new(std::ptr::null()),
            cancel_held: Cell::new(false),
            scoped_body: Cell::new(std::ptr::null()),
        }
    }
}

/// Holds the running coroutine's cancel (see `runtime::begin_cancel_unwind`)
/// until the result is dropped.
///
/// # Panics
///
/// Outside a coroutine of a runtime.
pub(crate) fn hold_cancel() -> impl Drop {
    struct Held(*const Task);
    impl Drop for Held {
        fn drop(&mut self) {
            // SAFETY: the task that held it, running (a coroutine does not
            // move between tasks while it waits; `scope` checks it).
            if let Some(values) = unsafe { (*(*self.0).locals.get()).values.as_deref() } {
                values.cancel_held.set(false);
            }
        }
    }
    let task = CURRENT_TASK.with(Cell::get);
    assert!(!task.is_null(), "hold_cancel outside a coroutine");
    // SAFETY: as in `scope_head`.
    let values = unsafe { &mut (*(*task).locals.get()).values }.get_or_insert_with(Box::default);
    values.cancel_held.set(true);
    Held(task)
}

/// Whether `task`, the running coroutine, holds its cancel.
pub(crate) fn cancel_held(task: &Task) -> bool {
    // SAFETY: only the running task touches its locals (module docs); this
    // is it, and no reference to them is live here.
    unsafe { (*task.locals.get()).values.as_deref() }.is_some_and(|values| values.cancel_held.get())
}

/// The running coroutine's innermost scope (null if none); `None` outside
/// a coroutine of a runtime.
pub(crate) fn scope_head() -> Option<*const ScopeLink> {
    let task = CURRENT_TASK.with(Cell::get);
    if task.is_null() {
        return None;
    }
    // SAFETY: the running task is alive while it runs, and only it touches
    // its locals (module docs); no reference to them is live here.
    let values = unsafe { &(*(*task).locals.get()).values };
    Some(values.as_deref().map_or(std::ptr::null(), |values| values.scope_head.get()))
}

/// Makes `link` the running coroutine's innermost scope; its `outer` is
/// the innermost before (as `scope_head` said).
///
/// # Safety
///
/// The caller is a coroutine of a runtime (`scope_head` was `Some`);
/// `link` is a live `ScopeLink` that stays where it is until
/// [`unregister_scope`] takes it off.
pub(crate) unsafe fn set_scope_head(link: *const ScopeLink) {
    let task = CURRENT_TASK.with(Cell::get);
    assert!(!task.is_null(), "set_scope_head outside a coroutine");
    // SAFETY: as in `scope_head`.
    let values = unsafe { &mut (*(*task).locals.get()).values }.get_or_insert_with(Box::default);
    values.scope_head.set(link);
}

/// Takes `link` off the running coroutine's scopes, wherever it is in
/// them: the innermost, normally; deeper if a scope made in a plain
/// `Coroutine` that this task resumed ends after one made later.
///
/// # Safety
///
/// `link` was registered by this coroutine with [`set_scope_head`], and
/// the links registered since are live.
pub(crate) unsafe fn unregister_scope(link: *const ScopeLink) {
    let task = CURRENT_TASK.with(Cell::get);
    assert!(!task.is_null(), "unregister_scope outside a coroutine");
    // SAFETY: as in `scope_head`; the box exists (`set_scope_head` made it).
    let values = unsafe { (*(*task).locals.get()).values.as_deref() }.expect("a registered scope");
    // SAFETY: `link` and the links on the way to it are live (the caller's
    // promise).
    unsafe {
        let outer = (*link).outer.get();
        if values.scope_head.get() == link {
            values.scope_head.set(outer);
            return;
        }
        let mut inner = values.scope_head.get();
        while !inner.is_null() {
            if (*inner).outer.get() == link {
                (*inner).outer.set(outer);
                return;
            }
            inner = (*inner).outer.get();
        }
    }
}

/// How many scoped coroutines of the scopes `task` is in (a started
/// coroutine that its worker is about to unwind at shutdown) have not
/// ended, and how many of those never will (their stacks were leaked).
///
/// # Safety
///
/// The caller is `task`'s home worker, and `task` is suspended (not running).
pub(crate) unsafe fn scoped_counts(task: &Task) -> (usize, usize) {
    // SAFETY: the task does not run, so nothing else touches its locals;
    // its registered links live in its suspended frames.
    unsafe {
        let Some(values) = (*task.locals.get()).values.as_deref() else {
            return (0, 0);
        };
        ScopeLink::counts(values.scope_head.get())
    }
}

/// Marks the running coroutine as a body of the scope at `data` (or, with
/// null, as none).
pub(crate) fn set_scoped_body(data: *const ScopeData) {
    let task = CURRENT_TASK.with(Cell::get);
    if task.is_null() {
        return;
    }
    // SAFETY: as in `scope_head`.
    let values = unsafe { &mut (*(*task).locals.get()).values }.get_or_insert_with(Box::default);
    values.scoped_body.set(data);
}

/// At shutdown, for a task whose stack its worker leaked (it could not be
/// unwound): if it is a scoped coroutine whose body had not ended, counts
/// it as stuck in its scope, whose coroutine may then be given up on too.
///
/// # Safety
///
/// The caller is `task`'s home worker; `task` is suspended for good.
pub(crate) unsafe fn mark_stuck(task: &Task) {
    // SAFETY: the task never runs again, so nothing else touches its locals
    // (`Locals::drop` forgets them: the mark stays readable until here).
    let Some(values) = (unsafe { (*task.locals.get()).values.as_deref() }) else {
        return;
    };
    let data = values.scoped_body.get();
    if !data.is_null() {
        // SAFETY: marked, so the body's `CountDown` (which clears the mark
        // before it ends) is on the leaked stack and keeps the data alive.
        unsafe { ScopeData::mark_stuck(data) };
    }
}

/// One running `with`: counted in its values' `borrows` while it lives.
struct Borrow(*const Values);

impl Borrow {
    /// # Safety
    ///
    /// `values` points to a live `Values` box, which stays allocated while
    /// its `borrows` is not zero (`drop_all_slow` leaks it then).
    unsafe fn new(values: *const Values) -> Borrow {
        // SAFETY: the caller's promise.
        let borrows = unsafe { &(*values).borrows };
        borrows.set(borrows.get() + 1);
        Borrow(values)
    }
}

impl Drop for Borrow {
    fn drop(&mut self) {
        // SAFETY: our count kept the box allocated (`new`'s promise).
        let borrows = unsafe { &(*self.0).borrows };
        borrows.set(borrows.get() - 1);
    }
}

impl Locals {
    pub(crate) fn new() -> Locals {
        Locals { values: None }
    }
}

impl Drop for Locals {
    fn drop(&mut self) {
        // Normally empty: `drop_all` ran at the end of the coroutine. A task
        // whose stack was leaked (it could not be unwound) never got there;
        // its values may not be `Send` and this may be another thread, so
        // they are leaked with the stack.
        std::mem::forget(std::mem::take(&mut self.values));
    }
}

/// Drops the task-locals of `task`, the running coroutine, at its end.
#[inline] // at every coroutine's end; most have never touched a task-local
pub(crate) fn drop_all(task: &Task) {
    // SAFETY: as in `drop_all_slow` (a read of whether there is a vector).
    if unsafe { (*task.locals.get()).values.is_none() } {
        return;
    }
    drop_all_slow(task);
}

#[cold]
#[inline(never)]
fn drop_all_slow(task: &Task) {
    // Values are dropped one at a time, in place, as std drops its
    // `thread_local!`s: a destructor that reads a sibling not dropped yet
    // sees the coroutine's value, not a fresh one. (Taking the whole box out
    // first made every sibling look gone, and re-made it from its
    // initialiser.) A destructor that touches a value already dropped makes
    // it again, and the next round drops that one.
    for _ in 0..DROP_ROUNDS {
        let mut dropped_any = false;
        let mut index = 0;
        loop {
            // (No reference into `locals` lives here: the user's closure
            // has returned, and a destructor's `with` ended with it.)
            // SAFETY: `task` is the coroutine running on this thread (its
            // own body calls this), and only it touches `locals`.
            let values = unsafe { &mut (*task.locals.get()).values };
            let Some(values) = values.as_deref_mut() else {
                return;
            };
            if values.borrows.get() != 0 {
                // A plain coroutine made by this task is suspended inside a
                // `with` (see the module docs): its `&T` must stay valid.
                tracing::warn!(
                    task = task.id,
                    "task-local values leaked: a coroutine this task made is suspended inside LocalKey::with"
                );
                // SAFETY: as above.
                std::mem::forget(unsafe { &mut (*task.locals.get()).values }.take());
                return;
            }
            let Some(slot) = values.slots.get_mut(index) else {
                break;
            };
            index += 1;
            if let Some(value) = slot.take() {
                dropped_any = true;
                // A destructor that panics is reported by the panic hook and
                // goes no further; the other values are still dropped.
                let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || drop(value)));
            }
        }
        if !dropped_any {
            // SAFETY: as above.
            drop(unsafe { &mut (*task.locals.get()).values }.take());
            return;
        }
    }
}

/// A key to a value that each coroutine has its own copy of: declared with
/// [`task_local!`](crate::task_local), like `thread_local!`'s `LocalKey`.
pub struct LocalKey<T: 'static> {
    init: fn() -> T,
    index: OnceLock<usize>,
}

/// [`LocalKey::try_with`] was called outside a coroutine of a runtime: on a
/// plain OS thread, in a `spawn_blocking` job, or in a plain
/// [`Coroutine`](crate::coroutine::Coroutine) that one of those resumed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct AccessError;

impl fmt::Display for AccessError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a task-local value was accessed outside a coroutine (task-locals belong to coroutines)")
    }
}

impl std::error::Error for AccessError {}

impl<T: 'static> LocalKey<T> {
    #[doc(hidden)]
    pub const fn __new(init: fn() -> T) -> LocalKey<T> {
        LocalKey { init, index: OnceLock::new() }
    }

    fn index(&self) -> usize {
        // Relaxed: the counter only hands out distinct numbers; OnceLock
        // publishes the chosen one.
        *self.index.get_or_init(|| NEXT_INDEX.fetch_add(1, Ordering::Relaxed))
    }

    /// Calls `f` with the running coroutine's value, made with the key's
    /// initialiser at the coroutine's first access. The value lives until
    /// the coroutine ends (also by a panic, a cancel or its runtime's
    /// shutdown), then is dropped on the coroutine's own worker.
    ///
    /// ```
    /// use std::cell::Cell;
    ///
    /// weft::task_local! {
    ///     static REQUESTS: Cell<u32> = Cell::new(0);
    /// }
    ///
    /// let handles: Vec<_> = (1..=3)
    ///     .map(|n| {
    ///         weft::spawn(move || {
    ///             for _ in 0..n {
    ///                 REQUESTS.with(|r| r.set(r.get() + 1));
    ///                 weft::yield_now(); // others run; our count stays ours
    ///             }
    ///             REQUESTS.with(Cell::get)
    ///         })
    ///     })
    ///     .collect();
    /// let counts: Vec<u32> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    /// assert_eq!(counts, [1, 2, 3]);
    /// ```
    ///
    /// # Panics
    ///
    /// Outside a coroutine of a runtime: on a plain OS thread, in a
    /// [`spawn_blocking`](crate::spawn_blocking) job, or in a plain
    /// [`Coroutine`](crate::coroutine::Coroutine) resumed by one of those
    /// (use `thread_local!` there, or [`try_with`](Self::try_with) to ask);
    /// and if the initialiser panics. (A plain `Coroutine` resumed by a
    /// runtime coroutine uses that runtime coroutine's value.)
    #[track_caller]
    pub fn with<F, R>(&'static self, f: F) -> R
    where
        F: FnOnce(&T) -> R,
    {
        match self.try_with(f) {
            Ok(r) => r,
            Err(AccessError) => panic!(
                "a weft::task_local! value was accessed outside a coroutine: task-locals belong to coroutines; \
                 on a plain OS thread use thread_local!, or LocalKey::try_with to check"
            ),
        }
    }

    /// As [`with`](Self::with), but `Err` outside a coroutine instead of a
    /// panic.
    ///
    /// ```
    /// weft::task_local! { static ID: u64 = weft::current().id(); }
    /// assert!(ID.try_with(|id| *id).is_err(), "main is not a coroutine");
    /// let handle = weft::spawn(|| (ID.with(|id| *id), weft::current().id()));
    /// let (local, current) = handle.join().unwrap();
    /// assert_eq!(local, current);
    /// ```
    pub fn try_with<F, R>(&'static self, f: F) -> Result<R, AccessError>
    where
        F: FnOnce(&T) -> R,
    {
        let task = CURRENT_TASK.with(Cell::get);
        if task.is_null() {
            return Err(AccessError);
        }
        // SAFETY: the running task is alive while it runs (see
        // `runtime::current_task`), and so for the whole call.
        let task = unsafe { &*task };
        let (values, value) = self.get_or_init(task);
        // SAFETY: `values` is the task's live box of values; `drop_all`
        // leaks it rather than free it while a `Borrow` counts in it.
        let _borrow = unsafe { Borrow::new(values) };
        // The value is boxed in the task's locals, which drop it only at the
        // coroutine's end (`drop_all`), and not while this `with` runs
        // (`_borrow`); it is only ever shared (`&T`), here and in nested
        // `with`s.
        // SAFETY: alive and shared for the call, as just said.
        Ok(f(unsafe { &*value }))
    }

    /// The running task's value of this key, made if it has none yet, and
    /// the box of values it is in.
    fn get_or_init(&self, task: &Task) -> (*const Values, *const T) {
        let index = self.index();
        if let Some(found) = Self::lookup(task, index) {
            return found;
        }
        // No borrow of the locals is held while the initialiser runs: it may
        // use other task-locals (or this one: then its own value wins and
        // ours is dropped, as std's `thread_local!` does on re-entry).
        let made: Box<dyn Any> = Box::new((self.init)());
        if let Some(found) = Self::lookup(task, index) {
            drop(made);
            return found;
        }
        // SAFETY: only the running task touches its locals (module docs),
        // and no other reference to them is live (lookup's was temporary).
        let values = unsafe { &mut (*task.locals.get()).values }.get_or_insert_with(Box::default);
        if values.slots.len() <= index {
            values.slots.resize_with(index + 1, || None);
        }
        let value = Self::downcast(&**values.slots[index].insert(made));
        (&raw const **values, value)
    }

    fn lookup(task: &Task, index: usize) -> Option<(*const Values, *const T)> {
        // SAFETY: as in `get_or_init`: ours alone, no other borrow live.
        let values = unsafe { &(*task.locals.get()).values }.as_deref()?;
        let value = values.slots.get(index)?.as_deref().map(Self::downcast)?;
        Some((values, value))
    }

    fn downcast(value: &dyn Any) -> *const T {
        value.downcast_ref::<T>().expect("a task-local key's slot holds the key's own type")
    }
}

impl<T: 'static> fmt::Debug for LocalKey<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LocalKey").finish_non_exhaustive()
    }
}

/// Declares task-local keys: each coroutine that touches one gets its own
/// value, made by the initialiser at its first access and dropped when it
/// ends. The same syntax as `thread_local!`.
///
/// `thread_local!` inside a coroutine is the *worker thread's* value, shared
/// by every coroutine that runs on that worker; `task_local!` is the
/// coroutine's own.
///
/// ```
/// use std::cell::RefCell;
///
/// weft::task_local! {
///     /// The current request's trace, one per coroutine.
///     static TRACE: RefCell<Vec<&'static str>> = RefCell::new(Vec::new());
/// }
///
/// let handle = weft::spawn(|| {
///     TRACE.with(|t| t.borrow_mut().push("parsed"));
///     weft::yield_now();
///     TRACE.with(|t| t.borrow_mut().push("answered"));
///     TRACE.with(|t| t.borrow().clone())
/// });
/// assert_eq!(handle.join().unwrap(), ["parsed", "answered"]);
/// ```
#[macro_export]
macro_rules! task_local {
    () => {};
    ($(#[$attr:meta])* $vis:vis static $name:ident: $t:ty = $init:expr; $($rest:tt)*) => {
        $crate::task_local!($(#[$attr])* $vis static $name: $t = $init);
        $crate::task_local!($($rest)*);
    };
    ($(#[$attr:meta])* $vis:vis static $name:ident: $t:ty = $init:expr) => {
        $(#[$attr])*
        $vis static $name: $crate::LocalKey<$t> = {
            fn __weft_task_local_init() -> $t {
                $init
            }
            $crate::LocalKey::__new(__weft_task_local_init)
        };
    };
}
