//! Stackful coroutines: a closure that runs on its own stack and can suspend
//! from any depth of calls, handing a value to whoever resumed it.
//!
//! [`Coroutine`] is the generator underneath weft's green threads, and is
//! usable on its own:
//!
//! ```
//! use weft::coroutine::{Coroutine, CoroutineResult};
//!
//! // Sums what it is given, yielding the running total, until it gets 0.
//! let mut adder = Coroutine::new(|yielder, mut input: u32| {
//!     let mut total = 0;
//!     while input != 0 {
//!         total += input;
//!         input = yielder.suspend(total);
//!     }
//!     format!("done at {total}")
//! });
//! assert_eq!(adder.resume(1), CoroutineResult::Yield(1));
//! assert_eq!(adder.resume(2), CoroutineResult::Yield(3));
//! assert_eq!(adder.resume(0), CoroutineResult::Return("done at 3".to_string()));
//! assert!(adder.is_finished());
//! ```
//!
//! # States
//!
//! ```text
//!  state       resume(input)                              drop
//!  ---------   ----------------------------------------   --------------------
//!  Fresh       take a stack, start the closure with       drop the closure
//!              `input`
//!  Suspended   the pending `suspend` returns `input`      unwind its stack
//!                                                         (the destructors on
//!                                                         it run; `Coroutine`
//!                                                         says when they
//!                                                         cannot)
//!  Finished    panic: nothing left to run                 nothing
//! ```
//!
//! A coroutine takes its stack from the per-thread cache at its first
//! resume, not at creation, so creating many coroutines costs no memory
//! maps until they run, and gives it back as soon as it finishes. A panic
//! inside a coroutine never unwinds across the switch: it is caught at the
//! coroutine's entry and continues in whoever called `resume`.

// # Protocol (for maintainers; the public summary is in the module docs above)
//
// ```text
//  state       resume(input)                              drop
//  ---------   ----------------------------------------   --------------------
//  Fresh       take a stack, build its first frame,       drop the closure
//              switch in -> entry runs the closure
//  Suspended   switch in -> suspend() returns input       switch in with
//                                                         `unwind` set: the
//                                                         coroutine unwinds to
//                                                         its entry, then ends
//  Finished    panic: nothing left to run                 nothing
// ```
//
// Every resume puts an `Exchange` on the resumer's stack and passes its
// address through the switch, as the word `arch::resume` hands over. The
// coroutine moves the input out of it and writes back what it yields, then
// switches back with a word that says what happened:
//
// ```text
//  word                     direction             meaning
//  -----------------------  --------------------  ------------------------------------
//  &exchange                resumer -> coroutine  `input` is set: return it from suspend
//  &exchange | UNWIND       resumer -> coroutine  no input: unwind (a drop), then finish
//  YIELDED                  coroutine -> resumer  `yielded` is set
//  YIELDED_PANICKING        coroutine -> resumer  `yielded` is set, and the coroutine
//                                                 suspended while unwinding a panic (from
//                                                 a destructor): it must not be unwound
//                                                 again
//  &finish (any other)      coroutine -> resumer  it finished: how (returned, panicked,
//                                                 unwound) is the `Finish<R>` at that
//                                                 address, in its entry function's frame
//                                                 on its stack, which never runs again
// ```
//
// The resumer reads the result before it does anything else. Each field of
// the exchange is written by one side and moved out by the other exactly
// when the word says so (they are `MaybeUninit`: no flags, no drop glue), so
// a round trip moves only what it carries, and nothing at all when it
// carries nothing (`()` both ways: the coroutine does not even keep the
// exchange's address). A resume's hot path is one test (a started,
// unfinished coroutine has a non-null stack top), the switch, and one test
// of the word; everything else is out of line and cold.
//
// Panics never cross the switch (an unwind may not pass through the
// switch's assembly frames, and the frames above a coroutine's entry are
// its resumer's, on another stack): the entry function
// wraps the closure in `catch_unwind`, passes the payload back as data, and
// `resume` continues the unwinding on the resumer's side with
// `resume_unwind`.
//
// The stack is taken from the per-thread cache at the first resume, not at
// creation, so creating many coroutines costs no memory maps until they
// run, and is given back as soon as the coroutine finishes.
//
// Until the first resume the closure waits in its *home* (`ClosureHome`):
// its own box for coroutines built with the public API, or memory its
// creator owns for the runtime's tasks (inside the task's one allocation).
// At the first resume the entry function moves it onto the new stack.

use crate::arch;
use crate::loom::process::{AtomicU64, Ordering};
use crate::stack::{self, Stack, overflow};
use std::any::Any;
use std::cell::Cell;
use std::fmt;
use std::io;
use std::marker::PhantomData;
use std::mem::{ManuallyDrop, MaybeUninit};
use std::panic::{self, AssertUnwindSafe, Location};
use std::ptr::NonNull;

pub use crate::stack::{DEFAULT_STACK_SIZE, MIN_STACK_SIZE};

/// What a [`Coroutine::resume`] produced: a value the coroutine yielded with
/// [`Yielder::suspend`], or the value its closure returned.
///
/// ```
/// use weft::coroutine::{Coroutine, CoroutineResult};
///
/// let mut once = Coroutine::<(), char, u8>::new(|yielder, ()| {
///     yielder.suspend('a');
///     1
/// });
/// match once.resume(()) {
///     CoroutineResult::Yield(c) => assert_eq!(c, 'a'),
///     CoroutineResult::Return(_) => unreachable!("it yields first"),
/// }
/// assert_eq!(once.resume(()), CoroutineResult::Return(1));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CoroutineResult<Y, R> {
    /// The coroutine suspended with this value; it can be resumed again.
    Yield(Y),
    /// The coroutine finished with this value.
    Return(R),
}

impl<Y, R> CoroutineResult<Y, R> {
    /// The yielded value, if any.
    ///
    /// ```
    /// use weft::coroutine::CoroutineResult;
    ///
    /// assert_eq!(CoroutineResult::<u8, ()>::Yield(3).as_yield(), Some(&3));
    /// assert_eq!(CoroutineResult::<u8, ()>::Return(()).as_yield(), None);
    /// ```
    pub fn as_yield(&self) -> Option<&Y> {
        match self {
            CoroutineResult::Yield(y) => Some(y),
            CoroutineResult::Return(_) => None,
        }
    }

    /// The returned value, if any.
    ///
    /// ```
    /// use weft::coroutine::CoroutineResult;
    ///
    /// assert_eq!(CoroutineResult::<(), &str>::Return("done").as_return(), Some(&"done"));
    /// assert_eq!(CoroutineResult::<(), &str>::Yield(()).as_return(), None);
    /// ```
    pub fn as_return(&self) -> Option<&R> {
        match self {
            CoroutineResult::Yield(_) => None,
            CoroutineResult::Return(r) => Some(r),
        }
    }
}

/// Sets how many idle stacks the calling thread keeps for reuse (64 unless
/// changed). A coroutine takes a stack at its first resume and gives it back
/// when it finishes; a cached stack is reused without a syscall but keeps the
/// memory its last coroutine touched. `0` maps and unmaps a stack for every
/// coroutine; excess cached stacks are unmapped at once.
///
/// ```
/// weft::coroutine::set_thread_stack_cache_capacity(0); // no reuse on this thread
/// let mut c = weft::coroutine::Coroutine::<(), (), u8>::new(|_, ()| 1);
/// assert_eq!(c.resume(()).as_return(), Some(&1));
/// ```
pub fn set_thread_stack_cache_capacity(capacity: usize) {
    stack::cache::set_capacity(capacity);
}

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// Who the coroutine running on this thread is (the innermost one, when
/// coroutines nest), for reports that should name it: id, name, spawn site.
pub(crate) use crate::stack::overflow::Owner as Running;

