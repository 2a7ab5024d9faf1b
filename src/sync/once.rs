//! `OnceLock` and `LazyLock`: a value initialised once, whose initialiser may
//! park — for coroutines and OS threads alike.
//!
//! std's `OnceLock` and `LazyLock` block the *thread* of a caller that finds
//! the initialiser running elsewhere. In a coroutine that thread is a
//! worker: if the initialiser itself runs in a coroutine of that worker and
//! parks (a connection, a file read through `spawn_blocking`, a sleep), the
//! worker that should resume it is blocked waiting for it, for good. These
//! park the waiting coroutine instead.
//!
//! # State word
//!
//! A phase in the low bits, and a WAITERS bit beside INCOMPLETE or RUNNING:
//!
//! ```text
//!  value                  meaning
//!  ---------------------  ---------------------------------------------------
//!  INCOMPLETE             no value; nobody initialising
//!  RUNNING                an initialiser runs (its identity in `initialiser`)
//!  COMPLETE               `value` is written; final
//!  INCOMPLETE | WAITERS   someone may be parked in `wait` (for a value that
//!                         nobody is making yet)
//!  RUNNING | WAITERS      someone may be parked waiting for the initialiser
//!
//!  transition                        who                      then
//!  --------------------------------  -----------------------  ----------------------
//!  INCOMPLETE[|W] -> RUNNING[|W]     a caller of get_or_init  runs the initialiser
//!    (CAS, Acquire; W kept)          (or set)
//!  x -> x | WAITERS (CAS, Relaxed)   a caller that must wait  parks on the word,
//!    (x: INCOMPLETE for `wait`,                               validating it is still
//!    RUNNING for both)                                        x | WAITERS
//!  RUNNING[|W] -> COMPLETE           the initialiser, after   wakes every waiter if
//!    (swap, Release)                 writing `value`          W was set
//!  RUNNING[|W] -> INCOMPLETE         the initialiser, when    wakes every waiter if
//!    (swap, Release)                 its closure panicked,    W was set: each looks
//!                                    returned an error or     again; one of those in
//!                                    was cancelled            get_or_init initialises
//! ```
//!
//! A waiter sets WAITERS before it parks, and parks only if the word is
//! still what it set under the parking lot's bucket lock; the
//! initialiser's swap either comes before the waiter's CAS (which then fails
//! on the changed word, and the waiter looks again) or after it (then the
//! swap sees WAITERS and wakes, under the same bucket lock: a waiter that
//! validated is queued, one that validates later sees the new word). So a
//! wake is never lost. The value is written before the Release swap to
//! COMPLETE and read after an Acquire load that sees COMPLETE.
//!
//! A waiter that leaves the queue without a wake (its runtime unwinds it at
//! shutdown, or it is cancelled) leaves WAITERS set: a stale bit costs the
//! initialiser one empty `unpark_all`.
//!
//! **Reentrancy.** An initialiser that reaches its own `OnceLock` again
//! would wait for itself forever. The initialiser's identity (its
//! coroutine's task, or its thread) is kept beside the word, and a caller
//! that finds the word RUNNING with its own identity there panics with a
//! message instead of hanging (std's `OnceLock` leaves this unspecified: it
//! deadlocks). The identity is written after the CAS that makes the word
//! RUNNING and cleared before the swap that ends it, both by the
//! initialiser; a caller reads it after seeing RUNNING, so it reads the
//! current initialiser's identity or none, never a finished one's (those
//! swaps and CASes form one release sequence).

use crate::loom::{AtomicU32, AtomicUsize, Ordering, UnsafeCell};
use crate::park::lot::{self, DEFAULT_TOKEN};
use std::fmt;
use std::mem::MaybeUninit;
use std::ops::Deref;
use std::panic::{RefUnwindSafe, UnwindSafe};

