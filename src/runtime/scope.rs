//! Scoped coroutines: [`scope`], as [`std::thread::scope`] is for threads.
//!
//! A scoped coroutine may borrow from the stack of the code that made the
//! scope, because [`scope`] does not return, and does not unwind past its
//! frame, before every coroutine spawned in it has ended.
//!
//! # Protocol
//!
//! The scope's state (`ScopeData`, in an `Arc` shared with each scoped
//! coroutine) and who touches it:
//!
//! | field | written by | read by |
//! |---|---|---|
//! | `running` | +1 by a spawn, before the coroutine exists; -1 (`CountDown`, Release) when a scoped coroutine's body is gone, run or dropped unrun, after everything in it that may borrow (its closure, and its result if no handle will take it) | the owner's wait (Acquire); the owner's worker at shutdown |
//! | `stuck` | +1 (Release) by a worker at shutdown for a scoped coroutine whose stack it leaked (it never ends; `running` still counts it) | the owner's worker at shutdown (Acquire, before `running`) |
//! | `unhandled_panics` | +1 by a body whose closure panicked (a payload that is not a cancel's or a shutdown's forced unwind); -1 by the `join` that takes that panic | the owner, after its wait |
//! | `owner` | the scope's creation | the body whose -1 brought `running` to 0: it wakes the owner |
//! | `runtime` | the scope's creation | each spawn into the scope |
//!
//! The owner's wait loops on `running` and parks, with its cancel *held*:
//! neither the park nor the wake after it begins a cancel's unwind there
//! (the scope's frame must not unwind while a scoped coroutine may still
//! use it); the cancel begins at the owner's first park after the scope. A
//! body's end takes a clone of the `Arc` before its decrement, so the wake
//! after it reaches live state even when the owner, seeing 0, has returned
//! meanwhile; a wake before the owner parks leaves it a token (`park`'s
//! protocol). A scope must end in the coroutine (or thread) that made it:
//! one made inside a plain `Coroutine` that another coroutine resumes to its
//! end aborts the process (it could not wait soundly).
//!
//! # Shutdown
//!
//! A coroutine inside a scope is registered with its task (a stack of
//! `ScopeLink`s, one per nested scope, in the frames of [`scope`], taken
//! off by a guard however the frame ends). When its runtime shuts down and
//! unwinds its parked coroutines, it unwinds such a coroutine only once no
//! scope of it has a scoped coroutine left: the scoped ones first
//! (`worker::WorkerLocal::unwind_all`), so nothing they borrowed goes
//! before them. A scoped coroutine that cannot be unwound (it parked while
//! unwinding a panic: its stack is leaked) is counted as *stuck* in its
//! scope (`ScopeData::stuck`, through a mark its body keeps in its task's
//! locals while it runs); a coroutine whose scoped coroutines left are all
//! stuck is given up on too: its stack is leaked (still mapped, so what
//! they borrow stays), it counts as stuck in its own scope if it is a
//! scoped coroutine, and its worker says so on stderr. Scoped coroutines
//! that still run (held in a blocking call, say) are waited for: there is
//! no time limit, which could free what they borrow (a thread-local of the
//! caller's worker, which exits after the shutdown) while they run.
//!
//! A scope made where waiting would hold the worker its coroutines need
//! (on a worker thread between coroutines, in a destructor the runtime
//! runs there) panics instead; one whose coroutine is being unwound at
//! shutdown fails the scoped coroutines spawned meanwhile (they never run)
//! rather than wait for them.

use std::cell::{Cell, UnsafeCell};
use std::io;
use std::marker::PhantomData;
use std::panic::{self, AssertUnwindSafe};
use std::sync::Arc;

use super::{Builder, JoinError, JoinHandle, ParkedOn};
use crate::loom::{AtomicBool, AtomicUsize, Ordering};
use crate::park::{Unparker, WaiterKind};