/// Calls `f` with the coroutine running on this thread (the innermost one,
/// when coroutines nest), or `None` when the thread runs on its own stack.
/// `hint` is the stack top of the coroutine that probably runs (see
/// [`Yielder::switch_top`]; the runtime's current task): checked first, it
/// spares a walk of the thread's started stacks.
///
/// # Safety
///
/// `hint`, if any, is the [`Yielder::switch_top`] of a coroutine whose stack
/// is still mapped: one that has not finished, or whose stack was leaked.
pub(crate) unsafe fn with_running<R>(hint: Option<NonNull<u8>>, f: impl FnOnce(Option<Running<'_>>) -> R) -> R {
    // SAFETY: a coroutine's switch top is its stack's, mapped (the caller's
    // promise).
    unsafe { stack::overflow::running(hint, f) }
}

/// A fresh process-unique id, shared by plain coroutines and the runtime's
/// tasks (a green thread's coroutine carries its task's id, so the overflow
/// report names the id that `weft::current().id()` shows).
///
/// Each thread takes the ids in blocks of `ID_BLOCK` from the process's
/// counter and hands them out one by one: on one shared counter, every
/// spawn on every worker wrote the same cache line (a fifth of skynet's
/// time on 2 workers, perf). Ids are unique, not in creation order across
/// threads.
#[inline]
pub(crate) fn next_id() -> u64 {
    const ID_BLOCK: u64 = 64;
    std::thread_local! {
        /// The next id of this thread's block, and the block's end.
        static BLOCK: Cell<(u64, u64)> = const { Cell::new((0, 0)) };
    }
    BLOCK.with(|block| {
        let (next, end) = block.get();
        let (id, end) = if next < end { (next, end) } else { take_id_block(ID_BLOCK) };
        block.set((id + 1, end));
        id
    })
}

/// A fresh block of `len` ids, `(first, end)`: next_id's slow path, once
/// per block.
#[cold]
#[inline(never)]
fn take_id_block(len: u64) -> (u64, u64) {
    let start = NEXT_ID.fetch_add(len, Ordering::Relaxed);
    (start, start + len)
}

/// Configures a [`Coroutine`] before it is created: its name (shown by the
/// overflow report) and its stack size.
///
/// ```
/// use weft::coroutine::Coroutine;
///
/// let mut c = Coroutine::<(), (), u32>::builder()
///     .name("parser".to_string())
///     .stack_size(64 * 1024)
///     .build(|_, ()| 7)
///     .expect("a 64 KiB stack is a valid size");
/// assert_eq!(c.name(), Some("parser"));
/// assert_eq!(c.resume(()).as_return(), Some(&7));
/// ```
#[derive(Debug)]
#[must_use = "a builder does nothing until `build` is called"]
pub struct Builder<I, Y, R> {
    name: Option<String>,
    stack_size: usize,
    _types: PhantomData<fn(I) -> (Y, R)>,
}

impl<I, Y, R> Builder<I, Y, R> {
    /// A builder with no name and [`DEFAULT_STACK_SIZE`].
    ///
    /// ```
    /// use weft::coroutine::{Builder, DEFAULT_STACK_SIZE};
    ///
    /// let c = Builder::<(), (), ()>::new().build(|_, ()| {}).expect("the default size is valid");
    /// assert_eq!(c.stack_size(), DEFAULT_STACK_SIZE);
    /// assert_eq!(c.name(), None);
    /// ```
    pub fn new() -> Self {
        Builder { name: None, stack_size: DEFAULT_STACK_SIZE, _types: PhantomData }
    }

    /// Names the coroutine (for the overflow report and [`Coroutine::name`]).
    ///
    /// ```
    /// let c = weft::coroutine::Builder::<(), (), ()>::new().name("tokenizer".into()).build(|_, ()| {}).unwrap();
    /// assert_eq!(c.name(), Some("tokenizer"));
    /// ```
    pub fn name(mut self, name: String) -> Self {
        self.name = Some(name);
        self
    }

    /// The usable stack size in bytes; rounded up to a page multiple and to
    /// at least [`MIN_STACK_SIZE`]. Zero is rejected by [`build`](Self::build).
    /// The top 0.1 to 1.1 KiB of it hold weft's own records (who runs on
    /// the stack, for the overflow report, and the switch's slots, placed at
    /// an offset that differs from stack to stack so that switches between
    /// coroutines do not contend for one cache set).
    ///
    /// ```
    /// use weft::coroutine::{Builder, MIN_STACK_SIZE};
    ///
    /// let small = Builder::<(), (), ()>::new().stack_size(1000).build(|_, ()| {}).unwrap();
    /// assert_eq!(small.stack_size(), MIN_STACK_SIZE); // rounded up
    /// assert!(Builder::<(), (), ()>::new().stack_size(0).build(|_, ()| {}).is_err());
    /// ```
    pub fn stack_size(mut self, size: usize) -> Self {
        self.stack_size = size;
        self
    }

    /// Creates the coroutine. It does not run, and takes no stack, until the
    /// first [`Coroutine::resume`].
    ///
    /// ```
    /// use weft::coroutine::Builder;
    ///
    /// let mut echo = Builder::<u32, u32, ()>::new()
    ///     .stack_size(64 * 1024)
    ///     .build(|yielder, mut input| {
    ///         while input != 0 {
    ///             input = yielder.suspend(input);
    ///         }
    ///     })
    ///     .expect("64 KiB is a valid stack size");
    /// assert!(!echo.is_started());
    /// assert_eq!(echo.resume(5).as_yield(), Some(&5));
    /// ```
    ///
    /// # Errors
    ///
    /// [`io::ErrorKind::InvalidInput`] if the stack size is 0 or too large to
    /// map.
    #[track_caller]
    pub fn build<F>(self, f: F) -> io::Result<Coroutine<I, Y, R>>
    where
        F: FnOnce(&Yielder<I, Y>, I) -> R + 'static,
    {
        self.build_at(Location::caller(), f)
    }

    /// [`build`](Self::build) with an explicit spawn location (the runtime
    /// passes its caller's).
    pub(crate) fn build_at<F>(self, spawned_at: &'static Location<'static>, f: F) -> io::Result<Coroutine<I, Y, R>>
    where
        F: FnOnce(&Yielder<I, Y>, I) -> R + 'static,
    {
        let stack_size = stack::round_stack_size(self.stack_size)?;
        let closure = Box::into_raw(Box::new(f));
        // SAFETY: a fresh Box, handed over to the coroutine (`InBox`).
        Ok(unsafe {
            Coroutine::from_parts::<F, InBox>(
                closure,
                next_id(),
                self.name.map(String::into_boxed_str),
                stack_size,
                spawned_at,
            )
        })
    }
}

impl<I, Y, R> Default for Builder<I, Y, R> {
    fn default() -> Self {
        Self::new()
    }
}

/// A stackful coroutine: a closure running on its own guarded stack that can
/// [suspend](Yielder::suspend) from any depth of calls.
///
/// `I` is what each [`resume`](Coroutine::resume) passes in, `Y` what each
/// suspend hands out, `R` what the closure returns.
///
/// ```
/// use weft::coroutine::{Coroutine, CoroutineResult, Yielder};
///
/// // Suspends from inside a recursive walk: the whole call chain waits on
/// // the coroutine's stack until the next resume.
/// fn walk(yielder: &Yielder<(), u32>, depth: u32) {
///     if depth > 0 {
///         walk(yielder, depth - 1);
///         yielder.suspend(depth);
///     }
/// }
/// let mut depths = Coroutine::new(|yielder, ()| walk(yielder, 3));
/// let mut seen = Vec::new();
/// while let CoroutineResult::Yield(depth) = depths.resume(()) {
///     seen.push(depth);
/// }
/// assert_eq!(seen, [1, 2, 3]);
/// ```
///
/// Inside a coroutine of a [`Runtime`](crate::Runtime), a `Coroutine` runs
/// on behalf of the runtime coroutine that resumes it: [`crate::yield_now`],
/// [`crate::sleep`], a wait on a [`sync`](crate::sync) lock or a
/// [`net`](crate::net) socket suspend that runtime coroutine, with this
/// one's frames kept on this one's stack, and
/// [`crate::current`], [`crate::is_cancelled`] and
/// [`task_local!`](crate::task_local) values are the resuming coroutine's
/// (a `Coroutine` resumed later by another runtime coroutine sees that one).
/// Resumed from a plain OS thread, the same calls behave as on that thread:
/// `sleep` and the locks block it, and task-locals are unavailable.
///
/// A coroutine is `!Send`: once started, its stack may hold references to
/// the thread-locals of the thread it runs on (the compiler may even keep a
/// thread-local's address in a register across a suspension), so it must
/// keep running there.
///
/// Dropping a coroutine that is suspended mid-way unwinds its stack, so the
/// destructors of everything alive on it run exactly once. Two cases cannot
/// unwind and leak the stack instead (its remaining destructors never run):
/// `panic = "abort"` builds, and a coroutine that suspended from a destructor
/// while unwinding a panic (a second unwind there would abort the process).
/// While such a coroutine is suspended, `std::thread::panicking()` is true on
/// its thread: std counts panics per thread, not per stack. So a coroutine
/// that suspends while another one on its thread is suspended mid-unwind
/// (or while the thread itself unwinds) is taken for one that unwinds too,
/// and leaked if it is dropped before it suspends again in calmer times;
/// and a coroutine dropped mid-unwind leaves std's count raised on its
/// thread for good. Let a panicking coroutine finish its unwind rather than
/// suspend in a destructor.
///
/// A coroutine keeps the values it was resumed with, so it cannot outlive
/// them: it is invariant in its input type, and a coroutine that borrows
/// its input cannot be made to accept longer-lived ones:
///
/// ```compile_fail
/// use weft::coroutine::Coroutine;
///
/// fn extend<'a>(c: Coroutine<&'a String, (), usize>) -> Coroutine<&'static String, (), usize> {
///     c // error: lifetime may not live long enough
/// }
/// ```
///
/// ```
/// use weft::coroutine::Coroutine;
///
/// fn keep<'a>(c: Coroutine<&'a String, (), usize>) -> Coroutine<&'a String, (), usize> {
///     c
/// }
/// let s = String::from("kept");
/// let mut c = keep(Coroutine::new(|_, first: &String| first.len()));
/// assert_eq!(c.resume(&s).as_return(), Some(&4));
/// ```
pub struct Coroutine<I, Y, R> {
    /// What runs it: its stack, state and switch top. Dropped by hand in
    /// `drop`, before the name.
    core: ManuallyDrop<CoroutineCore<I, Y, R>>,
    id: u64,
    /// Dropped by hand in `drop`, once the core has given its stack back: a
    /// started coroutine's stack names it by this box (`overflow::claim`).
    name: ManuallyDrop<Option<Box<str>>>,
    spawned_at: &'static Location<'static>,
}

/// A coroutine without its name: its stack, its state and its switch top,
/// which is all that resuming it takes. [`Coroutine`] adds the id, name and
/// spawn site that its reports give; the runtime keeps those in its task,
/// beside a core of its own, where a whole `Coroutine` would hold them twice
/// (32 bytes of every task's allocation).
pub(crate) struct CoroutineCore<I, Y, R> {
    /// The switch top of `stack` (where the switch keeps the saved stack
    /// pointer and the link slot) while the coroutine is suspended: started
    /// and not finished. Null while fresh or finished, so a resume's hot path
    /// needs this one field (`State` says which of the two, on the cold path).
    top: *mut u8,
    state: State,
    /// `None` unless suspended. Dropped by hand in `drop`: no field is left
    /// for the drop glue, so the drop of a finished coroutine is a few
    /// inline tests instead of a call.
    stack: ManuallyDrop<Option<Stack>>,
    /// The word of the coroutine's last suspend: YIELDED, or
    /// YIELDED_PANICKING if it happened while the coroutine was unwinding a
    /// panic (stored as it came, one store on the hot path; see
    /// `suspended_panicking`).
    last_suspend: usize,
    /// Usable stack bytes (rounded).
    stack_size: usize,
    _types: PhantomData<Markers<I, Y, R>>,
}

/// A runtime task's coroutine (`()` in, out and at the end) can leave by a
/// *direct switch* to another such coroutine ([`Yielder::switch_to`]), so
/// the coroutine that comes back to a resume may not be the one it resumed.
/// The runtime's worker resumes its tasks through these functions, which
/// keep no reference to the coroutine across the switch, and then completes
/// the resume on whichever coroutine came back (it knows which: the running
/// task is recorded on every switch).
impl CoroutineCore<(), (), ()> {
    /// Makes a fresh coroutine ready for its first resume: takes a stack,
    /// names it for the overflow report by `owner`, and builds the first
    /// frame on it. Fails as [`Coroutine::try_resume`] does when no stack
    /// can be had. Inlined into its one (cold, out-of-line) caller, the
    /// worker's first run of a task, as `Coroutine`'s first resume is into
    /// its callers.
    ///
    /// # Safety
    ///
    /// `owner.name`'s bytes stay alive and unchanged until the coroutine
    /// has finished or been ended (its stack is given back then).
    #[inline(always)]
    pub(crate) unsafe fn prepare_first_resume(&mut self, owner: overflow::Owner<'_>) -> io::Result<()> {
        if matches!(self.state, State::Finished) {
            self.resumed_after_finish(owner.id);
        }
        // SAFETY: the caller's promise.
        unsafe { self.start(owner) }
    }

    /// Switches into the suspended coroutine at `this` and returns the word
    /// that ends the resume: pass it to [`switched_out`](Self::switched_out)
    /// of the coroutine that came back. `PAIRED`: the first resume (its
    /// `call` pairs with the coroutine's first `ret`), else a later one.
    ///
    /// # Safety
    ///
    /// `this` points to a suspended coroutine ([`is_suspended`](Self::is_suspended))
    /// that runs nowhere else, and no reference to it is held across this
    /// call.
    #[inline(always)]
    pub(crate) unsafe fn switch_in_raw<const PAIRED: bool>(this: *mut Self) -> usize {
        // SAFETY: a live coroutine (the caller's promise); read, not kept.
        let top = unsafe { (*this).top };
        debug_assert!(!top.is_null(), "resumed a coroutine that is not suspended");
        // Nothing crosses in it (`()` both ways): it only needs an address.
        let mut exchange = Exchange::<(), ()>::new(MaybeUninit::new(()));
        let word = std::ptr::from_mut(&mut exchange) as usize;
        // The coroutine comes back (or another that was switched to from it)
        // through `arch::suspend*` with that stack's link slot, before
        // `exchange` goes away.
        // SAFETY: suspended on the stack whose switch top is `top`.
        unsafe { if PAIRED { arch::resume(top, word) } else { arch::resume_unpaired(top, word) } }
    }

    /// Completes a resume for the coroutine that came back with `word`:
    /// records its suspend, or takes its finish (giving its stack back).
    /// `FINISH_INLINE` as in `switch_with`.
    ///
    /// # Safety
    ///
    /// `this` is the coroutine that switched back to the resume that
    /// returned `word` (`switch_in_raw`), and nothing else refers to it now.
    #[inline(always)]
    pub(crate) unsafe fn switched_out<const FINISH_INLINE: bool>(
        this: *mut Self,
        word: usize,
    ) -> CoroutineResult<(), ()> {
        // SAFETY: the caller's promise: ours alone now.
        let this = unsafe { &mut *this };
        if word > YIELDED_PANICKING {
            // SAFETY: a word other than the two YIELDEDs is its Finish's address.
            return unsafe { if FINISH_INLINE { this.read_finish(word) } else { this.take_finish(word) } };
        }
        this.last_suspend = word;
        CoroutineResult::Yield(())
    }

    /// Records that the running coroutine at `this` leaves by a direct
    /// switch ([`Yielder::switch_to`]), which is a suspend that is not
    /// unwinding a panic: no resume will complete for it.
    ///
    /// # Safety
    ///
    /// `this` is the running coroutine, and no reference to it is held
    /// (its resumer holds none across the switch: `switch_in_raw`).
    #[inline(always)]
    pub(crate) unsafe fn left_by_direct_switch(this: *mut Self) {
        // SAFETY: the caller's promise.
        let last = unsafe { &raw mut (*this).last_suspend };
        // A store only when the word changes (it is YIELDED already unless
        // the last suspend was made while panicking): a yield's stores are
        // what a following atomic read-modify-write waits for.
        // SAFETY: as above.
        unsafe {
            if *last != YIELDED {
                last.write(YIELDED);
            }
        }
    }
}

/// `*mut ()` makes a coroutine `!Send + !Sync` (it must stay on its thread:
/// see [`Coroutine`]); the function types tie the generic parameters without
/// owning values of them. `fn(I) -> I` makes it *invariant* in `I`: the
/// coroutine keeps the inputs it was resumed with on its stack, so a
/// `Coroutine<&'short T, ..>` must not pass for a `Coroutine<&'static T, ..>`
/// (resumed later, it would read an input that is gone). `Y` and `R` only
/// come out, so covariance there is sound.
type Markers<I, Y, R> = (*mut (), fn(I) -> I, fn() -> (Y, R));

/// The type-erased closure of a coroutine that has not started.
struct FreshStart {
    /// The closure `F`, as a thin pointer into its home `H` (below).
    closure: *mut (),
    /// `entry::<I, Y, R, F, H>`: runs the closure on the new stack.
    entry: arch::EntryFn,
    /// `H::discard::<F>`: drops the closure if the coroutine never starts.
    drop_closure: unsafe fn(*mut ()),
}

/// Where a fresh coroutine's closure waits for its first resume.
///
/// # Safety
///
/// An implementor's `take` and `discard` each end the coroutine's ownership
/// of the closure; exactly one of them is called, once.
unsafe trait ClosureHome {
    /// Moves the closure out (and frees its memory, if that is the
    /// coroutine's).
    ///
    /// # Safety
    ///
    /// `closure` is the pointer the coroutine was built with, to an `F`
    /// owned by the coroutine, taken or discarded no time before.
    unsafe fn take<F>(closure: *mut ()) -> F;

    /// Drops the closure of a coroutine that never started.
    ///
    /// # Safety
    ///
    /// As for [`take`](Self::take).
    unsafe fn discard<F>(closure: *mut ());
}

/// In its own `Box<F>`, which the coroutine owns (`Coroutine::new`,
/// `Builder::build`).
enum InBox {}

// SAFETY: each function consumes the Box once.
unsafe impl ClosureHome for InBox {
    unsafe fn take<F>(closure: *mut ()) -> F {
        // SAFETY: a Box<F> from Box::into_raw, owned by us (the caller's promise).
        *unsafe { Box::from_raw(closure.cast::<F>()) }
    }

    unsafe fn discard<F>(closure: *mut ()) {
        // SAFETY: as in `take`.
        drop(unsafe { Box::from_raw(closure.cast::<F>()) });
    }
}

/// In memory that the coroutine's creator owns and keeps in place
/// (`CoroutineCore::with_closure_in_place`): the coroutine owns only the value,
/// which it moves out at its first resume or drops in place.
enum InPlace {}

// SAFETY: each function ends the value's life once and leaves the memory.
unsafe impl ClosureHome for InPlace {
    unsafe fn take<F>(closure: *mut ()) -> F {
        // SAFETY: an initialised, aligned F that we own and nobody else
        // touches (the caller's promise); after this read it is moved out.
        unsafe { closure.cast::<F>().read() }
    }

    unsafe fn discard<F>(closure: *mut ()) {
        // SAFETY: as in `take`; dropped instead of moved out.
        unsafe { closure.cast::<F>().drop_in_place() }
    }
}

enum State {
    Fresh(FreshStart),
    Suspended,
    Finished,
}

impl<I, Y, R> Coroutine<I, Y, R> {
    /// Creates a coroutine that will run `f` on a stack of
    /// [`DEFAULT_STACK_SIZE`]. `f` receives the [`Yielder`] to suspend with
    /// and the input of the first `resume`.
    ///
    /// ```
    /// use weft::coroutine::{Coroutine, CoroutineResult};
    ///
    /// let mut greet = Coroutine::<&str, (), String>::new(|_, name| format!("hello, {name}"));
    /// assert_eq!(greet.resume("weft"), CoroutineResult::Return("hello, weft".to_string()));
    /// ```
    #[track_caller]
    pub fn new<F>(f: F) -> Self
    where
        F: FnOnce(&Yielder<I, Y>, I) -> R + 'static,
    {
        let closure = Box::into_raw(Box::new(f));
        // SAFETY: a fresh Box, handed over to the coroutine (`InBox`).
        unsafe { Coroutine::from_parts::<F, InBox>(closure, next_id(), None, DEFAULT_STACK_SIZE, Location::caller()) }
    }

    /// A [`Builder`] to set a name or a stack size.
    ///
    /// ```
    /// use weft::coroutine::Coroutine;
    ///
    /// let c = Coroutine::<(), (), ()>::builder().name("worker".into()).build(|_, ()| {}).unwrap();
    /// assert_eq!(c.name(), Some("worker"));
    /// ```
    pub fn builder() -> Builder<I, Y, R> {
        Builder::new()
    }

    /// # Safety
    ///
    /// `closure` satisfies the contract of `H` (see [`ClosureHome`] and its
    /// implementors): the coroutine owns the `F` it points at.
    unsafe fn from_parts<F, H>(
        closure: *mut F,
        id: u64,
        name: Option<Box<str>>,
        stack_size: usize,
        spawned_at: &'static Location<'static>,
    ) -> Self
    where
        F: FnOnce(&Yielder<I, Y>, I) -> R,
        H: ClosureHome,
    {
        // SAFETY: the caller's promise.
        let core = unsafe { CoroutineCore::from_parts::<F, H>(closure, stack_size) };
        Coroutine { core: ManuallyDrop::new(core), id, name: ManuallyDrop::new(name), spawned_at }
    }

    /// A process-unique id, as printed by the overflow report.
    ///
    /// ```
    /// use weft::coroutine::Coroutine;
    ///
    /// let a = Coroutine::<(), (), ()>::new(|_, ()| {});
    /// let b = Coroutine::<(), (), ()>::new(|_, ()| {});
    /// assert_ne!(a.id(), b.id());
    /// ```
    pub fn id(&self) -> u64 {
        self.id
    }

    /// The name given with [`Builder::name`].
    ///
    /// ```
    /// use weft::coroutine::Coroutine;
    ///
    /// assert_eq!(Coroutine::<(), (), ()>::new(|_, ()| {}).name(), None);
    /// let named = Coroutine::<(), (), ()>::builder().name("lexer".into()).build(|_, ()| {}).unwrap();
    /// assert_eq!(named.name(), Some("lexer"));
    /// ```
    pub fn name(&self) -> Option<&str> {
        self.name.as_deref()
    }

    /// The usable stack size in bytes (after rounding).
    ///
    /// ```
    /// use weft::coroutine::Coroutine;
    ///
    /// let c = Coroutine::<(), (), ()>::builder().stack_size(100_000).build(|_, ()| {}).unwrap();
    /// assert!(c.stack_size() >= 100_000);
    /// assert_eq!(c.stack_size() % 4096, 0); // whole pages
    /// ```
    pub fn stack_size(&self) -> usize {
        self.core.stack_size
    }

    /// Whether the coroutine has been resumed at least once.
    ///
    /// ```
    /// use weft::coroutine::Coroutine;
    ///
    /// let mut c = Coroutine::<(), (), ()>::new(|yielder, ()| yielder.suspend(()));
    /// assert!(!c.is_started());
    /// c.resume(());
    /// assert!(c.is_started());
    /// ```
    pub fn is_started(&self) -> bool {
        !matches!(self.core.state, State::Fresh(_))
    }

    /// Whether the closure has returned (or panicked).
    ///
    /// ```
    /// use weft::coroutine::Coroutine;
    ///
    /// let mut c = Coroutine::<(), (), ()>::new(|yielder, ()| yielder.suspend(()));
    /// c.resume(()); // suspends
    /// assert!(!c.is_finished());
    /// c.resume(()); // returns
    /// assert!(c.is_finished());
    /// ```
    pub fn is_finished(&self) -> bool {
        matches!(self.core.state, State::Finished)
    }

    /// Runs the coroutine until it suspends or finishes.
    ///
    /// The first resume starts the closure with `input`; later ones make the
    /// pending [`Yielder::suspend`] return `input`.
    ///
    /// ```
    /// use std::panic::{self, AssertUnwindSafe};
    /// use weft::coroutine::{Coroutine, CoroutineResult};
    ///
    /// let mut doubler = Coroutine::<u32, u32, ()>::new(|yielder, mut n| {
    ///     loop {
    ///         n = yielder.suspend(2 * n);
    ///     }
    /// });
    /// assert_eq!(doubler.resume(1), CoroutineResult::Yield(2));
    /// assert_eq!(doubler.resume(21), CoroutineResult::Yield(42));
    ///
    /// // A panic inside continues in the resumer, with its payload.
    /// let mut faulty = Coroutine::<(), (), ()>::new(|_, ()| panic!("inside"));
    /// let payload = panic::catch_unwind(AssertUnwindSafe(|| faulty.resume(()))).unwrap_err();
    /// assert_eq!(payload.downcast_ref::<&str>(), Some(&"inside"));
    /// assert!(faulty.is_finished());
    /// ```
    ///
    /// # Panics
    ///
    /// - If the coroutine panics, the panic continues in the caller, with the
    ///   same payload (catch it with [`std::panic::catch_unwind`]); the
    ///   coroutine is then finished.
    /// - If the coroutine has already finished.
    /// - If this is the first resume and no stack can be mapped (see
    ///   [`try_resume`](Self::try_resume) to get that as an error).
    #[inline(always)]
    pub fn resume(&mut self, input: I) -> CoroutineResult<Y, R> {
        if self.core.top.is_null() {
            return self.resume_fresh_or_finished(input);
        }
        // SAFETY: a non-null top: started, not finished, so suspended.
        unsafe { self.core.resume_suspended(input) }
    }

    /// Like [`resume`](Self::resume), but a failure to map the stack at the
    /// first resume is returned as an error (and `input` dropped), leaving the
    /// coroutine unstarted, so it can be retried or dropped.
    ///
    /// ```
    /// use weft::coroutine::{Coroutine, CoroutineResult};
    ///
    /// let mut c = Coroutine::<u8, (), u8>::new(|_, x| x + 1);
    /// match c.try_resume(1) {
    ///     Ok(result) => assert_eq!(result, CoroutineResult::Return(2)),
    ///     Err(e) => eprintln!("no stack for the coroutine: {e}"), // e.g. vm.max_map_count reached
    /// }
    /// ```
    ///
    /// # Errors
    ///
    /// The stack could not be mapped: out of memory, or the process reached
    /// `vm.max_map_count` (the message says which, and how to raise it).
    ///
    /// # Panics
    ///
    /// As [`resume`](Self::resume), except that a stack that cannot be mapped
    /// is returned as an error.
    #[inline(always)]
    pub fn try_resume(&mut self, input: I) -> io::Result<CoroutineResult<Y, R>> {
        if self.core.top.is_null() {
            return self.try_resume_fresh_or_finished(input);
        }
        // SAFETY: as in `resume`.
        Ok(unsafe { self.core.resume_suspended(input) })
    }

    /// [`resume`](Self::resume) of a coroutine that is not suspended: the
    /// first resume, or a resume after the end (a panic).
    #[cold]
    #[inline(never)]
    fn resume_fresh_or_finished(&mut self, input: I) -> CoroutineResult<Y, R> {
        if matches!(self.core.state, State::Finished) {
            self.core.resumed_after_finish(self.id);
        }
        if let Err(e) = self.start() {
            panic!("cannot start coroutine {}: {e}", self.id);
        }
        // SAFETY: `start` left it suspended on its new stack.
        unsafe { self.core.switch_with::<true>(input) }
    }

    /// [`try_resume`](Self::try_resume) of a coroutine that is not
    /// suspended.
    #[cold]
    #[inline(never)]
    fn try_resume_fresh_or_finished(&mut self, input: I) -> io::Result<CoroutineResult<Y, R>> {
        if matches!(self.core.state, State::Finished) {
            self.core.resumed_after_finish(self.id);
        }
        self.start()?;
        // SAFETY: `start` left it suspended on its new stack.
        Ok(unsafe { self.core.switch_with::<true>(input) })
    }

    /// Takes a stack, names it by our id, name and spawn site, and builds
    /// the first frame (`CoroutineCore::start`). Inlined into its two
    /// (cold, out-of-line) callers: one frame for the whole first resume.
    #[inline(always)]
    fn start(&mut self) -> io::Result<()> {
        // SAFETY: the name is our own boxed str, never changed, and dropped
        // only after the core has finished or been ended (`drop`).
        unsafe {
            self.core.start(overflow::Owner { id: self.id, name: self.name.as_deref(), spawned_at: self.spawned_at })
        }
    }
}

impl<I, Y, R> CoroutineCore<I, Y, R> {
    /// A coroutine whose closure lives in memory the caller owns (the
    /// runtime keeps it inside its task's allocation, so a spawn allocates
    /// once), with a stack size already rounded by
    /// `stack::round_stack_size`.
    ///
    /// # Safety
    ///
    /// - `closure` points at an initialised `F`, aligned, that stays in
    ///   place (not moved, read, written or dropped by anyone else) until the
    ///   coroutine is dropped. The coroutine owns that value: it moves it
    ///   out at its first resume, or drops it in place if it is dropped
    ///   without having started. The memory itself stays the caller's, and
    ///   may be freed once the coroutine has been dropped.
    pub(crate) unsafe fn with_closure_in_place<F>(closure: *mut F, stack_size: usize) -> Self
    where
        F: FnOnce(&Yielder<I, Y>, I) -> R + 'static,
    {
        debug_assert_eq!(stack::round_stack_size(stack_size).ok(), Some(stack_size), "stack size not rounded");
        // SAFETY: the caller's promise is `InPlace`'s contract.
        unsafe { CoroutineCore::from_parts::<F, InPlace>(closure, stack_size) }
    }

    /// # Safety
    ///
    /// `closure` satisfies the contract of `H` (see [`ClosureHome`] and its
    /// implementors): the coroutine owns the `F` it points at.
    unsafe fn from_parts<F, H>(closure: *mut F, stack_size: usize) -> Self
    where
        F: FnOnce(&Yielder<I, Y>, I) -> R,
        H: ClosureHome,
    {
        let fresh =
            FreshStart { closure: closure.cast(), entry: entry::<I, Y, R, F, H>, drop_closure: H::discard::<F> };
        CoroutineCore {
            top: std::ptr::null_mut(),
            state: State::Fresh(fresh),
            stack: ManuallyDrop::new(None),
            last_suspend: YIELDED,
            stack_size,
            _types: PhantomData,
        }
    }

    #[cold]
    #[inline(never)]
    fn resumed_after_finish(&self, id: u64) -> ! {
        panic!("coroutine {id} was resumed after it finished; check `is_finished()` before resuming");
    }

    /// Whether the coroutine has started and not finished: a resume of it
    /// takes the hot path ([`resume_suspended`](Self::resume_suspended)).
    #[inline(always)]
    pub(crate) fn is_suspended(&self) -> bool {
        !self.top.is_null()
    }

    /// For a scheduler that will resume this coroutine after a few others:
    /// starts loading the field a resume reads first (its switch top), the
    /// first of three stages (then [`prefetch_resume`](Self::prefetch_resume)
    /// without and with `frame`), each called a coroutine ahead of the
    /// next, so that each reads only what the one before brought in. A
    /// hint, which reads nothing: any address will do.
    #[inline(always)]
    pub(crate) fn prefetch_top(this: *const Self) {
        arch::prefetch(this.cast::<u8>().wrapping_add(std::mem::offset_of!(Self, top)));
    }

    /// The later stages of [`prefetch_top`](Self::prefetch_top): starts
    /// loading the line of the stack's switch slots, or (`frame`) the saved
    /// frame a resume pops (see `arch::prefetch_frame`). Nothing for a
    /// coroutine that is not suspended.
    ///
    /// # Safety
    ///
    /// `this` is a live coroutine that nobody resumes or drops during the
    /// call (its stack stays mapped).
    #[inline(always)]
    pub(crate) unsafe fn prefetch_resume(this: *const Self, frame: bool) {
        // SAFETY: the caller's promise; a read of one field.
        let top = unsafe { (*this).top };
        if top.is_null() {
            return;
        }
        if frame {
            // SAFETY: suspended (a non-null top), so its stack is mapped and
            // its sp slot holds the saved stack pointer.
            unsafe { arch::prefetch_frame(top) };
        } else {
            arch::prefetch_slots(top);
        }
    }

    /// Switches in with `input` and turns the word that comes back into the
    /// result: [`resume`](Self::resume) of a coroutine known to be
    /// suspended.
    ///
    /// # Safety
    ///
    /// The coroutine is suspended ([`is_suspended`](Self::is_suspended)).
    #[inline(always)]
    pub(crate) unsafe fn resume_suspended(&mut self, input: I) -> CoroutineResult<Y, R> {
        // SAFETY: the caller's promise.
        unsafe { self.switch_with::<false>(input) }
    }

    /// [`resume_suspended`](Self::resume_suspended), with the finish read
    /// out of line (`FINISH_INLINE` false: the hot path of a later resume)
    /// or in line (true: the cold first resume, where a coroutine that runs
    /// to its end without suspending is common and deserves no extra call).
    ///
    /// # Safety
    ///
    /// The coroutine is suspended ([`is_suspended`](Self::is_suspended)).
    #[inline(always)]
    unsafe fn switch_with<const FINISH_INLINE: bool>(&mut self, input: I) -> CoroutineResult<Y, R> {
        let mut exchange = Exchange::<I, Y>::new(MaybeUninit::new(input));
        // SAFETY: suspended (the caller's promise); the input is set.
        let word = unsafe { self.switch_in(&mut exchange, 0) };
        if word > YIELDED_PANICKING {
            // SAFETY: a word other than the two YIELDEDs is its Finish's address.
            return unsafe { if FINISH_INLINE { self.read_finish(word) } else { self.take_finish(word) } };
        }
        debug_assert!(word == YIELDED || word == YIELDED_PANICKING, "a suspend's word {word:#x}");
        self.last_suspend = word;
        // SAFETY: YIELDED or YIELDED_PANICKING: the suspend wrote `yielded`,
        // which nobody has read.
        CoroutineResult::Yield(unsafe { exchange.yielded.assume_init_read() })
    }

    /// Whether the coroutine's last suspend happened while it was unwinding a
    /// panic (then it must not be unwound again).
    fn suspended_panicking(&self) -> bool {
        self.last_suspend == YIELDED_PANICKING
    }

    /// Takes a stack, claims it for `owner` (the overflow report names the
    /// coroutine by it) and builds its first frame; the state becomes
    /// Suspended. Inlined into its callers: one frame for the whole first
    /// resume.
    ///
    /// # Safety
    ///
    /// `owner.name`'s bytes stay alive and unchanged until the coroutine has
    /// finished or been ended.
    #[inline(always)]
    unsafe fn start(&mut self, owner: overflow::Owner<'_>) -> io::Result<()> {
        let stack = match stack::cache::take_fast(self.stack_size) {
            Some(stack) => stack,
            None => stack::cache::take_slow(self.stack_size)?,
        };
        let State::Fresh(fresh) = std::mem::replace(&mut self.state, State::Suspended) else {
            unreachable!("start() is only called on a fresh coroutine")
        };
        // A stack just taken is idle, and linked (a Stack is linked while it
        // lives). The name outlives the claim (the caller's promise):
        // `finish` releases the stack, or `leak_stack` unlinks it, before the
        // coroutine has finished or been ended.
        // SAFETY: an idle, linked stack and a name that outlives the claim.
        unsafe { overflow::claim(&stack, owner) };
        let top = stack.switch_top();
        // SAFETY: the switch top of a Stack is 16-byte aligned and the pages
        // below it are ours and writable (a stack is at least MIN_STACK_SIZE).
        unsafe { arch::init_stack(top, fresh.entry, fresh.closure) };
        self.top = top;
        // A fresh coroutine holds no stack: nothing to drop here.
        debug_assert!(self.stack.is_none());
        std::mem::forget(self.stack.replace(stack));
        // The closure now belongs to the new stack's entry function (FreshStart
        // owns it only through a raw pointer, so letting `fresh` go frees nothing).
        let _ = fresh;
        Ok(())
    }

    /// Switches into the coroutine with `exchange` (`flags`: 0, or UNWIND)
    /// and returns the word it comes back with.
    ///
    /// # Safety
    ///
    /// The coroutine is suspended (`self.top` is not null); `exchange`'s
    /// input is set unless `flags` is UNWIND.
    #[inline(always)]
    unsafe fn switch_in(&mut self, exchange: &mut Exchange<I, Y>, flags: usize) -> usize {
        debug_assert!(matches!(self.state, State::Suspended));
        const { assert!(align_of::<Exchange<I, Y>>() > UNWIND, "the UNWIND bit needs the exchange aligned") };
        const { assert!(align_of::<Finish<R>>() > YIELDED_PANICKING, "a Finish's address is not a YIELDED word") };
        // The coroutine always comes back through `arch::suspend` on the same
        // stack (from `Yielder::suspend`, or from its entry function when it
        // finishes), before `exchange` goes away.
        // SAFETY: `self.top` is the switch top of our stack, prepared by
        // `start`; the coroutine is suspended and runs nowhere else (we hold
        // `&mut self`).
        unsafe {
            let word = std::ptr::from_mut(exchange) as usize | flags;
            arch::resume(self.top, word)
        }
    }

    /// The switch top of the coroutine's stack while it is suspended (null
    /// while fresh or finished): where a direct switch to it goes
    /// ([`Yielder::switch_to`]).
    #[inline(always)]
    pub(crate) fn switch_top(&self) -> *mut u8 {
        self.top
    }

    /// The coroutine has finished: give its stack back, hand over its result.
    ///
    /// # Safety
    ///
    /// `word` is what the coroutine's last switch back handed over: the
    /// address of its `Finish<R>`, on its stack, not read yet.
    #[cold]
    #[inline(never)]
    unsafe fn take_finish(&mut self, word: usize) -> CoroutineResult<Y, R> {
        // SAFETY: the caller's promise.
        unsafe { self.read_finish(word) }
    }

    /// [`take_finish`](Self::take_finish), in line.
    ///
    /// # Safety
    ///
    /// As for `take_finish`.
    #[inline(always)]
    unsafe fn read_finish(&mut self, word: usize) -> CoroutineResult<Y, R> {
        // SAFETY: the caller's promise: a Finish<R> on the stack we still
        // hold (`finish` below gives it back), moved out once.
        let finish = unsafe { (word as *const Finish<R>).read() };
        self.finish();
        match finish {
            Finish::Returned(value) => CoroutineResult::Return(value),
            Finish::Panicked(payload) => panic::resume_unwind(payload),
            // Unwound although nobody dropped it: an outer coroutine
            // suspended from inside this one (a task that parked from a
            // generator it drives) and is being unwound itself. The unwind
            // went through this coroutine's frames to its entry; carry it on
            // through the outer one's.
            Finish::Unwound => panic::resume_unwind(Box::new(ForcedUnwind)),
        }
    }

    /// The coroutine has left its stack for the last time: give it back.
    #[inline]
    fn finish(&mut self) {
        self.state = State::Finished;
        self.top = std::ptr::null_mut();
        if let Some(stack) = self.stack.take() {
            // SAFETY: a Stack is linked while it lives; nothing runs on it
            // any more.
            unsafe { overflow::release(&stack) };
            stack::cache::give_back(stack);
        }
    }

    /// Unwinds a suspended coroutine's stack so its live values are dropped.
    ///
    /// A coroutine that suspended from a destructor while unwinding a panic
    /// cannot be unwound again (a second panic inside that destructor would
    /// abort the process): its stack is leaked instead, and its remaining
    /// destructors never run.
    #[cfg(panic = "unwind")]
    fn force_unwind(&mut self) {
        // A thread's `thread_local!` destructors may drop a suspended
        // coroutine after std has removed the thread's alternate signal
        // stack: an overflow during this unwind must still be reported.
        stack::overflow::ensure_alt_stack();
        while !self.top.is_null() {
            if self.suspended_panicking() {
                self.leak_stack();
                return;
            }
            let mut exchange = Exchange::<I, Y>::new(MaybeUninit::uninit());
            // SAFETY: suspended (non-null top); UNWIND carries no input.
            let word = unsafe { self.switch_in(&mut exchange, UNWIND) };
            if word > YIELDED_PANICKING {
                // Returned, panicked in a destructor, or unwound: finished
                // either way. What it finished with is dropped after the
                // stack went back.
                // SAFETY: its Finish's address, on the stack we still hold.
                let finish = unsafe { (word as *const Finish<R>).read() };
                self.finish();
                drop(finish);
            } else {
                // The closure caught the unwind and suspended again: drop what
                // it yielded and ask again (or leak, if it is unwinding).
                self.last_suspend = word;
                // SAFETY: a suspend wrote `yielded`, which nobody has read.
                unsafe { exchange.yielded.assume_init_drop() };
            }
        }
    }

    /// With panic=abort nothing can unwind: keep the stack mapped forever so
    /// nothing on it is freed while still referenced, and run no destructors.
    #[cfg(not(panic = "unwind"))]
    fn force_unwind(&mut self) {
        self.leak_stack();
    }

    /// Gives up on a suspended coroutine without running its destructors:
    /// its stack stays mapped forever, so nothing on it is freed while
    /// something might still point at it.
    #[cold]
    fn leak_stack(&mut self) {
        tracing::warn!(
            coroutine = self.stack.as_ref().map_or(0, overflow::claimant),
            "dropping a coroutine that cannot be unwound (it suspended while unwinding a panic, or panic=abort); \
             its stack is leaked and its remaining destructors do not run"
        );
        if let Some(stack) = self.stack.take() {
            stack.leak();
        }
        self.state = State::Finished;
        self.top = std::ptr::null_mut();
    }
}

/// Stack a callback run on a suspended coroutine's stack may need
/// ([`CoroutineCore::on_suspended_stack`]): enough for the system unwinder
/// (a few KiB) and `std::backtrace` (its capture allocates, and the
/// allocator's slow path uses some stack), with room to spare.
pub(crate) const WALK_STACK_MARGIN: usize = 32 * 1024;

/// Why [`CoroutineCore::on_suspended_stack`] did not run its callback.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum WalkRefused {
    /// The coroutine is not suspended (fresh or finished).
    NotSuspended,
    /// It suspended from inside a coroutine it drives (a generator), so its
    /// saved stack pointer is on that other stack, whose bounds are unknown.
    OnAnotherStack,
    /// Less than [`WALK_STACK_MARGIN`] is left below its saved frame.
    LowOnStack { free: usize },
}