const INCOMPLETE: u32 = 0;
const RUNNING: u32 = 1;
const COMPLETE: u32 = 2;
/// The phase bits: INCOMPLETE, RUNNING or COMPLETE.
const PHASE: u32 = 3;
/// With INCOMPLETE or RUNNING: someone may be parked waiting.
const WAITERS: u32 = 4;

/// No initialiser (or one whose identity is not known).
const NOBODY: usize = 0;

/// A cell written once, whose initialiser may park: [`get_or_init`] from
/// several coroutines (and threads) runs one initialiser, and the others
/// wait for it — parking if they are coroutines, blocking if they are
/// threads — then all get the same value. Like [`std::sync::OnceLock`],
/// whose waiters block their whole worker thread (see below).
///
/// ```
/// use std::time::Duration;
/// use weft::sync::OnceLock;
///
/// static CONFIG: OnceLock<String> = OnceLock::new();
///
/// let readers: Vec<_> = (0..4)
///     .map(|_| {
///         weft::spawn(|| {
///             let config = CONFIG.get_or_init(|| {
///                 weft::sleep(Duration::from_millis(5)); // a fetch: parks this coroutine only
///                 "verbose = true".to_string()
///             });
///             config.len()
///         })
///     })
///     .collect();
/// for reader in readers {
///     assert_eq!(reader.join().unwrap(), 14);
/// }
/// assert_eq!(CONFIG.get().map(String::as_str), Some("verbose = true"));
/// ```
///
/// # Why not std's
///
/// std's `OnceLock` makes a caller that finds the initialiser running
/// block its OS thread. When the initialiser is a coroutine that parks (it
/// reads a socket, sleeps, waits for a lock) and the blocked caller is a
/// coroutine of the same worker, that worker can never resume the
/// initialiser: both wait for good, and so does everything else on that
/// worker. This `OnceLock` parks the waiting coroutine instead.
///
/// # Panics and cancellation
///
/// If the initialiser panics (or its coroutine is cancelled while it
/// runs), the panic goes to its caller, the cell stays empty, and the next
/// caller (or a waiting one) runs its own initialiser. An initialiser that
/// reaches its own cell again from the same coroutine or thread panics
/// with a message instead of waiting for itself forever.
///
/// [`get_or_init`]: OnceLock::get_or_init
pub struct OnceLock<T> {
    state: AtomicU32,
    /// Who runs the initialiser while the state is RUNNING (see the module
    /// docs), or NOBODY.
    initialiser: AtomicUsize,
    value: UnsafeCell<MaybeUninit<T>>,
}

// SAFETY: the value is written once, by the one initialiser (RUNNING is
// exclusive), before the Release swap to COMPLETE, and shared only after an
// Acquire load sees COMPLETE: as std's OnceLock, Sync needs T: Sync (shared
// references to it cross threads) and T: Send (a thread other than the
// one that made it may drop it, through `take` or the cell's drop).
unsafe impl<T: Sync + Send> Sync for OnceLock<T> {}
// SAFETY: the cell owns its value.
unsafe impl<T: Send> Send for OnceLock<T> {}
impl<T: RefUnwindSafe + UnwindSafe> RefUnwindSafe for OnceLock<T> {}
impl<T: UnwindSafe> UnwindSafe for OnceLock<T> {}

impl<T> OnceLock<T> {
    /// An empty cell.
    #[cfg(not(loom))]
    pub const fn new() -> OnceLock<T> {
        OnceLock {
            state: AtomicU32::new(INCOMPLETE),
            initialiser: AtomicUsize::new(NOBODY),
            value: UnsafeCell::new(MaybeUninit::uninit()),
        }
    }

    /// An empty cell.
    #[cfg(loom)]
    pub fn new() -> OnceLock<T> {
        OnceLock {
            state: AtomicU32::new(INCOMPLETE),
            initialiser: AtomicUsize::new(NOBODY),
            value: UnsafeCell::new(MaybeUninit::uninit()),
        }
    }