/// Runs `f` with a [`Scope`] whose coroutines may borrow what `f`'s caller
/// holds (anything that outlives `'env`), and returns what `f` returns
/// once every coroutine spawned in the scope has ended, as
/// [`std::thread::scope`] does for threads.
///
/// Scoped coroutines run on the runtime that is current where the scope
/// is made, as [`weft::spawn`](crate::spawn)'s would (the caller's own, the
/// one entered on its thread, or the default one), wherever they are
/// spawned from; the caller may be a coroutine (it parks while it waits,
/// and its worker runs others) or an OS thread (it blocks).
///
/// ```
/// let mut words = vec!["green", "threads"];
/// let total = std::sync::atomic::AtomicUsize::new(0);
///
/// weft::scope(|s| {
///     s.spawn(|| {
///         // Borrows `words` and `total` from the caller's stack.
///         total.fetch_add(words.iter().map(|w| w.len()).sum(), std::sync::atomic::Ordering::Relaxed);
///     });
///     let upper = s.spawn(|| words.iter().map(|w| w.to_uppercase()).collect::<Vec<_>>());
///     assert_eq!(upper.join().unwrap(), ["GREEN", "THREADS"]);
/// });
/// // Every scoped coroutine has ended: `words` may be borrowed mutably again.
/// words.push("weft");
/// assert_eq!(total.into_inner(), 12);
/// ```
///
/// # Panics
///
/// On a worker thread outside any coroutine (in a destructor that the
/// runtime runs between coroutines), where the wait would hold the worker.
/// If `f` panics, after the scoped coroutines have ended, with `f`'s panic.
/// If a scoped coroutine panicked and its [`ScopedJoinHandle::join`] did
/// not take the panic, `scope` panics once they have all ended. A scoped
/// coroutine that was cancelled ([`ScopedJoinHandle::cancel`]) is not a
/// panic.
///
/// # Waiting
///
/// The wait for the scoped coroutines is not interrupted: a coroutine
/// cancelled while it is inside a scope (its [`JoinHandle::cancel`])
/// unwinds `f` if the cancel reaches it there, then still waits for them
/// before its unwind goes on; a cancel that reaches it during the wait at
/// the scope's end takes effect after it (cancel the scoped coroutines too,
/// through their handles, to end it sooner). When the runtime shuts down,
/// it unwinds the scoped coroutines before the coroutine that made their
/// scope. A scoped coroutine that the shutdown cannot unwind (one that
/// parked while unwinding a panic: its stack is leaked) never ends: a
/// coroutine waiting for it is leaked too (its destructors do not run), and
/// an OS thread waiting for it waits for ever.
pub fn scope<'env, F, T>(f: F) -> T
where
    F: for<'scope> FnOnce(&'scope Scope<'scope, 'env>) -> T,
{
    if super::on_worker_between_coroutines() {
        panic!(
            "weft::scope was called on a worker thread outside any coroutine (in a destructor the runtime runs \
             between coroutines, of an unstarted closure or of a result nobody joined): its wait would hold the \
             worker that its scoped coroutines may need. Make the scope in a coroutine or a spawn_blocking job"
        );
    }
    let scope = Scope {
        data: Arc::new(ScopeData {
            running: AtomicUsize::new(0),
            stuck: AtomicUsize::new(0),
            unhandled_panics: AtomicUsize::new(0),
            owner: Unparker::current(),
            runtime: super::current_or_entered(),
        }),
        scope: PhantomData,
        env: PhantomData,
    };
    let link = ScopeLink { data: Arc::as_ptr(&scope.data), outer: Cell::new(std::ptr::null()) };
    // Declared after `link`, so dropped (unregistered) before it, on every
    // way out of this frame.
    // SAFETY: `link` stays where it is until `registered` is dropped.
    let registered = unsafe { Registered::new(&raw const link) };
    let result = panic::catch_unwind(AssertUnwindSafe(|| f(&scope)));
    scope.data.wait(&registered);
    drop(registered);
    match result {
        Err(payload) => panic::resume_unwind(payload),
        Ok(_) if scope.data.unhandled_panics.load(Ordering::Relaxed) > 0 => {
            panic!("a coroutine spawned in a weft::scope panicked and no ScopedJoinHandle::join took its panic")
        }
        Ok(value) => value,
    }
}