impl fmt::Display for WalkRefused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WalkRefused::NotSuspended => f.write_str("not suspended"),
            WalkRefused::OnAnotherStack => f.write_str("suspended inside a nested coroutine's stack"),
            WalkRefused::LowOnStack { free } => write!(
                f,
                "only {} KiB of its stack left free (a walk needs {} KiB)",
                free / 1024,
                WALK_STACK_MARGIN / 1024
            ),
        }
    }
}

impl<I, Y, R> CoroutineCore<I, Y, R> {
    /// Runs `f` on this suspended coroutine's own stack, just below its
    /// saved frame, in such a way that a backtrace taken in `f` walks the
    /// coroutine's frames, from where it suspended down to its entry (see
    /// `arch::call_on_stack`); [`stack_walk_bounds`] tells which frames of
    /// such a walk are the coroutine's. The coroutine is left exactly as it
    /// was. A panic in `f` is caught and dropped.
    ///
    /// Refused (and `f` not run) unless the coroutine is suspended on its
    /// own stack with at least [`WALK_STACK_MARGIN`] bytes free below it.
    pub(crate) fn on_suspended_stack(&mut self, f: &mut dyn FnMut()) -> Result<(), WalkRefused> {
        if !matches!(self.state, State::Suspended) || self.top.is_null() {
            return Err(WalkRefused::NotSuspended);
        }
        // SAFETY: a started coroutine's stack has its sp slot at the top.
        let sp = unsafe { arch::sp_slot(self.top).read() } as usize;
        let lowest = self.stack.as_ref().map_or(0, |stack| stack.guard().end);
        let highest = self.top as usize - arch::STACK_RESERVED_TOP - arch::FRAME_SIZE;
        if !(lowest..=highest).contains(&sp) {
            return Err(WalkRefused::OnAnotherStack);
        }
        let free = sp - lowest;
        if free < WALK_STACK_MARGIN {
            return Err(WalkRefused::LowOnStack { free });
        }
        /// Runs the `&mut dyn FnMut()` that `data` points at.
        ///
        /// # Safety
        ///
        /// `data` points at a live `&mut dyn FnMut()`.
        unsafe extern "sysv64" fn run(data: *mut ()) {
            // SAFETY: the caller's promise.
            let f = unsafe { &mut *data.cast::<&mut dyn FnMut()>() };
            // A panic must not leave the callback (it would abort).
            let _ = panic::catch_unwind(AssertUnwindSafe(f));
        }
        let mut f = f;
        // `self.top` is our prepared stack and the coroutine is suspended on
        // it (checked above: its frame lies on this stack); it cannot be
        // resumed or dropped meanwhile (we hold `&mut self`, and a coroutine
        // is !Send, so this is its thread). `free` bytes of mapped stack, at
        // least WALK_STACK_MARGIN, lie between its frame and the guard page.
        // SAFETY: as just said; `run` catches panics and only calls `f`,
        // which cannot reach this coroutine (borrowed mutably here).
        unsafe { arch::call_on_stack(self.top, run, (&raw mut f).cast()) };
        Ok(())
    }
}