    /// The value, if the cell has one; never waits (an initialiser running
    /// elsewhere gives `None`).
    ///
    /// ```
    /// use weft::sync::OnceLock;
    ///
    /// let cell = OnceLock::new();
    /// assert_eq!(cell.get(), None);
    /// cell.set(7).unwrap();
    /// assert_eq!(cell.get(), Some(&7));
    /// ```
    #[inline]
    pub fn get(&self) -> Option<&T> {
        // Acquire: pairs with the initialiser's Release swap to COMPLETE,
        // after which `value` is written and never written again.
        if self.state.load(Ordering::Acquire) == COMPLETE {
            // SAFETY: as just said; the value lives as long as `self`.
            Some(unsafe { self.value_ref() })
        } else {
            None
        }
    }

    /// The value, mutably, if the cell has one.
    pub fn get_mut(&mut self) -> Option<&mut T> {
        if self.is_complete_mut() {
            // SAFETY: COMPLETE, so written; `&mut self` excludes every other
            // access.
            Some(self.value.with_mut(|value| unsafe { (*value).assume_init_mut() }))
        } else {
            None
        }
    }

    /// Stores `value` if the cell is empty, waiting for an initialiser
    /// running elsewhere; `Err(value)` if the cell has a value (then or
    /// after that wait).
    ///
    /// ```
    /// use weft::sync::OnceLock;
    ///
    /// let cell = OnceLock::new();
    /// assert_eq!(cell.set(1), Ok(()));
    /// assert_eq!(cell.set(2), Err(2));
    /// assert_eq!(cell.get(), Some(&1));
    /// ```
    pub fn set(&self, value: T) -> Result<(), T> {
        let mut value = Some(value);
        self.get_or_init(|| value.take().expect("the initialiser runs once"));
        match value {
            None => Ok(()),
            Some(value) => Err(value),
        }
    }

    /// The value, made by `init` if the cell is empty. If another caller's
    /// initialiser is running, waits for it (parking a coroutine, blocking
    /// a thread) and returns its value; if that one panics, this caller
    /// runs `init` instead. Exactly one initialiser completes.
    ///
    /// # Panics
    ///
    /// If `init` panics (the panic propagates, and the cell stays empty),
    /// and if `init` calls `get_or_init` on the same cell from the same
    /// coroutine or thread (it would wait for itself forever).
    ///
    /// ```
    /// use weft::sync::OnceLock;
    ///
    /// let cell = OnceLock::new();
    /// assert_eq!(*cell.get_or_init(|| 1), 1);
    /// assert_eq!(*cell.get_or_init(|| 2), 1); // already set
    /// ```
    #[inline]
    pub fn get_or_init(&self, init: impl FnOnce() -> T) -> &T {
        match self.get_or_try_init(|| Ok::<T, std::convert::Infallible>(init())) {
            Ok(value) => value,
            Err(never) => match never {},
        }
    }

    /// [`get_or_init`](Self::get_or_init) for an initialiser that can fail:
    /// an `Err` from `init` is returned and leaves the cell empty (a waiting
    /// caller, or the next one, runs its own initialiser).
    ///
    /// ```
    /// use weft::sync::OnceLock;
    ///
    /// let cell: OnceLock<u16> = OnceLock::new();
    /// assert!(cell.get_or_try_init(|| "port".parse::<u16>()).is_err());
    /// assert_eq!(cell.get(), None);
    /// assert_eq!(cell.get_or_try_init(|| "8080".parse::<u16>()), Ok(&8080));
    /// ```
    #[inline]
    pub fn get_or_try_init<E>(&self, init: impl FnOnce() -> Result<T, E>) -> Result<&T, E> {
        if let Some(value) = self.get() {
            return Ok(value);
        }
        self.initialise(init)
    }