/// A scope's registration with the coroutine that made it (see
/// "Shutdown"), and the check that the scope ends where it began.
struct Registered {
    link: *const ScopeLink,
    /// The coroutine that made the scope (`None`: an OS thread).
    task: Option<usize>,
}

impl Registered {
    /// # Safety
    ///
    /// `link` stays where it is until the result is dropped.
    unsafe fn new(link: *const ScopeLink) -> Registered {
        let task = super::current_task_addr();
        if let Some(outer) = super::task_local::scope_head() {
            // SAFETY: `link` is live (the caller's promise); the scope it is
            // nested in, if any, is registered and live.
            unsafe {
                (*link).outer.set(outer);
                super::task_local::set_scope_head(link);
            }
        }
        Registered { link, task }
    }

    /// Aborts the process unless the caller is where the scope was made.
    /// A scope made inside a plain [`Coroutine`](crate::coroutine::Coroutine)
    /// that another coroutine (or thread) then resumes to its end cannot
    /// wait soundly: its scoped coroutines may use its frame, which the
    /// runtime would no longer know to keep.
    fn check_same_owner(&self) {
        if super::current_task_addr() != self.task {
            eprintln!(
                "weft::scope: the scope ended in another coroutine or thread than the one that made it (a scope \
                 inside a plain Coroutine that moved between coroutines); it cannot wait for its scoped coroutines \
                 soundly, aborting"
            );
            std::process::abort();
        }
    }
}

impl Drop for Registered {
    fn drop(&mut self) {
        self.check_same_owner();
        if self.task.is_some() {
            // SAFETY: registered by `new` on this coroutine; `link` is live.
            unsafe { super::task_local::unregister_scope(self.link) };
        }
    }
}

/// A scope to spawn coroutines in, made by [`scope`]: they may borrow
/// anything that outlives `'env`, and they end before the scope does.
pub struct Scope<'scope, 'env: 'scope> {
    data: Arc<ScopeData>,
    /// Invariant in both, as std's: a scope's lifetimes are exactly its own.
    scope: PhantomData<&'scope mut &'scope ()>,
    env: PhantomData<&'env mut &'env ()>,
}

/// What a scope and its coroutines share (see the module docs).
pub(crate) struct ScopeData {
    /// Scoped coroutines whose body has not ended yet.
    running: AtomicUsize,
    /// Of those, the ones whose runtime's shutdown gave up on them (their
    /// stack leaked: they will never end).
    stuck: AtomicUsize,
    /// Panics of scoped coroutines that no `join` has taken.
    unhandled_panics: AtomicUsize,
    /// The coroutine or thread that made the scope and waits at its end.
    owner: Unparker,
    /// Where the scoped coroutines run: the runtime of the coroutine that
    /// made the scope, or the one entered on its thread; `None`: the
    /// default runtime.
    runtime: Option<Arc<super::Shared>>,
}

impl ScopeData {
    /// Counts, at shutdown, a scoped coroutine whose stack its worker
    /// leaked (it cannot be unwound): it will never end.
    ///
    /// # Safety
    ///
    /// `data` is the scope of a body that has not ended and never will (its
    /// `CountDown`, which holds the data, is on the leaked stack).
    pub(crate) unsafe fn mark_stuck(data: *const ScopeData) {
        // SAFETY: kept alive by the leaked CountDown (the caller's promise).
        // Release: read by the owner's worker with Acquire (`counts`).
        unsafe { (*data).stuck.fetch_add(1, Ordering::Release) };
    }