/// The return addresses that delimit a suspended coroutine's frames in a
/// walk taken inside [`CoroutineCore::on_suspended_stack`]: its frames are those
/// after the one whose return address is `.0`, up to and including the one
/// whose return address is `.1` (its entry trampoline).
pub(crate) fn stack_walk_bounds() -> (usize, usize) {
    let bounds = arch::walk_bounds();
    (bounds.first, bounds.last)
}

impl<I, Y, R> Drop for Coroutine<I, Y, R> {
    #[inline]
    fn drop(&mut self) {
        // The core first (its drop ends it: unwinds a suspended one), as a
        // started coroutine's stack is claimed in our name until it is
        // given back. If that drop panics (a value the coroutine yielded
        // while being unwound panicked when dropped), the panic leaves here
        // with both fields leaked: the stack stays claimed and mapped, and
        // nothing else runs on it.
        // SAFETY: each dropped here only, once, and not used afterwards.
        unsafe {
            ManuallyDrop::drop(&mut self.core);
            ManuallyDrop::drop(&mut self.name);
        }
    }
}

impl<I, Y, R> Drop for CoroutineCore<I, Y, R> {
    #[inline]
    fn drop(&mut self) {
        // A finished coroutine owns nothing: one test.
        if !matches!(self.state, State::Finished) {
            self.end();
        }
        // SAFETY: dropped here only, once, and not used afterwards. (`end`
        // left no stack: it finished or leaked it.)
        unsafe { ManuallyDrop::drop(&mut self.stack) };
    }
}