    /// Waits until the cell has a value (set by someone else: this never
    /// initialises it), parking a coroutine or blocking a thread.
    ///
    /// ```
    /// use std::sync::Arc;
    /// use weft::sync::OnceLock;
    ///
    /// let ready = Arc::new(OnceLock::new());
    /// let waiter = {
    ///     let ready = Arc::clone(&ready);
    ///     weft::spawn(move || *ready.wait() * 2)
    /// };
    /// ready.set(21).unwrap();
    /// assert_eq!(waiter.join().unwrap(), 42);
    /// ```
    pub fn wait(&self) -> &T {
        let mut state = self.state.load(Ordering::Acquire);
        while state != COMPLETE {
            state = self.wait_once(state);
        }
        // SAFETY: COMPLETE, seen with Acquire.
        unsafe { self.value_ref() }
    }

    /// Takes the value out, leaving the cell empty.
    ///
    /// ```
    /// use weft::sync::OnceLock;
    ///
    /// let mut cell = OnceLock::new();
    /// cell.set("hello".to_string()).unwrap();
    /// assert_eq!(cell.take().as_deref(), Some("hello"));
    /// assert_eq!(cell.get(), None);
    /// ```
    pub fn take(&mut self) -> Option<T> {
        if !self.is_complete_mut() {
            return None;
        }
        self.state.store(INCOMPLETE, Ordering::Relaxed);
        // SAFETY: it was COMPLETE, so written; now marked empty, so it is
        // read out once and never dropped in place.
        Some(self.value.with(|value| unsafe { (*value).assume_init_read() }))
    }

    /// The value, consuming the cell.
    pub fn into_inner(mut self) -> Option<T> {
        self.take()
    }

    /// Whether the state is COMPLETE, read through `&mut self` (no other
    /// access is possible, so no ordering is needed).
    fn is_complete_mut(&mut self) -> bool {
        self.state.load(Ordering::Relaxed) == COMPLETE
    }

    /// # Safety
    ///
    /// The state is COMPLETE, seen with Acquire (or through `&mut self`).
    unsafe fn value_ref(&self) -> &T {
        // SAFETY: written before COMPLETE (the caller's promise), never
        // written again while `self` is shared.
        self.value.with(|value| unsafe { (*value).assume_init_ref() })
    }

    /// The slow path of `get_or_try_init`: become the initialiser, or wait
    /// for the one running and look again.
    #[cold]
    #[inline(never)]
    fn initialise<E>(&self, init: impl FnOnce() -> Result<T, E>) -> Result<&T, E> {
        let mut state = self.state.load(Ordering::Acquire);
        loop {
            match state & PHASE {
                COMPLETE => {
                    // SAFETY: COMPLETE, seen with Acquire.
                    return Ok(unsafe { self.value_ref() });
                }
                INCOMPLETE => {
                    // Acquire: after an initialiser that gave up, its writes
                    // (it may have touched what ours reads) are visible.
                    let running = RUNNING | (state & WAITERS);
                    match self.state.compare_exchange(state, running, Ordering::Acquire, Ordering::Acquire) {
                        Ok(_) => return self.run_initialiser(init),
                        Err(actual) => state = actual,
                    }
                }
                _ => {
                    let me = caller_identity();
                    if me != NOBODY && self.initialiser.load(Ordering::Relaxed) == me {
                        panic!(
                            "OnceLock::get_or_init (or LazyLock) reached again from its own initialiser: \
                             it would wait for itself forever; initialise it from outside the closure, \
                             or make the inner use not need the value"
                        );
                    }
                    state = self.wait_once(state);
                }
            }
        }
    }