    /// Waits until no scoped coroutine is left; a cancel does not end it
    /// (nor begins its unwind at the wake: the cancel is held meanwhile).
    fn wait(&self, registered: &Registered) {
        registered.check_same_owner();
        let kind = self.owner.kind();
        let _held = (kind == WaiterKind::Task).then(super::task_local::hold_cancel);
        // Acquire: with each body's Release decrement, so that what the
        // scoped coroutines did is seen after the scope.
        while self.running.load(Ordering::Acquire) != 0 {
            if super::in_shutdown_unwind() {
                // Unwound at shutdown (every scoped coroutine had ended), a
                // destructor in `f` spawned into the scope, or the scope was
                // made in such a destructor: those never run; this worker
                // fails them (a park would return at once, and their end
                // wakes the coroutine, not this thread: look again soon).
                super::fail_unstarted_here_at_shutdown();
                if self.running.load(Ordering::Acquire) != 0 {
                    std::thread::sleep(std::time::Duration::from_micros(100));
                }
                continue;
            }
            match kind {
                WaiterKind::Task => {
                    super::note_wait(ParkedOn::Scope);
                    super::park_current_task_uncancellable();
                }
                WaiterKind::Thread => {
                    kind.park(None);
                }
            }
        }
    }
}

/// One scope of a coroutine, in [`scope`]'s frame: the task's stack of
/// them is what its runtime's shutdown looks at (see the module docs).
pub(crate) struct ScopeLink {
    data: *const ScopeData,
    /// The scope this one is nested in, or null.
    pub(crate) outer: Cell<*const ScopeLink>,
}

impl ScopeLink {
    /// How many scoped coroutines of this scope, and of those it is nested
    /// in, have not ended, and how many of those never will (`stuck`).
    ///
    /// # Safety
    ///
    /// `link` and those it is nested in are registered (their frames live).
    pub(crate) unsafe fn counts(mut link: *const ScopeLink) -> (usize, usize) {
        let (mut running, mut stuck) = (0, 0);
        while !link.is_null() {
            // SAFETY: registered links and their scopes' data live (the
            // caller's promise; the frame holds the data's Arc).
            let (data, outer) = unsafe { (&*(*link).data, (*link).outer.get()) };
            // `stuck` first: it only grows, and never past `running` (a
            // stuck body is one `running` still counts). Read after it,
            // `running` equal to it means every scoped coroutine left was
            // stuck when `running` was read. Read the other way round, a
            // live one could spawn another and then get stuck between the
            // two reads: equal counts with an unstarted one left, whose
            // closure may still use what it borrowed (helper-62's review).
            // Acquire: as the owner's wait, and with `mark_stuck`'s Release.
            let stuck_here = data.stuck.load(Ordering::Acquire);
            running += data.running.load(Ordering::Acquire);
            stuck += stuck_here;
            link = outer;
        }
        (running, stuck)
    }
}

/// The end of a scoped coroutine's body, run or dropped unrun: drops the
/// packet's share (and with it the result, if the handle is gone), then
/// (`count`, the field dropped after it, even if that drop panics) takes
/// the coroutine off the scope's count.
struct BodyEnd<T> {
    packet: Option<Arc<Packet<T>>>,
    count: CountDown,
}

impl<T> Drop for BodyEnd<T> {
    fn drop(&mut self) {
        drop(self.packet.take());
    }
}

/// Takes one scoped coroutine off its scope's count when dropped.
struct CountDown {
    data: Arc<ScopeData>,
    /// The body runs, and has marked its task as this scope's (see
    /// `task_local::set_scoped_body`): the mark goes before the count.
    marked: bool,
}

impl Drop for CountDown {
    fn drop(&mut self) {
        if self.marked {
            super::task_local::set_scoped_body(std::ptr::null());
        }
        let data = Arc::clone(&self.data);
        // Release: everything the coroutine did, and the drops before this,
        // happen before the owner's wait sees the count fall.
        if data.running.fetch_sub(1, Ordering::Release) == 1 {
            data.owner.clone().unpark();
        }
    }
}