impl<I, Y, R> CoroutineCore<I, Y, R> {
    /// A coroutine that has already finished and owns nothing: the runtime's
    /// stand-in where a task has no coroutine (a `spawn_blocking` cell).
    pub(crate) fn finished() -> Self {
        CoroutineCore {
            top: std::ptr::null_mut(),
            state: State::Finished,
            stack: ManuallyDrop::new(None),
            last_suspend: YIELDED,
            stack_size: 0,
            _types: PhantomData,
        }
    }

    /// Gives up on the coroutine without unwinding it, if it is suspended:
    /// its stack stays mapped for ever and its destructors do not run (the
    /// runtime's shutdown, for a coroutine whose frames others still borrow
    /// from); otherwise as [`end`](Self::end).
    pub(crate) fn leak(&mut self) {
        if matches!(self.state, State::Suspended) {
            self.leak_stack();
        } else {
            self.end();
        }
    }

    /// What dropping the coroutine does, in place: drops a fresh one's
    /// closure, unwinds a suspended one's stack; the coroutine is finished
    /// afterwards. (The runtime ends its tasks' coroutines where they lie,
    /// inside the task's cell.)
    pub(crate) fn end(&mut self) {
        match std::mem::replace(&mut self.state, State::Finished) {
            State::Fresh(fresh) => {
                // SAFETY: the closure never started, so we still own it.
                unsafe { (fresh.drop_closure)(fresh.closure) };
            }
            State::Suspended => {
                self.state = State::Suspended;
                self.force_unwind();
            }
            State::Finished => {}
        }
    }
}