    /// Runs `init` as the cell's one initialiser (the state is RUNNING, set
    /// by our CAS), then publishes its value, or gives the cell back empty
    /// if it fails or unwinds.
    fn run_initialiser<E>(&self, init: impl FnOnce() -> Result<T, E>) -> Result<&T, E> {
        /// Gives the cell back empty if the initialiser does not finish
        /// (panic, cancellation, an `Err`).
        struct GiveBack<'a, T>(&'a OnceLock<T>);
        impl<T> Drop for GiveBack<'_, T> {
            fn drop(&mut self) {
                self.0.initialiser.store(NOBODY, Ordering::Relaxed);
                // Release: a later initialiser's Acquire CAS sees what this
                // one did before it gave up.
                let old = self.0.state.swap(INCOMPLETE, Ordering::Release);
                if old & WAITERS != 0 {
                    self.0.wake_all();
                }
            }
        }
        self.initialiser.store(caller_identity(), Ordering::Relaxed);
        let give_back = GiveBack(self);
        let value = init()?;
        std::mem::forget(give_back);
        // SAFETY: RUNNING is ours alone (our CAS): nobody reads or writes
        // `value` until the swap below says COMPLETE.
        self.value.with_mut(|slot| unsafe { (*slot).write(value) });
        self.initialiser.store(NOBODY, Ordering::Relaxed);
        // Release: pairs with every Acquire load that sees COMPLETE, after
        // which the value is read.
        let old = self.state.swap(COMPLETE, Ordering::Release);
        if old & WAITERS != 0 && !crate::loom::negative_control::broken("oncelock") {
            self.wake_all();
        }
        // SAFETY: COMPLETE, set by us after writing the value.
        Ok(unsafe { self.value_ref() })
    }

    /// One round of waiting while the word is `state` (INCOMPLETE or
    /// RUNNING, as the caller read it): sets WAITERS if it is clear, then
    /// parks while the word is still `state | WAITERS`. Returns the word
    /// as read afterwards (Acquire), or as the failed CAS found it.
    #[cold]
    fn wait_once(&self, state: u32) -> u32 {
        if state & WAITERS == 0 {
            if let Err(actual) =
                self.state.compare_exchange(state, state | WAITERS, Ordering::Relaxed, Ordering::Acquire)
            {
                return actual;
            }
        }
        let expected = state | WAITERS;
        crate::park::waiting_on(crate::park::ParkedOn::OnceLock(self.key()));
        lot::park(self.key(), || self.state.load(Ordering::Relaxed) == expected, || {}, |_, _| {}, None);
        self.state.load(Ordering::Acquire)
    }

    #[cold]
    fn wake_all(&self) {
        lot::unpark_all(self.key(), DEFAULT_TOKEN);
    }

    /// The parking-lot key of this cell.
    fn key(&self) -> usize {
        &self.state as *const AtomicU32 as usize
    }
}

/// Who is calling: the running coroutine's task, or this OS thread; unique
/// among the coroutines and threads alive at once.
#[cfg(not(loom))]
fn caller_identity() -> usize {
    std::thread_local! {
        static MARK: u8 = const { 0 };
    }
    crate::runtime::current_task_addr().unwrap_or_else(|| MARK.with(|mark| mark as *const u8 as usize))
}

/// NOBODY under loom, whose threads share one OS thread (a thread-local's
/// address would not tell them apart): reentrancy goes undetected there.
#[cfg(loom)]
fn caller_identity() -> usize {
    NOBODY
}

impl<T> Drop for OnceLock<T> {
    fn drop(&mut self) {
        if self.is_complete_mut() {
            // SAFETY: COMPLETE, so written, and dropped once, here.
            self.value.with_mut(|value| unsafe { (*value).assume_init_drop() });
        }
    }
}

impl<T> Default for OnceLock<T> {
    fn default() -> OnceLock<T> {
        OnceLock::new()
    }
}

impl<T: fmt::Debug> fmt::Debug for OnceLock<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_tuple("OnceLock");
        match self.get() {
            Some(value) => d.field(value),
            None => d.field(&format_args!("<uninit>")),
        };
        d.finish()
    }
}

impl<T: Clone> Clone for OnceLock<T> {
    fn clone(&self) -> OnceLock<T> {
        let cell = OnceLock::new();
        if let Some(value) = self.get() {
            // A fresh cell: `set` cannot find it full.
            let _ = cell.set(value.clone());
        }
        cell
    }
}