/// Where a scoped coroutine leaves its result for its handle.
struct Packet<T> {
    result: UnsafeCell<Option<T>>,
    /// Its body counted a panic in `unhandled_panics`.
    panicked: AtomicBool,
}

// SAFETY: `result` is written once, by the scoped coroutine before it ends,
// and read by its handle only after `join` saw it end (the join state's
// Release/Acquire orders the two); `T: Send` moves across that hand-off.
unsafe impl<T: Send> Sync for Packet<T> {}

/// A scoped coroutine's body with what it borrows, in drop order: `f` (and
/// what it captured) before `end`, whose drop ends the coroutine's share of
/// the scope.
struct Body<F, T> {
    f: F,
    end: BodyEnd<T>,
}

impl<'scope, 'env> Scope<'scope, 'env> {
    /// Spawns a coroutine in this scope, on the scope's runtime (see
    /// [`scope`]); it may borrow anything that outlives `'scope`. [`scope`]
    /// waits for it; join it with the handle to get its result (or its
    /// panic).
    ///
    /// # Panics
    ///
    /// As [`weft::spawn`](crate::spawn): if the scope's runtime is the
    /// default one, which must be started, and its threads cannot be.
    #[track_caller]
    pub fn spawn<F, T>(&'scope self, f: F) -> ScopedJoinHandle<'scope, T>
    where
        F: FnOnce() -> T + Send + 'scope,
        T: Send + 'scope,
    {
        let at = std::panic::Location::caller();
        let runtime = self.runtime();
        self.spawn_with(f, |body| {
            Ok(super::spawn_on(&runtime, None, runtime.stack_size, at, super::Placement::Anywhere, body))
        })
        .expect("a plain spawn reports its errors by panicking, not through Err")
    }

    /// The runtime the scope's coroutines run on.
    fn runtime(&self) -> Arc<super::Shared> {
        self.data.runtime.clone().unwrap_or_else(super::default_shared)
    }

    /// Spawns `f` through `spawner` (which spawns a `'static` body, or
    /// returns an error and drops it).
    fn spawn_with<F, T>(
        &'scope self,
        f: F,
        spawner: impl FnOnce(Box<dyn FnOnce() + Send + 'static>) -> io::Result<JoinHandle<()>>,
    ) -> io::Result<ScopedJoinHandle<'scope, T>>
    where
        F: FnOnce() -> T + Send + 'scope,
        T: Send + 'scope,
    {
        let packet = Arc::new(Packet { result: UnsafeCell::new(None), panicked: AtomicBool::new(false) });
        // Relaxed: the spawn's own hand-off orders it before the body runs,
        // and the owner reads it on this thread or after a body's Release.
        self.data.running.fetch_add(1, Ordering::Relaxed);
        let count = CountDown { data: Arc::clone(&self.data), marked: false };
        let end = BodyEnd { packet: Some(Arc::clone(&packet)), count };
        let body = Body { f, end };
        let body = move || {
            let Body { f, mut end } = body;
            // Its task is this scope's body until `end` goes: a shutdown that
            // cannot unwind it counts it as stuck there.
            super::task_local::set_scoped_body(Arc::as_ptr(&end.count.data));
            end.count.marked = true;
            let packet = end.packet.as_ref().expect("the packet is dropped only at the end");
            match panic::catch_unwind(AssertUnwindSafe(f)) {
                Ok(value) => {
                    // SAFETY: only this body writes the result, once, before
                    // it ends (see `Packet`'s Sync).
                    unsafe { *packet.result.get() = Some(value) };
                }
                Err(payload) => {
                    // Its own panic (not a cancel's or a shutdown's unwind):
                    // unhandled until a join takes it.
                    if !crate::is_forced_unwind(&*payload) {
                        packet.panicked.store(true, Ordering::Relaxed);
                        end.count.data.unhandled_panics.fetch_add(1, Ordering::Relaxed);
                    }
                    drop(end);
                    panic::resume_unwind(payload);
                }
            }
            drop(end);
        };
        let body: Box<dyn FnOnce() + Send + 'scope> = Box::new(body);
        // The body outlives `'scope` only as far as the type says: whether
        // it runs or is dropped unrun, everything in it that may borrow
        // (`f`, the result) is dropped before its `CountDown` takes it off
        // `running`, and the scope's frame does not end before `running` is
        // 0 (`scope` waits, uninterruptibly; at shutdown its coroutine is
        // unwound only after that, or leaked, its frame kept, if they never
        // end).
        // SAFETY: as just said.
        let body: Box<dyn FnOnce() + Send + 'static> = unsafe { std::mem::transmute(body) };
        let handle = spawner(body)?;
        Ok(ScopedJoinHandle { handle, packet, data: Arc::clone(&self.data), scope: PhantomData })
    }
}

impl Builder {
    /// Spawns a coroutine in `scope` with this builder's settings, as
    /// [`Scope::spawn`] does, or returns the error [`Builder::spawn`] would.
    ///
    /// ```
    /// let name = String::from("worker");
    /// weft::scope(|s| {
    ///     let handle = weft::Builder::new()
    ///         .name("scoped".into())
    ///         .spawn_scoped(s, || format!("{name} in {}", weft::current().name().unwrap()))
    ///         .unwrap();
    ///     assert_eq!(handle.join().unwrap(), "worker in scoped");
    /// });
    /// ```
    #[track_caller]
    pub fn spawn_scoped<'scope, 'env, F, T>(
        self,
        scope: &'scope Scope<'scope, 'env>,
        f: F,
    ) -> io::Result<ScopedJoinHandle<'scope, T>>
    where
        F: FnOnce() -> T + Send + 'scope,
        T: Send + 'scope,
    {
        let at = std::panic::Location::caller();
        let runtime = scope.runtime();
        scope.spawn_with(f, |body| self.spawn_shared(&runtime, at, body))
    }
}

/// The handle of a coroutine spawned in a [`scope`]: as [`JoinHandle`],
/// for the scope's lifetime.
pub struct ScopedJoinHandle<'scope, T> {
    handle: JoinHandle<()>,
    packet: Arc<Packet<T>>,
    data: Arc<ScopeData>,
    scope: PhantomData<&'scope ()>,
}

impl<T> ScopedJoinHandle<'_, T> {
    /// Waits for the coroutine to end and returns its result, or the
    /// [`JoinError`] of its panic (which the scope then does not raise) or
    /// of its cancel, as [`JoinHandle::join`].
    pub fn join(self) -> Result<T, JoinError> {
        match self.handle.join() {
            Ok(()) => {
                // SAFETY: the coroutine has ended (the join saw it, with
                // Acquire), so its write of the result is done and seen.
                let value = unsafe { (*self.packet.result.get()).take() };
                Ok(value.expect("a scoped coroutine that returned left its result"))
            }
            Err(error) => {
                if self.packet.panicked.swap(false, Ordering::Relaxed) {
                    self.data.unhandled_panics.fetch_sub(1, Ordering::Relaxed);
                }
                Err(error)
            }
        }
    }

    /// Whether the coroutine has ended, as [`JoinHandle::is_finished`].
    pub fn is_finished(&self) -> bool {
        self.handle.is_finished()
    }

    /// The coroutine's id, as [`JoinHandle::id`].
    pub fn id(&self) -> u64 {
        self.handle.id()
    }

    /// Asks the coroutine to stop, as [`JoinHandle::cancel`]: it unwinds at
    /// its next wait, and its `join` returns a cancelled [`JoinError`].
    pub fn cancel(&self) {
        self.handle.cancel();
    }
}

impl<T> std::fmt::Debug for ScopedJoinHandle<'_, T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScopedJoinHandle").field("id", &self.id()).finish_non_exhaustive()
    }
}

impl std::fmt::Debug for Scope<'_, '_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scope").field("running", &self.data.running.load(Ordering::Relaxed)).finish_non_exhaustive()
    }
}