impl<I, Y, R> fmt::Debug for Coroutine<I, Y, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match self.core.state {
            State::Fresh(_) => "fresh",
            State::Suspended => "suspended",
            State::Finished => "finished",
        };
        f.debug_struct("Coroutine")
            .field("id", &self.id)
            .field("name", &self.name)
            .field("state", &state)
            .field("stack_size", &self.core.stack_size)
            .finish()
    }
}

/// Coroutine -> resumer: it suspended with a value (`yielded` is set).
const YIELDED: usize = 0;
/// Coroutine -> resumer: as YIELDED, and it suspended while its stack was
/// unwinding a panic (from a destructor), so it must not be force-unwound.
const YIELDED_PANICKING: usize = 1;
/// Resumer -> coroutine, or'ed into the exchange's address: unwind instead
/// of returning from the pending suspend (there is no input).
const UNWIND: usize = 1;

/// One resume's mailbox, on the resumer's stack; see the module docs.
/// Which field is set is said by the word that crossed the switch.
#[repr(C, align(2))] // the UNWIND bit: its address is even even when it is empty
struct Exchange<I, Y> {
    /// Resumer -> coroutine; set unless the resume is an UNWIND.
    input: MaybeUninit<I>,
    /// Coroutine -> resumer: the value of a suspend (YIELDED*).
    yielded: MaybeUninit<Y>,
}