impl<T> From<T> for OnceLock<T> {
    fn from(value: T) -> OnceLock<T> {
        let cell = OnceLock::new();
        // A fresh cell: `set` cannot find it full.
        let _ = cell.set(value);
        cell
    }
}

impl<T: PartialEq> PartialEq for OnceLock<T> {
    fn eq(&self, other: &OnceLock<T>) -> bool {
        self.get() == other.get()
    }
}

impl<T: Eq> Eq for OnceLock<T> {}

/// A value made on first use by its initialiser, which may park: the
/// [`OnceLock`] counterpart of [`std::sync::LazyLock`]. Coroutines (and
/// threads) that use it while its initialiser runs elsewhere wait for it,
/// parking if they are coroutines.
///
/// ```
/// use std::time::Duration;
/// use weft::sync::LazyLock;
///
/// static GREETING: LazyLock<String> = LazyLock::new(|| {
///     weft::sleep(Duration::from_millis(5)); // parks this coroutine only
///     "hello".to_string()
/// });
///
/// let users: Vec<_> = (0..4).map(|_| weft::spawn(|| GREETING.len())).collect();
/// for user in users {
///     assert_eq!(user.join().unwrap(), 5);
/// }
/// ```
///
/// # Panics
///
/// If the initialiser panics, that use panics, and so does every later use
/// (the initialiser is gone: "poisoned"), as with std's.
///
/// A cancel ([`JoinHandle::cancel`](crate::JoinHandle::cancel)) or a
/// runtime's shutdown that unwinds the coroutine while it runs the
/// initialiser (parked in a fetch, a sleep, a lock) poisons it the same
/// way: the initialiser is an `FnOnce`, consumed by that first try, so
/// no later use can run it again. Where the coroutine that first touches
/// the value may be cancelled, use [`OnceLock::get_or_init`] instead: each
/// caller brings its own initialiser, and one that is cancelled hands the
/// cell to the next caller.
pub struct LazyLock<T, F = fn() -> T> {
    cell: OnceLock<T>,
    /// The initialiser, until the cell's one initialiser takes it.
    init: UnsafeCell<Option<F>>,
}

// SAFETY: `init` is taken only by the cell's one running initialiser
// (RUNNING is exclusive, and successive initialisers are ordered by the
// state word's Release/Acquire), and may be dropped by whoever drops the
// LazyLock: F: Send. The value as in OnceLock.
unsafe impl<T: Sync + Send, F: Send> Sync for LazyLock<T, F> {}
impl<T: RefUnwindSafe + UnwindSafe, F: UnwindSafe> RefUnwindSafe for LazyLock<T, F> {}

/// What a use of a [`LazyLock`] whose initialiser is gone panics with.
const POISONED: &str = "LazyLock instance has previously been poisoned: its initialiser panicked, or was cancelled or \
                        unwound by its runtime's shutdown";

impl<T, F: FnOnce() -> T> LazyLock<T, F> {
    /// A lazy value that `init` makes on first use.
    #[cfg(not(loom))]
    pub const fn new(init: F) -> LazyLock<T, F> {
        LazyLock { cell: OnceLock::new(), init: UnsafeCell::new(Some(init)) }
    }

    /// A lazy value that `init` makes on first use.
    #[cfg(loom)]
    pub fn new(init: F) -> LazyLock<T, F> {
        LazyLock { cell: OnceLock::new(), init: UnsafeCell::new(Some(init)) }
    }

    /// The value, made now if it was not (waiting for an initialiser that
    /// runs elsewhere). `*lazy` does the same.
    ///
    /// # Panics
    ///
    /// If the initialiser panics, now or in an earlier use (or was
    /// cancelled in an earlier use: see [`LazyLock`]).
    pub fn force(this: &LazyLock<T, F>) -> &T {
        this.cell.get_or_init(|| {
            // SAFETY: we are the cell's one running initialiser (see the
            // Sync impl): nobody else touches `init` meanwhile.
            match this.init.with_mut(|init| unsafe { (*init).take() }) {
                Some(init) => init(),
                None => panic!("{POISONED}"),
            }
        })
    }