impl<I, Y> Exchange<I, Y> {
    /// Whether an exchange carries anything: when it does not (`()` both
    /// ways), the coroutine need not remember where it is.
    const CARRIES_DATA: bool = size_of::<I>() + size_of::<Y>() > 0;

    #[inline(always)]
    fn new(input: MaybeUninit<I>) -> Self {
        Exchange { input, yielded: MaybeUninit::uninit() }
    }
}

enum Finish<R> {
    Returned(R),
    Panicked(Box<dyn Any + Send + 'static>),
    /// Unwound on request (drop).
    Unwound,
}

/// The panic payload used to unwind a coroutine that is being dropped (or,
/// in the runtime, cancelled or shut down).
struct ForcedUnwind;

/// Whether a panic payload caught with [`std::panic::catch_unwind`] is
/// weft's own *forced unwind*, not a panic: a coroutine being cancelled
/// ([`JoinHandle::cancel`](crate::JoinHandle::cancel)), unwound by its
/// runtime's shutdown, or dropped while suspended unwinds its stack with it,
/// so that its destructors run.
///
/// Code that catches panics inside a coroutine must resume a forced unwind
/// with [`std::panic::resume_unwind`], not swallow it: a swallowed one
/// leaves the coroutine running (a cancel is then lost; a dropped or shut
/// down coroutine is asked again at its next suspension).
///
/// ```
/// use std::panic::{self, AssertUnwindSafe};
/// use std::time::Duration;
///
/// let handle = weft::spawn(|| {
///     let caught = panic::catch_unwind(AssertUnwindSafe(|| weft::sleep(Duration::from_secs(3600))));
///     if let Err(payload) = caught {
///         if weft::is_forced_unwind(&*payload) {
///             panic::resume_unwind(payload); // cancelled: let the unwind go on
///         }
///         eprintln!("the sleep panicked"); // a real panic: handle it
///     }
/// });
/// handle.cancel();
/// assert!(handle.join().unwrap_err().is_cancelled());
/// ```
pub fn is_forced_unwind(payload: &(dyn Any + Send)) -> bool {
    payload.is::<ForcedUnwind>()
}

/// Starts a forced unwind of the running coroutine's stack (a cancel): the
/// same payload a drop uses, raised without the panic hook.
pub(crate) fn start_forced_unwind() -> ! {
    panic::resume_unwind(Box::new(ForcedUnwind))
}

/// The coroutine's handle on its own suspension, passed to its closure.
///
/// It can only be used on the coroutine it was given to (it is neither
/// `Send` nor `Sync`, and the closure only borrows it), but it can be passed
/// down to any function the closure calls:
///
/// ```
/// use weft::coroutine::{Coroutine, Yielder};
///
/// fn emit_words(yielder: &Yielder<(), String>, text: &str) {
///     for word in text.split_whitespace() {
///         yielder.suspend(word.to_uppercase());
///     }
/// }
/// let mut words = Coroutine::new(|yielder, ()| emit_words(yielder, "stackful coroutines"));
/// assert_eq!(words.resume(()).as_yield().map(String::as_str), Some("STACKFUL"));
/// assert_eq!(words.resume(()).as_yield().map(String::as_str), Some("COROUTINES"));
/// assert_eq!(words.resume(()).as_return(), Some(&()));
/// ```
pub struct Yielder<I, Y> {
    /// The top of the coroutine's stack (its sp and link slots).
    top: *mut u8,
    /// The exchange of the resume in progress (updated at every resume
    /// whose exchange carries data; see `Exchange::CARRIES_DATA`).
    exchange: Cell<*mut Exchange<I, Y>>,
    _not_send: PhantomData<*mut ()>,
}

impl<I, Y> Yielder<I, Y> {
    /// Suspends the coroutine, making the pending `resume` return
    /// [`CoroutineResult::Yield(value)`](CoroutineResult::Yield), and returns
    /// the input of the next `resume`.
    ///
    /// If the coroutine is dropped while suspended here, this unwinds instead
    /// of returning (so destructors on the coroutine's stack run).
    ///
    /// ```
    /// use std::cell::Cell;
    /// use std::rc::Rc;
    /// use weft::coroutine::Coroutine;
    ///
    /// // A running sum: each resume's input comes back out of `suspend`.
    /// let mut sum = Coroutine::<i64, i64, ()>::new(|yielder, mut input| {
    ///     let mut total = 0;
    ///     loop {
    ///         total += input;
    ///         input = yielder.suspend(total);
    ///     }
    /// });
    /// assert_eq!(sum.resume(5).as_yield(), Some(&5));
    /// assert_eq!(sum.resume(-2).as_yield(), Some(&3));
    ///
    /// // Dropped while suspended: the stack unwinds, destructors run.
    /// struct Flag(Rc<Cell<bool>>);
    /// impl Drop for Flag {
    ///     fn drop(&mut self) {
    ///         self.0.set(true);
    ///     }
    /// }
    /// let dropped = Rc::new(Cell::new(false));
    /// let flag = Flag(Rc::clone(&dropped));
    /// let mut holder = Coroutine::<(), (), ()>::new(move |yielder, ()| {
    ///     let _flag = flag;
    ///     yielder.suspend(());
    /// });
    /// holder.resume(());
    /// drop(holder);
    /// assert!(dropped.get());
    /// ```
    #[inline(always)] // the switch belongs in the caller's code: see asm/switch_x86_64_sysv.S
    pub fn suspend(&self, value: Y) -> I {
        self.suspend_via::<true>(value)
    }

    /// [`suspend`](Self::suspend) for a suspend deep inside the coroutine's
    /// own calls (the runtime's task switches): the switch back to the resumer does
    /// not pair with its `call` (`arch::suspend_unpaired`), which a deep
    /// suspend would mispredict anyway.
    #[inline(always)]
    pub(crate) fn suspend_unpaired(&self, value: Y) -> I {
        self.suspend_via::<false>(value)
    }

    #[inline(always)]
    fn suspend_via<const PAIRED: bool>(&self, value: Y) -> I {
        let head = self.exchange.get();
        // SAFETY: `head` is the exchange of the resume in progress: it lives
        // on the resumer's stack, which is not running until we switch back,
        // and its `yielded` is empty (the resumer moved out the last one).
        unsafe { (*head).yielded.write(value) };
        let word = if std::thread::panicking() { YIELDED_PANICKING } else { YIELDED };
        // SAFETY: we run on the coroutine's stack (switch top `self.top`),
        // inside the `resume` that gave us `head`; our live values are kept.
        let back =
            unsafe { if PAIRED { arch::suspend(self.top, word) } else { arch::suspend_unpaired(self.top, word) } };
        if back & UNWIND != 0 {
            if Exchange::<I, Y>::CARRIES_DATA {
                self.unwind_for_drop(back);
            }
            // An exchange that carries nothing (`()` both ways: a runtime
            // task's) is never read, so there is nothing to remember and no
            // `self` to keep across the switch for it: one register spill
            // less on every such suspend.
            forced_unwind();
        }
        let head = back as *mut Exchange<I, Y>;
        if Exchange::<I, Y>::CARRIES_DATA {
            self.exchange.set(head);
        }
        // SAFETY: the new resume's exchange, valid while we run; its input is
        // set (not an UNWIND) and only we take it.
        unsafe { (*head).input.assume_init_read() }
    }
}

impl Yielder<(), ()> {
    /// Leaves this running coroutine for the suspended coroutine whose
    /// switch top is `to`, which continues from its own suspend (or direct
    /// switch) as if resumed: a runtime task's yield, straight to the next
    /// task of its worker, without passing through the worker in between
    /// (`arch::switch_direct`). Returns when something continues this
    /// coroutine again: its resumer, or another coroutine's direct switch.
    /// A resume that asks it to unwind unwinds it from here.
    ///
    /// # Safety
    ///
    /// - This coroutine runs, is not unwinding a panic, and its coroutine
    ///   has been told so (`CoroutineCore::left_by_direct_switch`).
    /// - `to` is the switch top of another suspended coroutine of type
    ///   `CoroutineCore<(), (), ()>` that left by `suspend_unpaired` or
    ///   `switch_to` and runs nowhere else.
    /// - The resumer of this coroutine completes its resume on whichever
    ///   coroutine switches back to it (`CoroutineCore::switch_in_raw`).
    #[inline(always)]
    pub(crate) unsafe fn switch_to(&self, to: *mut u8) {
        // `to`'s suspend reads a `()` input from the word: any aligned
        // address will do, and a dangling one is never an UNWIND.
        let word = std::ptr::dangling_mut::<Exchange<(), ()>>() as usize;
        // SAFETY: the caller's promises, as `arch::switch_direct` needs them.
        let back = unsafe { arch::switch_direct(self.top, to, word) };
        if back & UNWIND != 0 {
            // Nothing to remember (see `suspend_via`): unwind.
            forced_unwind();
        }
    }
}

impl<I, Y> Yielder<I, Y> {
    /// The resume that woke us asks us to unwind (the coroutine is being
    /// dropped): remember its exchange, for a suspend from a destructor on
    /// the way, and unwind.
    #[cold]
    #[inline(never)]
    fn unwind_for_drop(&self, word: usize) -> ! {
        self.exchange.set((word & !UNWIND) as *mut Exchange<I, Y>);
        forced_unwind()
    }

    /// The switch top of this coroutine's stack, for `with_running`'s hint.
    pub(crate) fn switch_top(&self) -> *mut u8 {
        self.top
    }
}

/// Unwinds the running coroutine because the resume that woke it asks so
/// (its coroutine is being dropped).
#[cold]
#[inline(never)]
fn forced_unwind() -> ! {
    panic::resume_unwind(Box::new(ForcedUnwind))
}

impl<I, Y> fmt::Debug for Yielder<I, Y> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Yielder").finish_non_exhaustive()
    }
}

/// The entry function of every coroutine stack (see `arch::init_stack`):
/// runs the closure, catches its panic, reports how it ended, and leaves.
///
/// # Safety
///
/// - `word` is the address of the first resume's `Exchange<I, Y, R>`.
/// - `closure` points at an `F` in its home `H`, owned by this call.
/// - It runs on the stack prepared by `arch::init_stack` whose top is `top`.
unsafe extern "sysv64" fn entry<I, Y, R, F, H>(word: usize, closure: *mut (), top: *mut u8) -> !
where
    F: FnOnce(&Yielder<I, Y>, I) -> R,
    H: ClosureHome,
{
    // SAFETY: the caller gives us ownership of the closure, in home `H`:
    // it moves onto this stack.
    let f = unsafe { H::take::<F>(closure) };
    if word & UNWIND != 0 {
        impossible("a coroutine that never ran was asked to unwind");
    }
    let head = word as *mut Exchange<I, Y>;
    let yielder = Yielder::<I, Y> { top, exchange: Cell::new(head), _not_send: PhantomData };
    // SAFETY: the first resume's exchange, valid while we run, with its
    // input set (not an UNWIND, checked above).
    let input = unsafe { (*head).input.assume_init_read() };
    let outcome = panic::catch_unwind(AssertUnwindSafe(|| f(&yielder, input)));
    let finish = match outcome {
        Ok(value) => Finish::Returned(value),
        Err(payload) if payload.is::<ForcedUnwind>() => Finish::Unwound,
        Err(payload) => Finish::Panicked(payload),
    };
    // The resumer moves it out of this frame, which never runs again: it
    // must not be dropped here too, and nothing else on the frame needs
    // dropping (the closure was consumed, the Yielder owns nothing).
    let finish = ManuallyDrop::new(finish);
    let _ = ManuallyDrop::new(yielder);
    // SAFETY: as in Yielder::suspend; this stack is never resumed again
    // (the resumer sees the Finish's address, reads it and gives the stack
    // back).
    unsafe { arch::suspend(top, std::ptr::from_ref(&*finish) as usize) };
    impossible("a finished coroutine was resumed")
}

/// Ends the process for a state the protocol rules out: continuing could only
/// corrupt memory.
#[cold]
fn impossible(what: &str) -> ! {
    eprintln!("weft: impossible coroutine state: {what}; aborting");
    std::process::abort()
}

#[cfg(all(test, not(loom)))]
mod walk_tests {
    //! `CoroutineCore::on_suspended_stack`: the callback runs on the suspended
    //! stack with the coroutine's frames below it, the coroutine is left
    //! intact, and the refusals hold.
    use super::*;

    #[inline(never)]
    fn suspends_here_marker(yielder: &Yielder<(), u32>, seed: u32) -> u32 {
        let local = std::hint::black_box(seed * 3);
        yielder.suspend(1);
        std::hint::black_box(local + 1)
    }

    /// The callback runs below the coroutine's saved frame (on its stack),
    /// a walk from there reaches the coroutine's entry and ends, and the
    /// coroutine then resumes with its locals intact.
    #[test]
    fn a_walk_runs_on_the_suspended_stack_and_leaves_it_intact() {
        let mut c = Coroutine::<(), u32, u32>::new(|y, ()| suspends_here_marker(y, 14));
        assert_eq!(c.resume(()), CoroutineResult::Yield(1));
        let stack = c.core.stack.as_ref().map(|s| (s.guard().end, s.top() as usize)).expect("started");
        let (first, last) = stack_walk_bounds();
        let mut local_at = 0usize;
        let mut ips = Vec::new();
        c.core
            .on_suspended_stack(&mut || {
                let here = 0u8;
                local_at = std::hint::black_box(&here) as *const u8 as usize;
                crate::sys::unwind::walk(&mut |ip| {
                    ips.push(ip);
                    ips.len() < 256
                });
            })
            .expect("a suspended coroutine with a default stack can be walked");
        assert!((stack.0..stack.1).contains(&local_at), "the callback did not run on the coroutine's stack");
        let start = ips.iter().position(|&ip| ip == first).expect("the walk passes weft_call_on_stack");
        let end = ips.iter().position(|&ip| ip == last).expect("the walk reaches the trampoline");
        assert!(end > start + 2, "no coroutine frames between the walk's start and the trampoline: {ips:x?}");
        assert!(end + 1 >= ips.len(), "the walk went on past the trampoline: {} frames after it", ips.len() - end - 1);
        assert_eq!(c.resume(()), CoroutineResult::Return(43), "the coroutine's frame was disturbed");
    }

    /// A stack reused through the cache (its header written once, when it
    /// was mapped) names the coroutine that runs on it now, not the one
    /// before; so does a stack of another size, served by the cache's list.
    #[test]
    fn a_reused_stack_names_its_new_coroutine() {
        fn named(name: &str, size: usize) -> Coroutine<(), (), (u64, Option<String>)> {
            Builder::new()
                .name(name.to_string())
                .stack_size(size)
                .build(|_, ()| {
                    // SAFETY: no hint.
                    unsafe { with_running(None, |r| r.map(|r| (r.id, r.name.map(str::to_string)))) }
                        .expect("a coroutine runs")
                })
                .unwrap()
        }
        for size in [DEFAULT_STACK_SIZE, MIN_STACK_SIZE] {
            for name in ["first", "second", "third"] {
                let mut c = named(name, size);
                let id = c.id();
                assert_eq!(c.resume(()), CoroutineResult::Return((id, Some(name.to_string()))));
            }
        }
        // SAFETY: no hint.
        assert!(unsafe { with_running(None, |r| r.is_none()) }, "idle cached stacks name nobody");
    }

    #[test]
    fn a_walk_is_refused_when_it_cannot_be_safe() {
        // Not started, then finished.
        let mut c = Coroutine::<(), (), ()>::new(|_, ()| ());
        assert_eq!(c.core.on_suspended_stack(&mut || panic!("must not run")), Err(WalkRefused::NotSuspended));
        c.resume(());
        assert_eq!(c.core.on_suspended_stack(&mut || panic!("must not run")), Err(WalkRefused::NotSuspended));

        // A 32 KiB stack never has 32 KiB free below a saved frame.
        let mut small =
            Coroutine::<(), (), ()>::builder().stack_size(MIN_STACK_SIZE).build(|y, ()| y.suspend(())).unwrap();
        small.resume(());
        assert!(matches!(
            small.core.on_suspended_stack(&mut || panic!("must not run")),
            Err(WalkRefused::LowOnStack { .. })
        ));
        small.resume(());

        // Suspended from inside a generator it drives: its saved stack
        // pointer is on the generator's stack.
        let mut outer = Coroutine::<(), (), ()>::new(|outer_yielder, ()| {
            let outer_yielder: *const Yielder<(), ()> = outer_yielder;
            let mut inner = Coroutine::<(), (), ()>::new(move |_, ()| {
                // SAFETY: the outer coroutine is running (it resumed
                // us); suspending it from here is what arch::suspend allows.
                unsafe { (*outer_yielder).suspend(()) };
            });
            inner.resume(());
        });
        outer.resume(());
        assert_eq!(outer.core.on_suspended_stack(&mut || panic!("must not run")), Err(WalkRefused::OnAnotherStack));
        outer.resume(());
        assert!(outer.is_finished());
    }
}