    /// The value if it was made, or the initialiser if not (`Err`).
    ///
    /// # Panics
    ///
    /// If the initialiser panicked, or was cancelled, in an earlier use (it
    /// is gone).
    pub fn into_inner(this: LazyLock<T, F>) -> Result<T, F> {
        let LazyLock { cell, init } = this;
        match cell.into_inner() {
            Some(value) => Ok(value),
            None => Err(init.into_inner().expect(POISONED)),
        }
    }
}

impl<T, F: FnOnce() -> T> Deref for LazyLock<T, F> {
    type Target = T;

    fn deref(&self) -> &T {
        LazyLock::force(self)
    }
}

impl<T: Default> Default for LazyLock<T> {
    fn default() -> LazyLock<T> {
        LazyLock::new(T::default)
    }
}

impl<T: fmt::Debug, F> fmt::Debug for LazyLock<T, F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_tuple("LazyLock");
        match self.cell.get() {
            Some(value) => d.field(value),
            None => d.field(&format_args!("<uninit>")),
        };
        d.finish()
    }
}

#[cfg(all(test, loom))]
mod loom_models {
    //! The initialiser's swap racing a waiter's WAITERS + park.
    use super::*;
    use crate::loom::thread;
    // std's Arc: loom's checks its drop, which panics a second time while
    // the negative control unwinds from the deadlock loom reports (an abort).
    use std::sync::Arc;

    /// Two callers race: one initialiser runs, and both get its value.
    #[test]
    fn two_callers_one_initialiser() {
        loom::model(|| {
            let cell = Arc::new(OnceLock::new());
            let runs = Arc::new(AtomicUsize::new(0));
            let other = {
                let (cell, runs) = (Arc::clone(&cell), Arc::clone(&runs));
                thread::spawn(move || {
                    *cell.get_or_init(|| {
                        runs.fetch_add(1, Ordering::Relaxed);
                        1
                    })
                })
            };
            let mine = *cell.get_or_init(|| {
                runs.fetch_add(1, Ordering::Relaxed);
                2
            });
            let theirs = other.join().unwrap();
            assert_eq!(mine, theirs, "both callers get the one value");
            assert_eq!(runs.load(Ordering::Relaxed), 1, "one initialiser ran");
        });
    }

    /// An initialiser that fails gives the cell back; a waiting caller then
    /// initialises it.
    #[test]
    fn a_failed_initialiser_hands_over_to_a_waiter() {
        loom::model(|| {
            let cell = Arc::new(OnceLock::<u32>::new());
            let other = {
                let cell = Arc::clone(&cell);
                thread::spawn(move || cell.get_or_try_init(|| Err::<u32, ()>(())).ok().copied())
            };
            let mine = *cell.get_or_init(|| 7);
            assert_eq!(mine, 7);
            // The other caller either failed first or found the value.
            assert!(matches!(other.join().unwrap(), None | Some(7)));
        });
    }

    /// Negative control: an initialiser that does not wake the waiters
    /// strands one that parked, and loom must report the deadlock.
    #[test]
    #[should_panic(expected = "deadlock")]
    fn negative_control_an_initialiser_that_skips_the_wake_strands_a_waiter() {
        let _broken = crate::loom::negative_control::break_until_dropped("oncelock");
        loom::model(|| {
            let cell = Arc::new(OnceLock::new());
            let other = {
                let cell = Arc::clone(&cell);
                thread::spawn(move || *cell.get_or_init(|| 1))
            };
            let mine = *cell.get_or_init(|| 2);
            assert_eq!(mine, other.join().unwrap());
        });
    }
}
